package tunnel_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// waitFrames waits until side has sent at least n recorded frames.
func waitFrames(t *testing.T, tun *tunneltest.Tunnel, side tunneltest.Side, n int) []tunneltest.Frame {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := tun.Received(side)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v sent %d frames, want %d: %+v", side, len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The destination drops DATA for stale streams and unknown connections (spec §3.2),
// answers unknown streams with one STREAM_RESET each, and serves the live one.
func TestDestinationDropsStaleFrames(t *testing.T) {
	addr := echoServer(t, 0)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true})
	h.tun.Record(true)
	send := func(m tunnel.Message) {
		if err := h.tun.Send(tunneltest.Destination, &m); err != nil {
			t.Fatal(err)
		}
	}
	send(tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 5, ServiceID: "SSH", ConnectionID: 1})
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 4, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("stale stream")})
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 4, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("stale again")})
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 5, ServiceID: "SSH", ConnectionID: 9, Payload: []byte("unknown connection")})
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 5, ServiceID: "WEB", ConnectionID: 1, Payload: []byte("unknown service")})
	send(tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 4, ServiceID: "SSH"}) // stale: ignored
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 5, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("ok")})
	waitFrames(t, h.tun, tunneltest.Destination, 3)
	time.Sleep(100 * time.Millisecond)
	got := h.tun.Received(tunneltest.Destination)
	// Data for streams the destination does not have is dropped and answered with
	// one STREAM_RESET per stream, so the source can start over; the live stream
	// carries on.
	want := []tunnel.Message{
		{Type: tunnel.TypeStreamReset, StreamID: 4, ServiceID: "SSH"},
		{Type: tunnel.TypeStreamReset, StreamID: 5, ServiceID: "WEB"},
		{Type: tunnel.TypeData, StreamID: 5, ServiceID: "SSH", ConnectionID: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("destination sent %+v, want %+v", got, want)
	}
	for i, w := range want {
		g := got[i].Message
		if g.Type != w.Type || g.StreamID != w.StreamID || g.ServiceID != w.ServiceID || g.ConnectionID != w.ConnectionID {
			t.Fatalf("frame %d: %v, want %v", i, &g, &w)
		}
	}
	if got[2].PayloadLen != 2 {
		t.Fatalf("echo of %d bytes, want 2", got[2].PayloadLen)
	}

	// A duplicate CONNECTION_START ends that connection on both sides.
	send(tunnel.Message{Type: tunnel.TypeConnectionStart, StreamID: 5, ServiceID: "SSH", ConnectionID: 1})
	got = waitFrames(t, h.tun, tunneltest.Destination, 4)
	if m := got[3].Message; m.Type != tunnel.TypeConnectionReset || m.ConnectionID != 1 || m.StreamID != 5 {
		t.Fatalf("after a duplicate CONNECTION_START the destination sent %+v, want CONNECTION_RESET 5/1", m)
	}
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 5, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("after reset")})
	time.Sleep(100 * time.Millisecond)
	if n := len(h.tun.Received(tunneltest.Destination)); n != 4 {
		t.Fatalf("destination answered data for a reset connection: %+v", h.tun.Received(tunneltest.Destination))
	}

	// Mixing formats in one session is a protocol error: the destination reconnects.
	send(tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 6})
	if err := h.tun.WaitConnects(ctxTimeout(t, 5*time.Second), tunneltest.Destination, 2); err != nil {
		t.Fatalf("destination did not reconnect after a V1 STREAM_START in a V3 session: %v", err)
	}
}

// A source that receives STREAM_START tears the session down and reconnects.
func TestSourceRejectsStreamStart(t *testing.T) {
	addr := echoServer(t, 0)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}})
	if err := h.tun.Send(tunneltest.Source, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"}); err != nil {
		t.Fatal(err)
	}
	if err := h.tun.WaitConnects(ctxTimeout(t, 5*time.Second), tunneltest.Source, 2); err != nil {
		t.Fatalf("source did not reconnect: %v", err)
	}
	if err := roundTrip(h.addr("SSH"), 0, 1000); err != nil {
		t.Fatal(err)
	}
}

