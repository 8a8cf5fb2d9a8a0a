package dataplane

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/internal/wstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer serves a Server on loopback for one test.
type testServer struct {
	*Server
	URL string
	hs  *httptest.Server
}

// testTunnel is a tunnel with its first tokens at hand.
type testTunnel struct {
	*Tunnel
	SourceToken, DestinationToken string
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	s := &testServer{Server: &Server{KeepHandshakes: -1, Logger: testLogger(t)}}
	s.hs = httptest.NewUnstartedServer(s.Server)
	s.hs.Config.ConnContext = s.Server.ConnContext
	s.hs.Start()
	s.URL = "ws://" + strings.TrimPrefix(s.hs.URL, "http://")
	t.Cleanup(s.Close)
	return s
}

func (s *testServer) Close() {
	s.Server.Close()
	s.hs.Close()
}

func (s *testServer) OpenTunnel(services ...string) *testTunnel {
	tun, err := s.Server.OpenTunnel(TunnelConfig{Services: services})
	if err != nil {
		panic(err)
	}
	return &testTunnel{tun, tun.Side(Source).Token, tun.Side(Destination).Token}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, nil))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// The raw client is shared with tunneltest's tests: internal/wstest.
type (
	dialOpts = wstest.Opts
	client   = wstest.Client
)

func dialRaw(t *testing.T, s *testServer, o dialOpts) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	return wstest.DialRaw(t, s.URL, o)
}

// dial connects and fails the test if the handshake is refused.
func dial(t *testing.T, s *testServer, o dialOpts) *client {
	t.Helper()
	return wstest.Dial(t, s.URL, o)
}

// pair opens a tunnel with services and connects both sides (V3), past SERVICE_IDS.
func pair(t *testing.T, services ...string) (*testServer, *testTunnel, *client, *client) {
	t.Helper()
	s := newTestServer(t)
	tun := s.OpenTunnel(services...)
	src, dst := wstest.Pair(t, s.URL, tun.SourceToken, tun.DestinationToken, services...)
	return s, tun, src, dst
}
