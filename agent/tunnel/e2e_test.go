package tunnel_test

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// The harness lives in tunneltest so that tools/tunneld runs the same checks
// against the real service.
var (
	echoServer    = tunneltest.EchoServer
	roundTrip     = tunneltest.RoundTrip
	roundTripConn = tunneltest.RoundTripConn
	testLogger    = func(t *testing.T) *slog.Logger { return tunneltest.Logger(t) }
)

func mustToken(t *testing.T, s string) tunnel.Token {
	tok, err := tunnel.NewAccessToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// harness is a Source and a Destination against one tunnel of the fake service.
type harness struct {
	*tunneltest.Pair
	srv *tunneltest.Server
	tun *tunneltest.Tunnel
}

type setup struct {
	services  []string
	targets   tunnel.Dialer
	protocol  tunnel.Version // subprotocol both sides offer
	peer      tunnel.Version // Source.PeerVersion
	dstTweak  func(*tunnel.Destination)
	noSource  bool
	beforeRun func(*harness)
	logged    *testlog.Lines // if set, both sides log to it too, at debug
}

func newHarness(t *testing.T, st setup) *harness {
	t.Helper()
	h := &harness{srv: tunneltest.NewServer(t)}
	h.srv.Logf = t.Logf
	h.tun = h.srv.OpenTunnel(st.services...)
	if st.beforeRun != nil {
		st.beforeRun(h)
	}
	var log *slog.Logger
	if st.logged != nil {
		log = slogDebugTo(st.logged, t)
	}
	h.Pair = tunneltest.StartPair(t, tunneltest.PairConfig{
		Config:           tunnel.Config{Endpoint: h.srv.URL, AllowInsecureWebSocket: true, Protocol: st.protocol, Logger: log},
		SourceToken:      h.tun.SourceToken,
		DestinationToken: h.tun.DestinationToken,
		Tunnel:           h.tun.Dataplane(),
		Services:         st.services,
		Targets:          st.targets,
		Peer:             st.peer,
		Destination:      st.dstTweak,
		NoSource:         st.noSource,
	})
	return h
}

func (h *harness) addr(service string) string { return h.Addr(service) }

// acceptor listens on loopback and hands over each connection it accepts, up
// to n waiting; the listener closes with the test.
func acceptor(t *testing.T, n int) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	return ln.Addr().String(), ch
}

// goroutinesDownTo waits up to d for the process to run at most limit
// goroutines (connections closing end theirs), and returns how many it runs.
func goroutinesDownTo(limit int, d time.Duration) int {
	g := runtime.NumGoroutine()
	for deadline := time.Now().Add(d); g > limit && time.Now().Before(deadline); g = runtime.NumGoroutine() {
		time.Sleep(20 * time.Millisecond)
	}
	return g
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var threeServices = []string{"SSH", "WEB", "VNC"}

var threeTargets = func(t *testing.T) (tunnel.Targets, map[string]byte) { return tunneltest.ThreeTargets(t) }

func TestEndToEndV3(t *testing.T) {
	targets, keys := threeTargets(t)
	h := newHarness(t, setup{services: threeServices, targets: targets})
	h.tun.Rechunk(1)
	const perService = 32
	size := 4 << 20
	if raceEnabled || testing.Short() {
		// Under the race detector, and under qemu-user (tools/qemu-test.sh runs
		// -short): the same connections with less data. make test also runs the
		// full size natively.
		size = 256 << 10
	}
	t.Logf("%d services × %d connections × %d bytes each way", len(threeServices), perService, size)
	tunneltest.Transfer(t, h.Pair, keys, perService, size)
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
			if raceEnabled || testing.Short() {
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

// TestEndToEndBusyThenQuiet: one connection alternates bulk and small exchanges,
// so each side's reader moves between its small and its pooled buffer (pumpUp);
// every byte is checked each time.
func TestEndToEndBusyThenQuiet(t *testing.T) {
	targets, keys := threeTargets(t)
	h := newHarness(t, setup{services: threeServices, targets: targets})
	svc := threeServices[0]
	c, err := net.Dial("tcp", h.Addr(svc))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, size := range []int{1 << 20, 100, 1, 300 << 10, 4 << 10, 17, 1 << 20} {
		if err := roundTripConn(c, keys[svc], size); err != nil {
			t.Fatalf("exchange %d (%d bytes): %v", i, size, err)
		}
	}
}
