package tunneltest

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// Side is one end of a tunnel.
type Side = dataplane.Side

// The two sides of a tunnel; the values index arrays.
const (
	Source      = dataplane.Source
	Destination = dataplane.Destination
)

// Subprotocols of spec §2.3; the server answers with the first one the client
// offered.
const (
	SubprotocolV1 = dataplane.SubprotocolV1
	SubprotocolV2 = dataplane.SubprotocolV2
	SubprotocolV3 = dataplane.SubprotocolV3
)

// Handshake bodies the real service is known to send (spec §2.6).
const (
	BodyTokenUsed           = dataplane.BodyTokenUsed
	BodyClientTokenMismatch = dataplane.BodyClientTokenMismatch
)

// Handshake is one upgrade request the server answered.
type Handshake = dataplane.Handshake

// Frame is a recorded frame: the message without its payload, and the payload's length.
type Frame = dataplane.Frame

// ErrNotConnected is returned by Send when the side has no WebSocket.
var ErrNotConnected = dataplane.ErrNotConnected

// ErrTunnelClosed is returned by WaitConnects once the tunnel is closed.
var ErrTunnelClosed = dataplane.ErrTunnelClosed

// Server is a fake Secure Tunneling data plane listening on 127.0.0.1.
type Server struct {
	// URL is the endpoint clients dial, "ws://127.0.0.1:PORT", without a path.
	URL string
	// Logf, if not nil, receives a line per connection event. OpenTunnel,
	// FailHandshakes and Handshakes read it (the server's goroutines never do), so
	// setting it right after NewServer, before OpenTunnel, is race-free. Tokens are
	// never logged.
	Logf func(format string, args ...any)

	dp    *dataplane.Server
	hs    *httptest.Server
	logfn atomic.Pointer[func(string, ...any)]
}

// NewServer starts a Server on 127.0.0.1 and registers its Close with tb.Cleanup.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{}
	s.dp = &dataplane.Server{
		KeepHandshakes: -1,
		Logger: slog.New(slog.NewTextHandler(logfWriter{s}, &slog.HandlerOptions{
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
					return slog.Attr{}
				}
				return a
			},
		})),
	}
	s.hs = httptest.NewUnstartedServer(s.dp)
	// The raw connection lets Drop cut TCP without a Close frame even while a close
	// handshake is under way.
	s.hs.Config.ConnContext = s.dp.ConnContext
	s.hs.Start()
	s.URL = "ws://" + strings.TrimPrefix(s.hs.URL, "http://")
	tb.Cleanup(s.Close)
	return s
}

// Close closes every WebSocket (without a Close frame) and the listener, and waits
// for every goroutine the server started.
func (s *Server) Close() {
	s.dp.Close()
	s.hs.Close()
}

// OpenTunnel opens a tunnel whose destination config lists services (possibly none)
// and returns it with fresh source and destination access tokens.
func (s *Server) OpenTunnel(services ...string) *Tunnel {
	s.refreshLogf()
	dt, err := s.dp.OpenTunnel(dataplane.TunnelConfig{Services: services})
	if err != nil {
		panic("tunneltest: " + err.Error()) // fresh random tokens and ids never collide
	}
	return &Tunnel{
		SourceToken:      dt.Side(Source).Token,
		DestinationToken: dt.Side(Destination).Token,
		ID:               dt.ID(),
		dp:               dt,
	}
}

// FailHandshakes makes the next n /tunnel handshakes answer status with body,
// before any other check.
func (s *Server) FailHandshakes(n int, status int, body string) {
	s.refreshLogf()
	s.dp.FailHandshakes(n, status, body)
}

// Handshakes returns every upgrade request answered so far, in order, whatever its
// path (Handshake.Path tells).
func (s *Server) Handshakes() []Handshake {
	s.refreshLogf()
	return s.dp.Handshakes()
}

// Handler returns the data plane serving this Server, for knobs tunneltest does not
// wrap.
func (s *Server) Handler() *dataplane.Server { return s.dp }

var _ http.Handler = (*dataplane.Server)(nil)

func (s *Server) refreshLogf() {
	f := s.Logf
	s.logfn.Store(&f)
}

// logfWriter hands each line of the text handler to Logf.
type logfWriter struct{ s *Server }

func (w logfWriter) Write(p []byte) (int, error) {
	if f := w.s.logfn.Load(); f != nil && *f != nil {
		(*f)("tunneltest: %s", strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
