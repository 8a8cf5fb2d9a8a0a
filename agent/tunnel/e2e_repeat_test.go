package tunnel_test

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// TestHostileServiceRepeatingBadFrameRateLimited: a service that sends the
// same bad frame (type 0) on every connection, for 8 s, with the agent's
// defaults (RetryMin 1 s, RetryMax 120 s). Issue 8: the agent must "log one
// clear line per cause (rate-limited)". The lines naming the cause, and the
// reconnects, must be bounded (the backoff must grow), not one per ~0.5 s for
// as long as the service does it.
func TestHostileServiceRepeatingBadFrameRateLimited(t *testing.T) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	var logged testlog.Lines
	d := &tunnel.Destination{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true,
		AccessToken: mustToken(t, tun.DestinationToken),
		Logger:      slog.New(slog.NewTextHandler(&logged, nil))}, Dialer: tunnel.Targets{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// The hostile service: every new connection of the destination gets a
	// frame of type 0 (UNKNOWN), which ends the session.
	deadline := time.Now().Add(8 * time.Second)
	seen := 0
	for time.Now().Before(deadline) {
		if n := tun.Connects(tunneltest.Destination); n > seen && tun.Connected(tunneltest.Destination) {
			seen = n
			tun.SendRaw(tunneltest.Destination, []byte{0x00, 0x02, 0x10, 0x01})
		}
		time.Sleep(5 * time.Millisecond)
	}
	lines := logged.Count("message type 0 (UNKNOWN)")
	t.Logf("in 8 s: %d connects, %d lines naming the cause, %d lines in all", seen, lines, len(strings.Split(strings.TrimSpace(logged.String()), "\n")))
	t.Logf("log:\n%.1500s", logged.String())
	if seen > 10 || lines > 10 {
		t.Errorf("a service repeating one bad frame made %d reconnects and %d lines naming the cause in 8 s: the backoff restarts at each connect, neither the reconnects nor the lines are rate-limited", seen, lines)
	}
}

// TestDropMidTransferLeavesNoGoroutine: issue 8's "WebSocket dropped
// mid-transfer (the transfer fails cleanly, the next one works, no goroutine
// or FD left behind)", counted in-process while both sides keep running
// (goleak in TestMain looks only after everything has stopped; the e2e test
// counts the agent binary's FDs, not its goroutines). Five drops of each
// side under an 8 MiB transfer.
func TestDropMidTransferLeavesNoGoroutine(t *testing.T) {
	addr := echoServer(t, 7)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}})
	if err := roundTrip(h.addr("SSH"), 7, 64<<10); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	base := runtime.NumGoroutine()
	for i, side := range []tunneltest.Side{tunneltest.Destination, tunneltest.Source, tunneltest.Destination, tunneltest.Source, tunneltest.Destination} {
		before := h.tun.Connects(side)
		c, err := net.Dial("tcp", h.addr("SSH"))
		if err != nil {
			t.Fatal(err)
		}
		h.tun.DropAfter(side, 20)
		if err := roundTripConn(c, 7, 8<<20); err == nil {
			t.Fatalf("drop %d: transfer succeeded across a dropped link", i)
		}
		c.Close()
		if err := h.tun.WaitConnects(ctxTimeout(t, 10*time.Second), side, before+1); err != nil {
			t.Fatalf("drop %d: no reconnect: %v", i, err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if err := roundTrip(h.addr("SSH"), 7, 1<<20); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("drop %d: next transfer: %v", i, err)
			}
		}
	}
	g := goroutinesDownTo(base+2, 10*time.Second)
	t.Logf("goroutines: %d before the drops, %d after", base, g)
	if g > base+2 {
		t.Errorf("%d goroutines after 5 drops mid-transfer, %d before", g, base)
	}
}

// TestStreamStartFloodLogBounded: issue 8's hostile-peer "flood of
// STREAM_STARTs" with "log one clear line per cause (rate-limited)": 300
// STREAM_STARTs write a bounded number of lines (TestHostileFloodLogBounded
// counts the lines of DATA for unknown streams only).
func TestStreamStartFloodLogBounded(t *testing.T) {
	var logged testlog.Lines
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": echoServer(t, 1)}, noSource: true,
		dstTweak: func(d *tunnel.Destination) { d.Logger = slog.New(slog.NewTextHandler(&logged, nil)) }})
	if err := h.tun.WaitConnects(ctxTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	h.tun.Record(true)
	before := len(strings.Split(logged.String(), "\n"))
	for i := range 300 {
		if err := h.tun.Send(tunneltest.Destination, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: int32(5000 + i), ServiceID: "SSH", ConnectionID: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// Ignorable unknown types (with ignorable set), 300 of them.
	for range 300 {
		if err := h.tun.SendRaw(tunneltest.Destination, []byte{0x00, 0x06, 0x08, 0x63, 0x18, 0x01, 0x10, 0x01}); err != nil {
			t.Fatal(err)
		}
	}
	probe(t, h.tun, 9999)
	lines := len(strings.Split(logged.String(), "\n")) - before
	t.Logf("%d lines for 300 STREAM_STARTs and 300 ignorable frames:\n%.2000s", lines, logged.String())
	if lines > 40 {
		t.Errorf("%d lines for 300 STREAM_STARTs and 300 ignorable frames, want them rate-limited", lines)
	}
}
