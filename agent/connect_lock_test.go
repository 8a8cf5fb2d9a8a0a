package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// muteProxy forwards TCP connections to addr; after mute is called, what the
// service sends on the connections open then is dropped, its end too, so their
// client waits out its own close timeouts, as with a service that does not
// answer a close. Later connections are forwarded both ways.
func muteProxy(t *testing.T, addr string) (hostPort string, mute func()) {
	t.Helper()
	var mu sync.Mutex
	var open []*atomic.Bool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			muted := new(atomic.Bool)
			mu.Lock()
			open = append(open, muted)
			mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 && !muted.Load() {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						if !muted.Load() {
							c.Close() // else the clean-up closes it
						}
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range open {
			m.Store(true)
		}
	}
}

// TestConnectNextWaitsForAStoppingOne: ssh runs its ProxyCommand anew for each
// connection, so `porthole connect --stdio` runs back to back on one token.
// When ssh ends, with a hang-up or just by closing the stdio, the run holds the
// token's lock until the service has answered its close, here never: 2 s, its
// time-out. The next run, started at once, waits for it rather than refusing
// the token as another's, which it did after its wait of 1 s.
func TestConnectNextWaitsForAStoppingOne(t *testing.T) {
	for _, hangup := range []bool{true, false} {
		t.Run(map[bool]string{true: "hangup", false: "stdio"}[hangup], func(t *testing.T) { connectBackToBack(t, hangup) })
	}
}

func connectBackToBack(t *testing.T, hangup bool) {
	srv, tun := tunneltest.ConnectedTunnel(t, "SSH", tunneltest.EchoServer(t, 0))
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var mute func()
	u.Host, mute = muteProxy(t, u.Host)
	cfg := ConnectConfig{
		Tunnel:        tunnel.Config{Endpoint: u.String(), AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, tun.SourceToken)},
		Stdio:         "SSH",
		TokenCacheDir: filepath.Join(t.TempDir(), "client-tokens"),
		Logger:        slog.New(slog.NewTextHandler(tbLog{t}, nil)),
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	first := cfg
	first.Stdin, first.Stdout = inR, outW
	done := make(chan error, 1)
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	go func() { done <- Connect(ctx1, first) }()
	if _, err := inW.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(outR, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	// ssh ends: it hangs its ProxyCommand up and its side of the stdio
	// closes, and the service is slow to answer.
	mute()
	if hangup {
		cancel1()
	}
	inW.Close()
	outR.Close()
	stopped := time.Now()

	second := cfg
	in2R, in2W := io.Pipe()
	defer in2W.Close()
	out2R, out2W := io.Pipe()
	defer out2R.Close()
	second.Stdin, second.Stdout = in2R, out2W
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done2 := make(chan error, 1)
	go func() { done2 <- Connect(ctx, second) }()
	select {
	case err := <-done:
		t.Logf("the first run ended %v after its stdio: %v", time.Since(stopped).Round(time.Millisecond), err)
	case <-time.After(10 * time.Second):
		t.Fatal("the first run did not end within 10 s of its stdio")
	}
	select {
	case err := <-done2:
		t.Fatalf("the next run ended: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := in2W.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(out2R, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done2; err != nil && !errors.Is(err, tunnel.ErrStoppedOpen) {
		t.Logf("the next run: %v", err)
	}
}
