package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// The agent counts each stream's bytes in a wrapper of its target connection
// (countingConn): agent/tunnel reaches the connection under it (NetConn) to
// half-close it after the peer's reset and to reset a stream cut short. These
// are agent/tunnel's TestHalfClosedUploadArrivesWhole and
// TestSupersededUploadIsResetAtTarget through the agent, where without it a
// half-closed upload to a service that prints progress arrived truncated
// with a clean EOF, and so did an upload a new connection cut short.

func TestHalfClosedUploadThroughTheAgentArrivesWhole(t *testing.T) {
	const size = 1 << 20
	got := make(chan int64, 1)
	addr := tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				if _, err := c.Write([]byte("progress\n")); err != nil {
					return
				}
			}
		}()
		time.Sleep(500 * time.Millisecond) // busy: the upload waits in the buffers
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			t.Errorf("the service's input ended with %v after %d bytes", err, n)
		}
		got <- n
	})
	c, err := net.Dial("tcp", newAgentEnv(t).webSource(t, addr, tunnel.V3))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go io.Copy(io.Discard, c)
	data := make([]byte, size)
	rand.Read(data)
	c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case n := <-got:
		if n != size {
			t.Fatalf("through the agent, the service read %d of %d bytes, then its input ended", n, size)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the service's input did not end")
	}
}

func TestSupersededUploadThroughTheAgentIsReset(t *testing.T) {
	started := make(chan struct{}, 2)
	results := make(chan error, 2)
	target := tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		if _, err := c.Read(make([]byte, 1)); err != nil {
			results <- err
			return
		}
		started <- struct{}{}
		_, err := io.Copy(io.Discard, c)
		results <- err
	})
	addr := newAgentEnv(t).webSource(t, target, tunnel.V2)
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		buf := make([]byte, 32<<10)
		first.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := first.Write(buf); err != nil {
				return
			}
		}
	}()
	defer func() { first.Close(); <-wrote }()
	select {
	case <-started:
	case err := <-results:
		t.Fatalf("the target got nothing of the upload: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the upload did not reach the target")
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	select {
	case err := <-results:
		if err == nil {
			t.Fatal("through the agent, the replaced upload ended at the target with a clean EOF: the truncated upload looks complete; want ECONNRESET")
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the target's read error %v, want ECONNRESET", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the replaced upload's target connection did not end")
	}
}

// webSource starts the agent with service WEB at target, opens a tunnel to it
// and returns the address of a Source's listener for WEB, in format v (V2:
// towards a V2 destination). Both stop at the test's end.
func (e *agentEnv) webSource(t *testing.T, target string, v tunnel.Version) string {
	t.Helper()
	e.cfg.Services = map[string]string{"SSH": BuiltinSSH, "WEB": target}
	e.start(t)
	tun := e.fake.OpenTunnel("WEB")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "WEB")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	tok, _ := tunnel.NewAccessToken(tun.SourceToken)
	ready := make(chan string, 1)
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: e.fake.URL, AllowInsecureWebSocket: true, AccessToken: tok, ClientToken: e.srcClient},
		Listen: map[string]string{"WEB": "127.0.0.1:0"}, OnListen: func(_ string, a net.Addr) { ready <- a.String() }}
	if v != tunnel.V3 {
		src.Config.Protocol, src.PeerVersion = v, v
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return <-ready
}
