package tunneld

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Operators need to answer "who opened a tunnel to this device" and "who is probing
// with bad tokens": every state-changing control-plane call is logged at INFO with
// the caller (access key ID from the SigV4 header, verified with --credentials, and
// remote address), and every data-plane handshake with its remote address. Secrets
// never appear: tokens as fingerprints, signatures and secret keys not at all. An
// access key ID that is not one of Config.Credentials' is logged as a fingerprint
// too: an operator who swapped AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or
// pasted the secret in the ID's place, sends the secret key where the ID goes.

// caller is who made a control-plane request.
type caller struct {
	remote    string // host:port
	accessKey string // "" if the request was not signed; see keyLabel
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
		c.accessKey = s.keyLabel(a.accessKey) // verified by handleAPI, if it is
	}
	return c
}

// keyLabel is how a log line names the access key ID id: as given when it is one
// of Config.Credentials' IDs, otherwise (any ID without --credentials) as
// "unknown:" and the first 8 hex digits of its SHA-256, which names the same
// caller the same way and never shows a secret key sent in the ID's place.
func (s *Server) keyLabel(id string) string {
	if _, ok := s.cfg.Credentials[id]; ok {
		return clip(id, clipped)
	}
	sum := sha256.Sum256([]byte(id))
	return "unknown:" + hex.EncodeToString(sum[:4])
}

// clipped is how much of a value a client chose (an operation's name, a mode,
// a message quoting them) a log line shows: anyone who reaches the server may
// send megabytes of header.
const clipped = 128

// clip cuts s to n bytes, saying so.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(cut)"
}

// refusalLog limits the lines of refused requests and handshakes, which anyone
// who reaches the server can cause: refusalBurst at once, then refusalRate a
// second; the next line logged counts those left out, as suppressed_before, the
// name the agent's rate-limited lines use (agent/tunnel's peerLog, which
// tunneld, in another room, cannot import). Accepted calls and handshakes are
// always logged.
type refusalLog struct {
	mu      sync.Mutex
	tokens  float64
	last    time.Time
	dropped int
}

const (
	refusalBurst = 20
	refusalRate  = 5
)

// allow reports whether a refusal may be logged now, and how many were left
// out before it.
func (l *refusalLog) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.last.IsZero() {
		l.tokens = refusalBurst
	} else {
		l.tokens = min(refusalBurst, l.tokens+now.Sub(l.last).Seconds()*refusalRate)
	}
	l.last = now
	if l.tokens < 1 {
		l.dropped++
		return false, 0
	}
	l.tokens--
	n := l.dropped
	l.dropped = 0
	return true, n
}

// refused logs a refusal through s's refusalLog.
func (s *Server) refused(log *slog.Logger, msg string, attrs ...any) {
	ok, left := s.refusals.allow()
	if !ok {
		return
	}
	if left > 0 {
		attrs = append(attrs, "suppressed_before", left)
	}
	log.Info(msg, attrs...)
}

// handshakeLogger logs the answer to a data-plane handshake with the remote
// address; the data plane's own records share its channel id. A refusal is
// logged with the reason the data plane answers (its body), through the
// server's refusalLog.
type handshakeLogger struct {
	http.ResponseWriter
	s      *Server
	r      *http.Request
	status int // a refusal's, until its body is written
	logged bool
}

func (h *handshakeLogger) WriteHeader(code int) {
	if !h.logged && h.status == 0 {
		if code == http.StatusSwitchingProtocols {
			h.log(code, "")
		} else {
			h.status = code
		}
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *handshakeLogger) Write(b []byte) (int, error) {
	if !h.logged && h.status != 0 {
		h.log(h.status, string(b))
	}
	return h.ResponseWriter.Write(b)
}

// done logs a refusal that wrote no body.
func (h *handshakeLogger) done() {
	if !h.logged && h.status != 0 {
		h.log(h.status, "")
	}
}

func (h *handshakeLogger) log(code int, reason string) {
	h.logged = true
	tok := h.r.Header.Get("access-token")
	if tok == "" {
		if c, err := h.r.Cookie("awsiot-tunnel-token"); err == nil {
			tok = c.Value
		}
	}
	attrs := []any{"plane", "data", "status", code, "mode", clip(h.r.URL.Query().Get("local-proxy-mode"), clipped),
		"token", fingerprint(tok), "channel", h.Header().Get("channel-id"), "remote", h.r.RemoteAddr}
	if code == http.StatusSwitchingProtocols {
		h.s.log.Info("handshake", attrs...)
		return
	}
	h.s.refused(h.s.log, "handshake", append(attrs, "reason", clip(reason, clipped))...)
}

// Unwrap lets the WebSocket library find the Hijacker.
func (h *handshakeLogger) Unwrap() http.ResponseWriter { return h.ResponseWriter }
