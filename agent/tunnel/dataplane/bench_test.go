//go:build unix

package dataplane

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// BenchmarkRelay measures the relay of DATA frames from a source to a
// destination through a Server on loopback (no TLS): what tunneld's data plane
// costs per byte, with the two clients' own WebSocket work included. Each case is
// a DATA payload size and how many frames the source puts in one WebSocket
// message: one, as the agent and the reference clients send them, or several, as
// a client that batches does (the server relays each frame as a message of its
// own). MB/s counts the frames' bytes; cpu-ns/op is the process's CPU time (user
// and system, getrusage), which says more than ns/op on a busy machine.
func BenchmarkRelay(b *testing.B) {
	for _, bc := range []struct{ payload, perMessage int }{
		{tunnel.MaxPayload, 1},
		{1024, 1},
		{16 << 10, 4},
	} {
		b.Run(fmt.Sprintf("payload=%d/frames=%d", bc.payload, bc.perMessage), func(b *testing.B) {
			benchRelay(b, bc.payload, bc.perMessage)
		})
	}
}

func benchRelay(b *testing.B, payload, perMessage int) {
	s := &Server{}
	hs := httptest.NewUnstartedServer(s)
	hs.Config.ConnContext = s.ConnContext
	hs.Start()
	defer func() {
		s.Close()
		hs.Close()
	}()
	tun, err := s.OpenTunnel(TunnelConfig{Services: []string{"SSH"}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	url := "ws://" + strings.TrimPrefix(hs.URL, "http://") + "/tunnel?local-proxy-mode="
	dst := benchDial(ctx, b, url+"destination", tun.Side(Destination).Token)
	src := benchDial(ctx, b, url+"source", tun.Side(Source).Token)
	for _, c := range []*websocket.Conn{dst, src} {
		if _, _, err := c.Read(ctx); err != nil { // SERVICE_IDS
			b.Fatal(err)
		}
	}
	src.CloseRead(ctx)

	start, _ := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	var msg []byte
	for range perMessage {
		msg, err = tunnel.AppendFrame(msg, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: make([]byte, payload)})
		if err != nil {
			b.Fatal(err)
		}
	}
	total := int64(len(start)) + int64(b.N)*int64(len(msg))
	read := make(chan error, 1)
	go func() {
		var n int64
		for n < total {
			_, r, err := dst.Reader(ctx)
			if err != nil {
				read <- fmt.Errorf("destination read %d of %d bytes: %w", n, total, err)
				return
			}
			m, err := io.Copy(io.Discard, r)
			n += m
			if err != nil {
				read <- err
				return
			}
		}
		read <- nil
	}()

	if err := src.Write(ctx, websocket.MessageBinary, start); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for range b.N {
		if err := src.Write(ctx, websocket.MessageBinary, msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-read; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time the process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchDial(ctx context.Context, b *testing.B, url, token string) *websocket.Conn {
	b.Helper()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPHeader:   http.Header{"access-token": {token}},
		Subprotocols: []string{SubprotocolV3},
	})
	if err != nil {
		b.Fatal(err)
	}
	c.SetReadLimit(maxWebSocketMessage)
	b.Cleanup(func() { c.CloseNow() })
	return c
}
