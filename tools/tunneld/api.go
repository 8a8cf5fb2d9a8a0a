package tunneld

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/tools/internal/rebind"
)

// targetPrefix is the X-Amz-Target prefix of the service (AWS JSON 1.1).
const targetPrefix = "IoTSecuredTunneling."

// contentType is the media type of AWS JSON 1.1 requests and responses.
const contentType = "application/x-amz-json-1.1"

// operations maps an operation name to a fresh request value.
var operations = map[string]func() any{
	"OpenTunnel":              func() any { return new(OpenTunnelInput) },
	"CloseTunnel":             func() any { return new(CloseTunnelInput) },
	"DescribeTunnel":          func() any { return new(DescribeTunnelInput) },
	"ListTunnels":             func() any { return new(ListTunnelsInput) },
	"RotateTunnelAccessToken": func() any { return new(RotateTunnelAccessTokenInput) },
	"TagResource":             func() any { return new(TagResourceInput) },
	"UntagResource":           func() any { return new(UntagResourceInput) },
	"ListTagsForResource":     func() any { return new(ListTagsForResourceInput) },
}

// minOneMembers lists, per operation, the optional members whose model sets a
// minimum of 1 (characters of a string, or a number). The decoded request cannot
// tell one given as "" or 0 from one left out, so checkGivenEmpty looks at the body:
// AWS refuses them, and taking "" as "no description" or 0 as "the default page
// size" would hide a caller's mistake. A path of two descends into an object.
var minOneMembers = map[string][][]string{
	"OpenTunnel": {
		{"description"},
		{"destinationConfig", "thingName"},
		{"timeoutConfig", "maxLifetimeTimeoutMinutes"},
	},
	"RotateTunnelAccessToken": {{"destinationConfig", "thingName"}},
	"ListTunnels":             {{"thingName"}, {"maxResults"}, {"nextToken"}},
}

// checkGivenEmpty refuses a member of minOneMembers given as "", 0 or -0. body has
// decoded into the operation's request already (decodeRequest), so it is one JSON
// object.
func checkGivenEmpty(op string, body []byte) error {
	paths := minOneMembers[op]
	if len(paths) == 0 {
		return nil
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return nil
	}
	for _, path := range paths {
		raw := top[path[0]]
		if len(path) == 2 { // one object down, as every entry is at most
			var obj map[string]json.RawMessage
			if json.Unmarshal(raw, &obj) != nil {
				continue
			}
			raw = obj[path[1]]
		}
		switch string(raw) {
		case `""`:
			return invalid("%s must not be empty: leave it out instead", strings.Join(path, "."))
		case "0", "-0": // -0 decodes to the integer 0 too; 0.0 and 0e0 do not decode
			return invalid("%s must be at least 1, got %s: leave it out for the default", strings.Join(path, "."), raw)
		}
	}
	return nil
}

// call runs a decoded request and returns the response value.
func (s *Server) call(ctx context.Context, in any) (any, error) {
	empty := struct{}{}
	switch in := in.(type) {
	case *OpenTunnelInput:
		return s.OpenTunnel(ctx, in)
	case *CloseTunnelInput:
		return empty, s.CloseTunnel(ctx, in)
	case *DescribeTunnelInput:
		return s.DescribeTunnel(ctx, in)
	case *ListTunnelsInput:
		return s.ListTunnels(ctx, in)
	case *RotateTunnelAccessTokenInput:
		return s.RotateTunnelAccessToken(ctx, in)
	case *TagResourceInput:
		return empty, s.TagResource(ctx, in)
	case *UntagResourceInput:
		return empty, s.UntagResource(ctx, in)
	case *ListTagsForResourceInput:
		return s.ListTagsForResource(ctx, in)
	}
	return nil, fmt.Errorf("tunneld: no handler for %T", in)
}

