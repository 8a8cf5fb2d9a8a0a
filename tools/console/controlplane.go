package console

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// ControlPlane opens and closes tunnels: the administrator's side of the workflow.
type ControlPlane interface {
	// OpenTunnel opens a tunnel to thing with services and returns its id and
	// source access token. lifetime 0 means the service's default. The tunnel
	// is tagged with attempt (attemptTagKey), a value unique to this call, so
	// that FindAttempt finds it when the answer is lost. An error with an id:
	// the tunnel was opened, but cannot be used (its answer's token); the
	// caller closes it. An error that errors.Is ErrRefused (the service
	// refused) or ErrNotSent (the request did not reach it): nothing was
	// opened; any other error without an id: the tunnel may have been opened
	// all the same.
	OpenTunnel(ctx context.Context, thing string, services []string, lifetime time.Duration, attempt string) (id string, source tunnel.Token, err error)
	// FindAttempt returns the ids of thing's open tunnels that OpenTunnel
	// tagged with attempt, among those the service says it opened since
	// (give or take attemptClockSkew). An error with ids: those were found
	// before it.
	FindAttempt(ctx context.Context, thing, attempt string, since time.Time) ([]string, error)
	// CloseTunnel closes the tunnel: both sides are disconnected.
	CloseTunnel(ctx context.Context, id string) error
	// DestinationConnected reports whether the tunnel's destination, the device's
	// agent, is connected: DescribeTunnel's destinationConnectionState.
	DestinationConnected(ctx context.Context, id string) (bool, error)
}

// TunneldServer adapts an in-process tools/tunneld server (the lab's) to ControlPlane.
func TunneldServer(s *tunneld.Server) ControlPlane { return tunneldServer{s} }

type tunneldServer struct{ s *tunneld.Server }

func (t tunneldServer) OpenTunnel(ctx context.Context, thing string, services []string, lifetime time.Duration, attempt string) (string, tunnel.Token, error) {
	out, err := t.s.OpenTunnel(ctx, openInput(thing, services, lifetime, attempt))
	if err != nil {
		// In process, an error is the whole answer: the server opened
		// nothing, or closed and forgot what it could not save.
		return "", tunnel.Token{}, refusedError{err}
	}
	tok, err := tunnel.NewAccessToken(out.SourceAccessToken)
	return out.TunnelID, tok, err
}

func (t tunneldServer) CloseTunnel(ctx context.Context, id string) error {
	return t.s.CloseTunnel(ctx, &tunneld.CloseTunnelInput{TunnelID: id})
}

func (t tunneldServer) DestinationConnected(ctx context.Context, id string) (bool, error) {
	out, err := t.s.DescribeTunnel(ctx, &tunneld.DescribeTunnelInput{TunnelID: id})
	if err != nil {
		return false, err
	}
	return destinationConnected(out), nil
}

func (t tunneldServer) FindAttempt(ctx context.Context, thing, attempt string, since time.Time) ([]string, error) {
	return findAttempt(ctx, thing, attempt, since, t.s.ListTunnels,
		func(ctx context.Context, id string) (*tunneld.DescribeTunnelOutput, error) {
			return t.s.DescribeTunnel(ctx, &tunneld.DescribeTunnelInput{TunnelID: id})
		})
}

func destinationConnected(out *tunneld.DescribeTunnelOutput) bool {
	st := out.Tunnel.DestinationConnectionState
	return out.Tunnel.Status == tunneld.StatusOpen && st != nil && st.Status == tunneld.StatusConnected
}

// openDescription is the description of the tunnels the console opens.
const openDescription = "porthole console"

func openInput(thing string, services []string, lifetime time.Duration, attempt string) *tunneld.OpenTunnelInput {
	in := &tunneld.OpenTunnelInput{Description: openDescription,
		DestinationConfig: &tunneld.DestinationConfig{ThingName: thing, Services: services},
		Tags:              []tunneld.Tag{{Key: attemptTagKey, Value: attempt}}}
	if m := int(lifetime / time.Minute); m > 0 {
		in.TimeoutConfig = &tunneld.TimeoutConfig{MaxLifetimeTimeoutMinutes: m}
	}
	return in
}

// Credentials sign control-plane requests (AWS SigV4). They are secrets: never
// logged, and String prints the access key ID only.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
}

func (c Credentials) String() string { return "credentials " + c.AccessKeyID }

// GoString is String, so that %#v does not print the secret either.
func (c Credentials) GoString() string { return c.String() }

// maxErrorText is how much of a refusal's message an error quotes, and
// maxStatusText how much of its status line ("400 Bad Request"): whoever
// answers chooses its reason phrase, and Go's client reads up to a MiB of it.
const maxErrorText, maxStatusText = 512, 64

