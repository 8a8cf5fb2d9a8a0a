package tunneltest

import (
	"net/http"
	"testing"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/internal/wstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The raw client is shared with dataplane's tests: internal/wstest.
type (
	dialOpts = wstest.Opts
	client   = wstest.Client
)

func dialRaw(t *testing.T, s *Server, o dialOpts) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	return wstest.DialRaw(t, s.URL, o)
}

// dial connects and fails the test if the handshake is refused.
func dial(t *testing.T, s *Server, o dialOpts) *client {
	t.Helper()
	return wstest.Dial(t, s.URL, o)
}

// pair opens a tunnel with services and connects both sides (V3), past SERVICE_IDS.
func pair(t *testing.T, services ...string) (*Server, *Tunnel, *client, *client) {
	t.Helper()
	s := NewServer(t)
	s.Logf = t.Logf
	tun := s.OpenTunnel(services...)
	src, dst := wstest.Pair(t, s.URL, tun.SourceToken, tun.DestinationToken, services...)
	return s, tun, src, dst
}
