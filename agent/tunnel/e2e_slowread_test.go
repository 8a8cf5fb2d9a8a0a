//go:build linux

package tunnel_test

import (
	"net"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// TestSlowReaderIsNotStalled: a local connection that reads, slowly (curl
// --limit-rate, a serial bridge, a device writing to flash), is not reset as
// stalled. Its kernel took megabytes before the writer blocked, and woke it
// only once a third of them had drained: ~3 s at 200 KiB/s, longer than the
// stall timeout here. Each side bounds what its kernel holds unsent (Linux
// only: elsewhere the kernel holds what its buffer takes).
func TestSlowReaderIsNotStalled(t *testing.T) {
	for _, kernel := range []string{"this kernel", "a kernel without TCP_NOTSENT_LOWAT (before 3.12)"} {
		t.Run(kernel, func(t *testing.T) {
			if kernel != "this kernel" {
				tunnel.WithoutNotsentLowat(t) // the send buffer is bounded instead
			}
			testSlowReaderIsNotStalled(t)
		})
	}
}

func testSlowReaderIsNotStalled(t *testing.T) {
	const stall = 3 * time.Second
	pair := func(t *testing.T, target string) *tunneltest.Pair {
		srv := tunneltest.NewServer(t)
		tun := srv.OpenTunnel("SSH")
		return tunneltest.StartPair(t, tunneltest.PairConfig{
			Config:      tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, Logger: tunneltest.Logger(t)},
			SourceToken: tun.SourceToken, DestinationToken: tun.DestinationToken,
			Tunnel: tun.Dataplane(), Services: []string{"SSH"}, Targets: tunnel.Targets{"SSH": target},
			Source:      func(s *tunnel.Source) { s.StallTimeout = stall },
			Destination: func(d *tunnel.Destination) { d.StallTimeout = stall },
		})
	}
	t.Run("download, slow client", func(t *testing.T) {
		t.Parallel()
		c, err := net.Dial("tcp", pair(t, endlessTarget(t)).Addr("SSH"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if n, err := readPaced(c, 40*time.Millisecond, 3*stall); err != nil {
			t.Fatalf("the client, reading ~200 KiB/s, read %d bytes, then %v; want to read on", n, err)
		}
	})
	t.Run("upload, slow target", func(t *testing.T) {
		t.Parallel()
		read := make(chan error, 1)
		target := tunneltest.ServeTCP(t, func(c net.Conn) {
			defer c.Close()
			n, err := readPaced(c, 40*time.Millisecond, 3*stall)
			if err != nil {
				t.Errorf("the target, reading ~200 KiB/s, read %d bytes, then %v; want to read on", n, err)
			}
			read <- err
		})
		c, err := net.Dial("tcp", pair(t, target).Addr("SSH"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		<-read
	})
}