// An operator whose source connects before the device: its first stream goes to
// nobody. The service resets it when the destination arrives, the source says why
// the connection ended, and its next connection starts a new stream that works (the
// first one hung forever before).
func TestSourceBeforeDestination(t *testing.T) {
	addr := echoServer(t, 0x31)
	srv := tunneltest.NewServer(t)
	srv.Logf = t.Logf
	tun := srv.OpenTunnel("SSH")
	var logged lockedLog
	log := slog.New(slog.NewTextHandler(&logged, nil))
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Logger: log}, Listen: map[string]string{"SSH": "127.0.0.1:0"}}
	ready := make(chan string, 1)
	src.OnListen = func(_ string, a net.Addr) { ready <- a.String() }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srcDone := make(chan struct{})
	go func() { defer close(srcDone); src.Run(ctx) }()
	defer func() { cancel(); <-srcDone }()
	var sshAddr string
	select {
	case sshAddr = <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("source did not listen")
	}
	early, err := net.Dial("tcp", sshAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	early.Write([]byte("hello?")) // relayed to nobody
	time.Sleep(100 * time.Millisecond)

	dst := &tunnel.Destination{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.DestinationToken),
		Logger: testLogger(t)}, Dialer: tunnel.Targets{"SSH": addr}}
	dstDone := make(chan struct{})
	go func() { defer close(dstDone); dst.Run(ctx) }()
	defer func() { cancel(); <-dstDone }()
	if err := tun.WaitConnects(ctxTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, early, 5*time.Second) // reset, not left hanging
	if n := logged.count("stream reset before the destination answered"); n != 1 {
		t.Errorf("the source logged %d hints that the destination had not answered, want 1:\n%s", n, logged.String())
	}
	if err := roundTrip(sshAddr, 0x31, 64<<10); err != nil {
		t.Fatalf("the next connection: %v", err)
	}
}

// A V3 source ends a stream with its last connection, so that a destination that
// lost the stream (it never saw it, or came back) is not sent CONNECTION_STARTs for
// it; the next connection starts a new stream.
func TestSourceEndsIdleStream(t *testing.T) {
	addr := echoServer(t, 0x32)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}})
	h.tun.Record(true)
	frames := func(typ tunnel.Type) []int32 {
		var ids []int32
		for _, f := range h.tun.Received(tunneltest.Source) {
			if f.Message.Type == typ {
				ids = append(ids, f.Message.StreamID)
			}
		}
		return ids
	}
	if err := roundTrip(h.addr("SSH"), 0x32, 1000); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(frames(tunnel.TypeStreamReset)) == 0 { // the stream ends with its connection
		if time.Now().After(deadline) {
			t.Fatalf("no STREAM_RESET after the last connection closed: %+v", h.tun.Received(tunneltest.Source))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := roundTrip(h.addr("SSH"), 0x32, 1000); err != nil {
		t.Fatal(err)
	}
	for {
		var starts, resets []int32
		for _, f := range h.tun.Received(tunneltest.Source) {
			switch f.Message.Type {
			case tunnel.TypeStreamStart:
				starts = append(starts, f.Message.StreamID)
			case tunnel.TypeStreamReset:
				resets = append(resets, f.Message.StreamID)
			}
		}
		if len(starts) == 2 && len(resets) == 2 && starts[0] == 1 && starts[1] == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("source sent STREAM_STARTs %v and STREAM_RESETs %v, want streams 1 and 2 each started and ended", starts, resets)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DialService carries an in-process connection without any listener.
func TestSourceDialService(t *testing.T) {
	addr := echoServer(t, 0x33)
	var seen []string
	var mu sync.Mutex
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true})
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: h.srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, h.tun.SourceToken), Logger: testLogger(t)},
		DialOnly: true, OnServices: func(s []string) { mu.Lock(); seen = s; mu.Unlock() },
		OnListen: func(string, net.Addr) { t.Error("a DialOnly source listened") }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c, err := src.DialService(ctxTimeout(t, 10*time.Second), "SSH")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTripConn(c, 0x33, 256<<10); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != "SSH" {
		t.Errorf("OnServices saw %q", seen)
	}
	mu.Unlock()
	if _, err := src.DialService(ctxTimeout(t, 5*time.Second), "WEB"); err == nil || !strings.Contains(err.Error(), `"WEB"`) {
		t.Fatalf("DialService(WEB) = %v, want an error naming it", err)
	}
}