// serveAPI answers one AWS JSON 1.1 request.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	reqID := dataplane.NewUUID()
	w.Header().Set("x-amzn-RequestId", reqID)
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), targetPrefix) // handleAPI knows the real ones
	r = r.WithContext(context.WithValue(r.Context(), callerKey{}, s.callerOf(r)))
	log := s.log.With("plane", "control", "op", clip(op, clipped), "request", reqID)
	resp, err := s.handleAPI(r, op)
	if err != nil {
		var ae *APIError
		if !errors.As(err, &ae) {
			ae = &APIError{Type: ErrTypeInternalFailure, Message: err.Error(), Status: http.StatusInternalServerError}
		}
		s.refused(log, "request refused", append([]any{"type", ae.Type, "message", clip(ae.Message, 2*clipped)}, callerAttrs(r.Context())...)...)
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("X-Amzn-ErrorType", ae.Type)
		b, _ := json.Marshal(map[string]string{"__type": ae.Type, "message": ae.Message})
		b = append(b, '\n')
		if ae.abandon && r.ContentLength != 0 && s.hangUp(w, ae.status(), b) {
			return
		}
		w.WriteHeader(ae.status())
		w.Write(b)
		return
	}
	b, err := json.Marshal(resp)
	if err != nil {
		log.Error("encoding the response", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	log.Debug("request served")
	w.Header().Set("Content-Type", contentType)
	w.Write(b)
}

func (s *Server) handleAPI(r *http.Request, op string) (any, error) {
	auth, err := s.checkBeforeBody(r)
	if err != nil {
		// Unread: net/http would read up to 256 KiB of the body before
		// answering, to use the connection again.
		if ae, ok := err.(*APIError); ok {
			ae.abandon = true
		}
		return nil, err
	}
	body, release, err := s.readBody(r, op)
	if err != nil {
		return nil, err
	}
	defer release()
	if auth != nil {
		if err := s.verifySigV4(r, auth, body); err != nil {
			return nil, err
		}
	}
	if c, ok := r.Context().Value(callerKey{}).(*caller); ok {
		c.verified = len(s.cfg.Credentials) > 0
	}
	in, unknown, err := decodeRequestMembers(op, body)
	if err != nil {
		return nil, err
	}
	if len(unknown) > 0 {
		// Ignored, as AWS does; but a misspelt or miscased member is a caller's
		// mistake worth seeing (names only: values may be secret; cut, as
		// anyone may send them).
		unknown = unknown[:min(len(unknown), 10)]
		for i, n := range unknown {
			unknown[i] = clip(n, clipped)
		}
		s.log.Info("request members ignored: not in the API (names are case-sensitive)", "plane", "control", "op", op,
			"members", quotedList(unknown), "remote", r.RemoteAddr)
	}
	if err := checkGivenEmpty(op, body); err != nil {
		return nil, err
	}
	return s.call(r.Context(), in)
}

// checkBeforeBody checks what of a request needs no body: its method, path and
// X-Amz-Target, its Host (checkHost) and its Authorization header
// (checkAuthHeader), whose signature it returns.
func (s *Server) checkBeforeBody(r *http.Request) (*sigV4Auth, error) {
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return nil, &APIError{Type: ErrTypeUnknownOperation, Message: fmt.Sprintf("%s %s: the API takes POST /", r.Method, r.URL.Path), Status: http.StatusNotFound}
	}
	if !strings.HasPrefix(r.Header.Get("X-Amz-Target"), targetPrefix) {
		return nil, &APIError{Type: ErrTypeUnknownOperation, Message: "missing or foreign X-Amz-Target; want " + targetPrefix + "<Operation>"}
	}
	// What needs no body is checked before it is read: a client without a
	// signature, or with an access key this server does not know, got up to
	// its limit (bodyLimit) of it read and held until the read timeout.
	if err := s.checkHost(r); err != nil {
		return nil, err
	}
	return s.checkAuthHeader(r)
}

// checkAuthHeader checks what of a request's authentication needs no body: an
// Authorization header shaped like SigV4, unless Config.AllowUnsigned, and with
// Config.Credentials its access key. It returns the signature left to verify
// over the body (verifySigV4), nil for none: without Config.Credentials, any
// dummy AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY works.
func (s *Server) checkAuthHeader(r *http.Request) (*sigV4Auth, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if s.cfg.AllowUnsigned && len(s.cfg.Credentials) == 0 {
			return nil, nil
		}
		return nil, &APIError{Type: ErrTypeMissingAuthToken, Message: "Missing Authentication Token", Status: http.StatusForbidden}
	}
	a, err := parseSigV4(h)
	if err != nil {
		if s.cfg.AllowUnsigned && len(s.cfg.Credentials) == 0 {
			return nil, nil
		}
		return nil, err
	}
	if len(s.cfg.Credentials) == 0 {
		return nil, nil
	}
	if _, ok := s.cfg.Credentials[a.accessKey]; !ok {
		return nil, errUnrecognizedClient()
	}
	return a, nil
}

// checkHost refuses, when signatures are not verified, a request whose Host
// names something other than this server's address or localhost: a web page
// that rebound its DNS name to a tunneld on 127.0.0.1 could otherwise open
// tunnels and read their tokens (its browser sends whatever headers it likes to
// what is, for it, the same origin). With Credentials, the page cannot sign.
func (s *Server) checkHost(r *http.Request) error {
	if len(s.cfg.Credentials) > 0 || rebind.LocalHost(r) {
		return nil
	}
	return &APIError{Type: ErrTypeAccessDenied, Status: http.StatusForbidden,
		Message: fmt.Sprintf("Host %q names neither the address this request came to nor localhost: without --credentials tunneld answers only those, "+
			"so that a web page that rebinds its DNS name to this address cannot use it; use the address, or give tunneld --credentials", r.Host)}
}
