package tunnel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// TestStdioCutShortIsAnError: a stdio connection the device's end cuts short
// (V3: its agent stopped, whose goodbye is a STREAM_RESET with the connection
// open; the service's SESSION_RESET, as for a rotated token) ends RunStdio
// with an error, as a -L client's is reset: it returned nil, and porthole
// connect --stdio exited 0 with a download cut short, as if it were whole.
// The device's service that ends the download itself ends it normally (nil).
func TestStdioCutShortIsAnError(t *testing.T) {
	const size = 256 << 10
	finite := func(t *testing.T) string {
		return tunneltest.ServeTCP(t, func(c net.Conn) {
			c.Write(make([]byte, size))
			c.Close()
		})
	}
	for _, c := range []struct {
		name   string
		target func(*testing.T) string
		cut    func(tun *tunneltest.Tunnel, stopDevice context.CancelFunc)
	}{
		{"the device's agent stops", endlessTarget, func(_ *tunneltest.Tunnel, stopDevice context.CancelFunc) { stopDevice() }},
		{"the service resets the session", endlessTarget, func(tun *tunneltest.Tunnel, _ context.CancelFunc) { tun.SessionReset(tunneltest.Source) }},
		{"the device's service ends it", finite, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := tunneltest.NewServer(t)
			tun := srv.OpenTunnel("SSH")
			cfg := tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, Logger: testLogger(t),
				RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
			dst := &tunnel.Destination{Config: cfg, Dialer: tunnel.Targets{"SSH": c.target(t)}}
			dst.AccessToken = mustToken(t, tun.DestinationToken)
			dctx, stopDevice := context.WithCancel(context.Background())
			derr := make(chan error, 1)
			go func() { derr <- dst.Run(dctx) }()
			t.Cleanup(func() { stopDevice(); <-derr })
			if err := tun.WaitConnects(ctxTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
				t.Fatal(err)
			}

			src := &tunnel.Source{Config: cfg, AnswerWait: -1}
			src.AccessToken = mustToken(t, tun.SourceToken)
			inR, inW := io.Pipe()
			defer inW.Close() // ssh's stdin stays open
			outR, outW := io.Pipe()
			errc := make(chan error, 1)
			go func() {
				errc <- src.RunStdio(ctxTimeout(t, 30*time.Second), "SSH", inR, outW)
				outW.Close()
			}()
			// The download is under way.
			if _, err := io.ReadFull(outR, make([]byte, size)); err != nil {
				t.Fatalf("reading the download: %v (RunStdio = %v)", err, <-errc)
			}
			go io.Copy(io.Discard, outR)
			if c.cut == nil {
				if err := <-errc; err != nil {
					t.Fatalf("RunStdio after the device's service ended the download = %v, want nil", err)
				}
				return
			}
			c.cut(tun, stopDevice)
			select {
			case err := <-errc:
				if err == nil || errors.Is(err, tunnel.ErrRefused) {
					t.Fatalf("RunStdio after the device's end cut the download short = %v, want an error that says so", err)
				}
				t.Logf("RunStdio = %v", err)
			case <-time.After(20 * time.Second):
				t.Fatal("RunStdio did not return within 20 s of the cut")
			}
		})
	}
}