// redact is s, a refusal's type and message, as an error quotes it: with c's
// secret key and session token replaced by "[redacted]" and cut to
// maxErrorText bytes. Who answers in the control plane's place (a proxy's or
// load balancer's error page) may echo the request's headers, and so
// X-Amz-Security-Token; the error is logged and shown on the page. Secrets
// shorter than 8 bytes (tests) are left: they would match ordinary text.
func (c Credentials) redact(s string) string {
	for _, secret := range []string{c.SessionToken, c.SecretAccessKey} {
		if len(secret) < 8 {
			continue
		}
		// As is, and as an echo may escape it: in JSON ("\/", which a
		// body that is no AWS error quotes raw) or in a URL.
		for _, form := range secretForms(secret) {
			s = strings.ReplaceAll(s, form, "[redacted]")
		}
	}
	return cut(s, maxErrorText)
}

// cut is s cut to n bytes, if longer, and marked so.
func cut(s string, n int) string {
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…(cut)"
	}
	return s
}

// secretForms is secret as an error page may quote it.
func secretForms(secret string) []string {
	return []string{secret, strings.ReplaceAll(secret, "/", `\/`), url.QueryEscape(secret), url.PathEscape(secret)}
}

// ControlPlaneAPI is a ControlPlane that speaks the AWS JSON 1.1 API over HTTPS:
// AWS IoT Secure Tunneling (https://api.tunneling.iot.REGION.amazonaws.com) or a
// tools/tunneld (https://host:port). With Credentials requests are signed (SigV4);
// without, they carry a signature-shaped Authorization header that a tunneld
// without --credentials accepts and AWS refuses.
type ControlPlaneAPI struct {
	// URL of the control plane.
	URL string
	// Region of the credential scope; "" means the region of an AWS URL's
	// host (AWSRegion), else us-east-1.
	Region string
	// Credentials sign requests; zero means unsigned.
	Credentials Credentials
	// CAFile is an extra PEM trust anchor for https, a file or a directory of
	// them (as the data plane's, tunnel.CAFiles); "" means the system roots.
	CAFile string
	// Client is the HTTP client; nil means one built from CAFile.
	Client *http.Client
	// now is the signing clock; nil means time.Now.
	now func() time.Time
}

func (a *ControlPlaneAPI) client() (*http.Client, error) {
	if a.Client != nil {
		return a.Client, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.CAFile != "" {
		pool, _ := x509.SystemCertPool()
		if pool == nil {
			pool = x509.NewCertPool()
		}
		if err := tunnel.AppendCAFile(pool, a.CAFile); err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	// A client per call, so no keep-alive: an idle connection would outlive its
	// transport, an FD and two goroutines left behind by every DescribeTunnel
	// poll until the server drops it.
	// Through https_proxy as the data plane (and the AWS CLI) go.
	proxy := func(r *http.Request) (*url.URL, error) { return tunnel.ProxyFromEnvironment(r.URL) }
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, Proxy: proxy}}, nil
}

