package tunneld

import (
	"context"
	"log/slog"
	"net/http"
)

// Operators need to answer "who opened a tunnel to this device" and "who is probing
// with bad tokens": every state-changing control-plane call is logged at INFO with
// the caller (access key ID from the SigV4 header, verified with --credentials, and
// remote address), and every data-plane handshake with its remote address. Secrets
// never appear: tokens as fingerprints, signatures and secret keys not at all.

// caller is who made a control-plane request.
type caller struct {
	remote    string // host:port
	accessKey string // "" if the request was not signed
	verified  bool   // the signature was checked against Config.Credentials and held
}

type callerKey struct{}

// callerAttrs are the log attributes of ctx's caller; none for calls through the
// Go API (tests, the lab).
func callerAttrs(ctx context.Context) []any {
	c, ok := ctx.Value(callerKey{}).(*caller)
	if !ok {
		return nil
	}
	attrs := []any{"remote", c.remote}
	if c.accessKey != "" {
		attrs = append(attrs, "access_key", c.accessKey, "signature_verified", c.verified)
	}
	return attrs
}

// callerOf is the caller of r, as far as its Authorization header says.
func (s *Server) callerOf(r *http.Request) *caller {
	c := &caller{remote: r.RemoteAddr}
	if a, err := parseSigV4(r.Header.Get("Authorization")); err == nil {
		c.accessKey = a.accessKey // verified by handleAPI, if it is
	}
	return c
}

// handshakeLogger logs the answer to a data-plane handshake with the remote
// address; the data plane's own records share its channel id.
type handshakeLogger struct {
	http.ResponseWriter
	log    *slog.Logger
	r      *http.Request
	logged bool
}

func (h *handshakeLogger) WriteHeader(code int) {
	if !h.logged {
		h.logged = true
		tok := h.r.Header.Get("access-token")
		if tok == "" {
			if c, err := h.r.Cookie("awsiot-tunnel-token"); err == nil {
				tok = c.Value
			}
		}
		h.log.Info("handshake", "plane", "data", "status", code, "mode", h.r.URL.Query().Get("local-proxy-mode"),
			"token", fingerprint(tok), "channel", h.Header().Get("channel-id"), "remote", h.r.RemoteAddr)
	}
	h.ResponseWriter.WriteHeader(code)
}

// Unwrap lets the WebSocket library find the Hijacker.
func (h *handshakeLogger) Unwrap() http.ResponseWriter { return h.ResponseWriter }
