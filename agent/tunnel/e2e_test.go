package tunnel_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// echoServer answers every connection with its input XORed with key, so that data
// routed to the wrong service cannot pass the byte-for-byte check.
func echoServer(t *testing.T, key byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					for i := range buf[:n] {
						buf[i] ^= key
					}
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func mustToken(t *testing.T, s string) tunnel.Token {
	tok, err := tunnel.NewAccessToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// harness runs a Source and a Destination against the fake service.
type harness struct {
	t      *testing.T
	srv    *tunneltest.Server
	tun    *tunneltest.Tunnel
	dst    *tunnel.Destination
	src    *tunnel.Source
	cancel context.CancelFunc
	errs   chan error // Run results: destination first, source second (either order)

	mu    sync.Mutex
	addrs map[string]string
	ready chan struct{}
}

type setup struct {
	services  []string
	targets   tunnel.Targets
	protocol  tunnel.Version // subprotocol both sides offer
	peer      tunnel.Version // Source.PeerVersion
	dstTweak  func(*tunnel.Destination)
	srcTweak  func(*tunnel.Source)
	noSource  bool
	beforeRun func(*harness)
}

func newHarness(t *testing.T, st setup) *harness {
	t.Helper()
	h := &harness{t: t, srv: tunneltest.NewServer(t), addrs: map[string]string{}, ready: make(chan struct{}), errs: make(chan error, 2)}
	h.srv.Logf = t.Logf
	h.tun = h.srv.OpenTunnel(st.services...)
	base := tunnel.Config{
		Endpoint:               h.srv.URL,
		AllowInsecureWebSocket: true,
		Protocol:               st.protocol,
		RetryMin:               20 * time.Millisecond,
		RetryMax:               200 * time.Millisecond,
		Logger:                 testLogger(t),
	}
	h.dst = &tunnel.Destination{Config: base, Dialer: st.targets}
	h.dst.AccessToken = mustToken(t, h.tun.DestinationToken)
	listen := map[string]string{}
	for _, s := range st.services {
		listen[s] = "127.0.0.1:0"
	}
	if len(st.services) == 0 {
		listen[""] = "127.0.0.1:0"
	}
	h.src = &tunnel.Source{Config: base, Listen: listen, PeerVersion: st.peer}
	h.src.AccessToken = mustToken(t, h.tun.SourceToken)
	want := len(listen)
	h.src.OnListen = func(service string, addr net.Addr) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.addrs[service] = addr.String()
		if len(h.addrs) == want {
			close(h.ready)
		}
	}
	if st.dstTweak != nil {
		st.dstTweak(h.dst)
	}
	if st.srcTweak != nil {
		st.srcTweak(h.src)
	}
	if st.beforeRun != nil {
		st.beforeRun(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	n := 2
	if st.noSource {
		n = 1
	}
	go func() { h.errs <- h.dst.Run(ctx) }()
	if !st.noSource {
		go func() { h.errs <- h.src.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range n {
			select {
			case err := <-h.errs:
				if err != nil && !errors.Is(err, tunnel.ErrClosedByService) {
					t.Errorf("Run returned %v after cancel", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		}
	})
	if !st.noSource {
		select {
		case <-h.ready:
		case err := <-h.errs:
			h.errs <- err // for the cleanup
			t.Fatalf("Run ended before listening: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("source did not listen")
		}
	}
	if err := h.tun.WaitConnects(ctxTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatalf("destination did not connect: %v", err)
	}
	return h
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func (h *harness) addr(service string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addrs[service]
}

// roundTrip sends size random bytes through service and checks the XORed echo.
func roundTrip(addr string, key byte, size int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return roundTripConn(c, key, size)
}

func roundTripConn(c net.Conn, key byte, size int) error {
	data := make([]byte, size)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, size)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	for i := range got {
		if got[i] != data[i]^key {
			return fmt.Errorf("byte %d of %d: got %#x, want %#x", i, size, got[i], data[i]^key)
		}
	}
	return nil
}

var threeServices = []string{"SSH", "WEB", "VNC"}

func threeTargets(t *testing.T) (tunnel.Targets, map[string]byte) {
	keys := map[string]byte{"SSH": 0x11, "WEB": 0x22, "VNC": 0x33}
	tg := tunnel.Targets{}
	for s, k := range keys {
		tg[s] = echoServer(t, k)
	}
	return tg, keys
}

func TestEndToEndV3(t *testing.T) {
	targets, keys := threeTargets(t)
	h := newHarness(t, setup{services: threeServices, targets: targets})
	h.tun.Rechunk(1)
	const perService = 32
	size := 4 << 20
	if raceEnabled {
		size = 512 << 10
	}
	t.Logf("%d services × %d connections × %d bytes each way", len(threeServices), perService, size)
	var wg sync.WaitGroup
	errc := make(chan error, perService*len(threeServices))
	for _, svc := range threeServices {
		for range perService {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := roundTrip(h.addr(svc), keys[svc], size); err != nil {
					errc <- fmt.Errorf("%s: %w", svc, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// V2 and V1 carry one connection per service at a time: each service moves its data
// over one connection, then over a second one that starts a new stream.
func TestEndToEndV2(t *testing.T) {
	targets, keys := threeTargets(t)
	h := newHarness(t, setup{services: threeServices, targets: targets, protocol: tunnel.V2, peer: tunnel.V2})
	h.tun.Rechunk(2)
	var wg sync.WaitGroup
	for _, svc := range threeServices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			size := 4 << 20
			if raceEnabled {
				size = 1 << 20
			}
			for i := range 2 {
				if err := roundTrip(h.addr(svc), keys[svc], size); err != nil {
					t.Errorf("%s connection %d: %v", svc, i, err)
				}
			}
		}()
	}
	wg.Wait()
}

func TestEndToEndV1(t *testing.T) {
	addr := echoServer(t, 0x5a)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, protocol: tunnel.V1, peer: tunnel.V1,
		dstTweak: func(d *tunnel.Destination) { d.DefaultService = "SSH" }})
	h.tun.Rechunk(3)
	for i := range 3 {
		if err := roundTrip(h.addr("SSH"), 0x5a, 1<<20); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
}

// A V3 source talking to a destination that only speaks the V2 subprotocol must be
// configured as V2; a V1-format peer on a V3 connection works with PeerVersion V1.
func TestEndToEndMixedSubprotocols(t *testing.T) {
	addr := echoServer(t, 0x44)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, peer: tunnel.V1,
		dstTweak: func(d *tunnel.Destination) { d.Protocol = tunnel.V2 }})
	if err := roundTrip(h.addr("SSH"), 0x44, 256<<10); err != nil {
		t.Fatal(err)
	}
}
