package tunnel_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// dialPinging dials tun's source side with pings every 50 ms and a pong
// timeout of 400 ms, and reads its frames until the connection ends, which
// the returned channel reports.
func dialPinging(t *testing.T, srv *tunneltest.Server, tun *tunneltest.Tunnel) (*tunnel.Conn, <-chan error) {
	t.Helper()
	tok, err := tunnel.NewAccessToken(tun.SourceToken)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tunnel.Dial(context.Background(), &tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: tok,
		PingInterval: 50 * time.Millisecond, PongTimeout: 400 * time.Millisecond}, tunnel.ModeSource)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, readToEnd(c)
}

// readToEnd reads c's frames until the connection ends, which the returned
// channel reports.
func readToEnd(c *tunnel.Conn) <-chan error {
	ended := make(chan error, 1)
	go func() {
		var m tunnel.Message
		for {
			if err := c.ReadMessage(&m); err != nil {
				ended <- err
				return
			}
		}
	}()
	return ended
}

// A connection whose service has answered pings and then falls silent (the
// operator's laptop slept or moved to another network: the path is dead, no
// RST comes) is closed by PongTimeout, with a cause that says so: porthole
// connect's ssh session and -L ports hung without a word until the kernel
// gave up on the unacknowledged pings, some 15 minutes.
func TestPongTimeoutClosesAPathThatDied(t *testing.T) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	_, ended := dialPinging(t, srv, tun)
	// A pong has come: before it, silence is the service's right (spec §3.7).
	waitUntil(t, "a pong (pings every 50 ms)", func() bool { return tun.Pongs() > 0 })
	tun.SetPong(false)
	select {
	case err := <-ended:
		if !errors.Is(err, tunnel.ErrSilent) {
			t.Fatalf("the connection ended with %v, want ErrSilent", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was kept 10 s after the service stopped answering pings")
	}
}

// A service that never answers pings (AWS before the other side is
// connected, spec §3.7) is not taken for a dead path.
func TestPongTimeoutWaitsForTheFirstPong(t *testing.T) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	tun.SetPong(false)
	_, ended := dialPinging(t, srv, tun)
	select {
	case err := <-ended:
		t.Fatalf("the connection ended (%v) though the service had never answered a ping", err)
	case <-time.After(2 * time.Second): // five pong timeouts
	}
}