func (a *ControlPlaneAPI) call(ctx context.Context, op string, in, out any) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(a.URL, "/")+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	region := cmp.Or(a.Region, AWSRegion(req.URL.Hostname()), tunneld.DefaultRegion)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "IoTSecuredTunneling."+op)
	now := time.Now
	if a.now != nil {
		now = a.now
	}
	creds := a.Credentials
	if creds.AccessKeyID == "" {
		creds = Credentials{AccessKeyID: "porthole-console", SecretAccessKey: "unsigned"}
	}
	tunneld.SignV4(req, body, creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken, region, "IoTSecuredTunneling", now())
	// A request that was not written whole cannot have been acted on (no
	// connection, a refused dial, a TLS handshake or proxy that failed): it
	// is ErrNotSent, and a failed OpenTunnel then needs no search.
	var sent atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(w httptrace.WroteRequestInfo) {
			if w.Err == nil {
				sent.Store(true)
			}
		},
	}))
	resp, err := c.Do(req)
	if err != nil {
		err = fmt.Errorf("%s: %w", op, err)
		if !sent.Load() {
			return notSentError{err}
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		return answerError(op, resp, b, a.Credentials)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// answerError is the *APIError of op's answer resp other than 200 OK, whose
// body is b, quoted with creds redacted.
func answerError(op string, resp *http.Response, b []byte, creds Credentials) *APIError {
	var e struct {
		Type    string `json:"__type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	json.Unmarshal(b, &e)
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(b))
	}
	// As the AWS SDKs read it: the X-Amzn-ErrorType header, else the body's
	// code, else its __type, each maybe a shape id with its namespace
	// ("ns#Name") and a ":url" suffix, or a list (","): the bare first name is
	// what ErrRefused's and isNotFound's tests see.
	e.Type = errorTypeName(cmp.Or(resp.Header.Get("X-Amzn-ErrorType"), e.Code, e.Type))
	return &APIError{Op: op, Status: cut(creds.redact(resp.Status), maxStatusText), StatusCode: resp.StatusCode, Type: e.Type,
		text: creds.redact(e.Type + ": " + e.Message)}
}

// AWSRegion is the region in the host of AWS IoT Secure Tunneling's control
// plane, api.tunneling.iot.REGION.amazonaws.com (amazonaws.com.cn in China),
// and "" for any other host (a tunneld's). AWS answers there only requests
// signed for that region, and the region's data plane has its tunnels.
func AWSRegion(host string) string {
	rest, ok := strings.CutPrefix(strings.ToLower(strings.TrimSuffix(host, ".")), "api.tunneling.iot.")
	if !ok {
		return ""
	}
	region, ok := strings.CutSuffix(rest, ".amazonaws.com")
	if !ok {
		region, ok = strings.CutSuffix(rest, ".amazonaws.com.cn")
	}
	if !ok || region == "" || strings.Contains(region, ".") {
		return ""
	}
	return region
}

// errorTypeName is the bare name of an AWS error type: "ResourceNotFoundException"
// for "com.amazonaws.example#ResourceNotFoundException:http://...".
func errorTypeName(t string) string {
	t, _, _ = strings.Cut(t, ",")
	t, _, _ = strings.Cut(t, ":")
	if _, name, ok := strings.Cut(t, "#"); ok {
		t = name
	}
	return strings.TrimSpace(t)
}

// ErrRefused is what errors.Is finds in a control plane's clear refusal: the
// service answered the request with an error, so it did nothing.
var ErrRefused = errors.New("console: the control plane refused the request")

// APIError is a control plane's answer other than 200 OK.
type APIError struct {
	Op         string // the operation, "OpenTunnel"
	Status     string // "400 Bad Request", redacted and cut to maxStatusText
	StatusCode int
	Type       string // the error's type, bare (errorTypeName); "" for none (a proxy's page)
	text       string // type and message, redacted
}

func (e *APIError) Error() string { return fmt.Sprintf("%s: %s %s", e.Op, e.Status, e.text) }

// Is reports ErrRefused for a 4xx answer with an AWS error body: the service's
// own refusal. A 5xx (a proxy's, a load balancer's timeout, the service's
// InternalFailure) or an answer without one does not say that nothing was done.
func (e *APIError) Is(target error) bool {
	return target == ErrRefused && e.StatusCode >= 400 && e.StatusCode < 500 && e.Type != ""
}

// ErrNotSent is what errors.Is finds in a failure to send a request whole:
// the service cannot have acted on it. Unlike ErrRefused, the same request
// may succeed a moment later.
var ErrNotSent = errors.New("console: the request did not reach the control plane")

type notSentError struct{ error }

func (e notSentError) Unwrap() error        { return e.error }
func (e notSentError) Is(target error) bool { return target == ErrNotSent }

// refusedError is an error known to leave nothing done: it is ErrRefused too.
type refusedError struct{ error }

func (e refusedError) Unwrap() error        { return e.error }
func (e refusedError) Is(target error) bool { return target == ErrRefused }

// OpenTunnel implements ControlPlane.
func (a *ControlPlaneAPI) OpenTunnel(ctx context.Context, thing string, services []string, lifetime time.Duration, attempt string) (string, tunnel.Token, error) {
	var out tunneld.OpenTunnelOutput
	if err := a.call(ctx, "OpenTunnel", openInput(thing, services, lifetime, attempt), &out); err != nil {
		return "", tunnel.Token{}, err
	}
	tok, err := tunnel.NewAccessToken(out.SourceAccessToken)
	return out.TunnelID, tok, err
}

// CloseTunnel implements ControlPlane.
func (a *ControlPlaneAPI) CloseTunnel(ctx context.Context, id string) error {
	return a.call(ctx, "CloseTunnel", &tunneld.CloseTunnelInput{TunnelID: id}, nil)
}

// DestinationConnected implements ControlPlane.
func (a *ControlPlaneAPI) DestinationConnected(ctx context.Context, id string) (bool, error) {
	var out tunneld.DescribeTunnelOutput
	if err := a.call(ctx, "DescribeTunnel", &tunneld.DescribeTunnelInput{TunnelID: id}, &out); err != nil {
		return false, err
	}
	if out.Tunnel == nil {
		return false, errors.New("DescribeTunnel: no tunnel in the answer")
	}
	return destinationConnected(&out), nil
}

// FindAttempt implements ControlPlane.
func (a *ControlPlaneAPI) FindAttempt(ctx context.Context, thing, attempt string, since time.Time) ([]string, error) {
	return findAttempt(ctx, thing, attempt, since,
		func(ctx context.Context, in *tunneld.ListTunnelsInput) (*tunneld.ListTunnelsOutput, error) {
			var out tunneld.ListTunnelsOutput
			return &out, a.call(ctx, "ListTunnels", in, &out)
		},
		func(ctx context.Context, id string) (*tunneld.DescribeTunnelOutput, error) {
			var out tunneld.DescribeTunnelOutput
			return &out, a.call(ctx, "DescribeTunnel", &tunneld.DescribeTunnelInput{TunnelID: id}, &out)
		})
}
