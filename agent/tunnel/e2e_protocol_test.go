package tunnel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
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
	// carries on. The resets come in order, from the session's reset writer
	// (the reader never writes): the echo of the live stream may come between.
	want := []tunnel.Message{
		{Type: tunnel.TypeStreamReset, StreamID: 4, ServiceID: "SSH"},
		{Type: tunnel.TypeStreamReset, StreamID: 5, ServiceID: "WEB"},
		{Type: tunnel.TypeData, StreamID: 5, ServiceID: "SSH", ConnectionID: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("destination sent %+v, want %+v", got, want)
	}
	data := slices.IndexFunc(got, func(f tunneltest.Frame) bool { return f.Message.Type == tunnel.TypeData })
	if data < 0 || got[data].PayloadLen != 2 {
		t.Fatalf("destination sent %+v: want one echo of 2 bytes", got)
	}
	ordered := append(slices.Clone(got[:data]), got[data+1:]...)
	ordered = append(ordered, got[data])
	for i, w := range want {
		g := ordered[i].Message
		if g.Type != w.Type || g.StreamID != w.StreamID || g.ServiceID != w.ServiceID || g.ConnectionID != w.ConnectionID {
			t.Fatalf("frame %d (the echo last): %v, want %v", i, &g, &w)
		}
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
	// Formats: TestDestinationRefusesMixedFormats, TestDestinationFollowsSourceFormat.
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
	var logged testlog.Lines
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
	if n := logged.Count("stream reset before the destination answered"); n != 1 {
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
		// The first id is random (nextStreamID); the second follows it.
		if len(starts) == 2 && len(resets) == 2 && starts[0] > 0 && starts[1] == starts[0]+1 && slices.Equal(starts, resets) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("source sent STREAM_STARTs %v and STREAM_RESETs %v, want two consecutive streams each started and ended", starts, resets)
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

// TestSourceDialServiceOlderFormats: DialService, and RunStdio (porthole
// connect --stdio), carry a connection to an older destination as a
// listener's would: no service id towards a V1 one (which serves one
// service), and the service's id towards a V2 one, where the id picks the
// target.
func TestSourceDialServiceOlderFormats(t *testing.T) {
	for _, tc := range []struct {
		name     string
		services []string
		dial     string
		st       func(targets tunnel.Targets) setup
	}{
		{"V1", []string{"SSH"}, "SSH", func(tg tunnel.Targets) setup {
			return setup{services: []string{"SSH"}, targets: tg, protocol: tunnel.V1, peer: tunnel.V1,
				dstTweak: func(d *tunnel.Destination) { d.DefaultService = "SSH" }}
		}},
		{"V2", []string{"SSH", "WEB"}, "WEB", func(tg tunnel.Targets) setup {
			return setup{services: []string{"SSH", "WEB"}, targets: tg, protocol: tunnel.V2, peer: tunnel.V2}
		}},
	} {
		// Each target answers with a byte of its own: the wrong one fails the round trip.
		key := byte(0x60 + len(tc.services) - 1)
		harness := func(t *testing.T, noSource bool) *harness {
			tg := tunnel.Targets{}
			for i, svc := range tc.services {
				tg[svc] = echoServer(t, byte(0x60+i))
			}
			st := tc.st(tg)
			st.noSource = noSource
			return newHarness(t, st)
		}
		t.Run(tc.name+"/DialService", func(t *testing.T) {
			h := harness(t, false)
			h.addr(tc.dial) // the source is up and has the tunnel's services
			c, err := h.Src.DialService(ctxTimeout(t, 10*time.Second), tc.dial)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := roundTripConn(c, key, 64<<10); err != nil {
				t.Fatalf("DialService(%s) to a %s destination: %v", tc.dial, tc.name, err)
			}
		})
		t.Run(tc.name+"/stdio", func(t *testing.T) {
			h := harness(t, true) // the stdio source is the tunnel's only one
			stdioEcho(t, &tunnel.Source{Config: h.Src.Config, PeerVersion: h.Src.PeerVersion}, tc.dial, key)
		})
	}
}

// startSource runs a Source with the given peer format and subprotocol against h's
// tunnel until the returned stop is called; it returns the listen address of SSH.
// Every source of a test shares clientToken, as one operator's successive tools
// would share a cached one, so that the service lets each take the source's place.
func startSource(t *testing.T, h *harness, clientToken tunnel.Token, peer, protocol tunnel.Version) (addr string, stop func()) {
	t.Helper()
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: h.srv.URL, AllowInsecureWebSocket: true, Protocol: protocol,
		AccessToken: mustToken(t, h.tun.SourceToken), ClientToken: clientToken,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Logger: testLogger(t)},
		Listen: map[string]string{"SSH": "127.0.0.1:0"}, PeerVersion: peer}
	ready := make(chan string, 1)
	src.OnListen = func(_ string, a net.Addr) { ready <- a.String() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%v source: Run = %v after cancel", peer, err)
		}
	}
	t.Cleanup(stop)
	select {
	case addr = <-ready:
	case err := <-done:
		done <- err
		t.Fatalf("%v source ended before listening: %v", peer, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("%v source did not listen", peer)
	}
	return addr, stop
}

// An operator who connects with one tool and then with another of a different
// format (the AWS console or a 1.x/2.x localproxy, then porthole connect; or
// --destination-client-type V1, then V3) is served by the same destination
// session: once the earlier streams have ended, a STREAM_START in another format
// re-detects it (spec §2.3). Each change used to be a protocol error that cost the
// destination its WebSocket and the operator the connection that triggered it.
func TestDestinationFollowsSourceFormat(t *testing.T) {
	const key = 0x46
	addr := echoServer(t, key)
	var logged testlog.Lines
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true,
		dstTweak: func(d *tunnel.Destination) { d.Logger = slog.New(slog.NewTextHandler(&logged, nil)) }})
	defer func() {
		if t.Failed() {
			t.Logf("destination log:\n%s", logged.String())
		}
	}()
	h.tun.Record(true)
	clientToken := tunnel.GenerateClientToken()
	steps := []struct {
		peer     tunnel.Version // the source's format: Source.PeerVersion
		protocol tunnel.Version // its subprotocol; 0 is V3
	}{
		{tunnel.V1, tunnel.V1}, // the AWS console, localproxy 1.x
		{tunnel.V3, 0},         // porthole connect
		{tunnel.V2, tunnel.V2}, // localproxy 2.x
		{tunnel.V3, 0},
		{tunnel.V1, 0}, // porthole connect --destination-client-type V1
	}
	for i, step := range steps {
		first := len(h.tun.Received(tunneltest.Destination))
		sshAddr, stop := startSource(t, h, clientToken, step.peer, step.protocol)
		for j := range 2 {
			if err := roundTrip(sshAddr, key, 64<<10); err != nil {
				t.Fatalf("step %d (%v source), connection %d: %v", i, step.peer, j, err)
			}
		}
		stop()
		// The destination answered in the source's format.
		for _, f := range h.tun.Received(tunneltest.Destination)[first:] {
			m := f.Message
			var ok bool
			switch step.peer {
			case tunnel.V1:
				ok = m.ServiceID == "" && m.ConnectionID == 0 && m.Type != tunnel.TypeConnectionReset
			case tunnel.V2:
				ok = m.ServiceID == "SSH" && m.ConnectionID == 0 && m.Type != tunnel.TypeConnectionReset
			case tunnel.V3:
				ok = m.ServiceID == "SSH" && (m.ConnectionID != 0 || m.Type == tunnel.TypeStreamReset)
			}
			if !ok {
				t.Errorf("step %d: the destination sent %v to a %v source", i, &m, step.peer)
			}
		}
	}
	if n := h.tun.Connects(tunneltest.Destination); n != 1 {
		t.Errorf("the destination connected %d times, want 1 (no reconnect on a change of format)", n)
	}
	if n := logged.Count("peer protocol changed"); n != len(steps)-1 {
		t.Errorf("the destination logged %d changes of format, want %d", n, len(steps)-1)
	}
}

// A STREAM_START in another format while a connection of the session's format is
// open is a peer mixing formats, which the spec does not support (§2.3): the
// destination refuses that stream with a STREAM_RESET, so the source hears of it at
// once, and reconnects, which ends the open one too.
func TestDestinationRefusesMixedFormats(t *testing.T) {
	for _, tc := range []struct {
		name        string
		open, mixed tunnel.Message
	}{
		{"V1 open, V2 start",
			tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1},
			tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 2, ServiceID: "SSH"}},
		{"V2 open, V3 start",
			tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"},
			tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 2, ServiceID: "SSH", ConnectionID: 1}},
		{"V3 open, V1 start",
			tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1},
			tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := echoServer(t, 0)
			var logged testlog.Lines
			h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true,
				dstTweak: func(d *tunnel.Destination) { d.Logger = slog.New(slog.NewTextHandler(&logged, nil)) }})
			h.tun.Record(true)
			var service testlog.Lines
			h.srv.Logf = func(format string, args ...any) {
				t.Logf(format, args...)
				fmt.Fprintf(&service, format, args...)
			}
			h.srv.Handshakes() // takes the new Logf
			send := func(m tunnel.Message) {
				t.Helper()
				if err := h.tun.Send(tunneltest.Destination, &m); err != nil {
					t.Fatal(err)
				}
			}
			send(tc.open)
			data := tc.open
			data.Type, data.Payload = tunnel.TypeData, []byte("open")
			send(data)
			waitFrames(t, h.tun, tunneltest.Destination, 1) // the echo: the stream is open
			send(tc.mixed)
			if err := h.tun.WaitConnects(ctxTimeout(t, 5*time.Second), tunneltest.Destination, 2); err != nil {
				t.Fatalf("destination did not reconnect: %v", err)
			}
			got := h.tun.Received(tunneltest.Destination)
			if m := got[len(got)-1].Message; m.Type != tunnel.TypeStreamReset || m.StreamID != tc.mixed.StreamID || m.ServiceID != tc.mixed.ServiceID {
				t.Errorf("last frame from the destination: %v, want STREAM_RESET %d %q", &m, tc.mixed.StreamID, tc.mixed.ServiceID)
			}
			if n := logged.Count("peer protocol changed"); n != 0 {
				t.Errorf("the destination logged %d changes of format, want 0:\n%s", n, logged.String())
			}
			// The refusing connection ended with a Close frame that the service
			// read after the reset, not with a drop that can lose the reset. (A
			// drop ends it with another error. Its "ended" line comes when the
			// service has finished with it, which under load can be after the
			// reconnect replaced it, and after WaitConnects returned: waited
			// for. "replaced" says nothing of the Close.)
			waitUntil(t, "the first connection's end", func() bool { return service.Count("msg=ended") > 0 })
			if service.Count("received close frame: status = StatusProtocolError") != 1 {
				t.Errorf("the first connection did not end with a Close frame before the reconnect:\n%s", service.String())
			}
		})
	}
}

// A local connection that is still closing when a STREAM_START in another format
// arrives (here: its peer reset it while its dial was still going, with data
// for it, which it must still write) is waited for,
// since it could still send a frame in the old format; if it does not finish in
// time, the STREAM_START is refused as if the connection were open.
func TestDestinationFormatChangeWaitsForClosing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		release  time.Duration // when the stuck dial returns; 0: only when the session ends
		switched bool
	}{
		{"closes in time", 100 * time.Millisecond, true},
		{"still closing", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := echoServer(t, 0)
			gate := make(chan struct{})
			dialer := tunnel.DialerFunc(func(ctx context.Context, _ string) (net.Conn, error) {
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			})
			var logged testlog.Lines
			h := newHarness(t, setup{services: []string{"SSH"}, targets: dialer, noSource: true,
				dstTweak: func(d *tunnel.Destination) { d.Logger = slog.New(slog.NewTextHandler(&logged, nil)) }})
			defer func() {
				if t.Failed() {
					t.Logf("destination log:\n%s", logged.String())
				}
			}()
			h.tun.Record(true)
			send := func(m tunnel.Message) {
				t.Helper()
				if err := h.tun.Send(tunneltest.Destination, &m); err != nil {
					t.Fatal(err)
				}
			}
			send(tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"}) // V2, dialing
			if !tc.switched {
				// Data to write once the dial is done: the link stays (a
				// link reset with nothing to write ends with its dial).
				send(tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: []byte("last")})
			}
			send(tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 1, ServiceID: "SSH"}) // now closing
			time.Sleep(50 * time.Millisecond)
			if tc.release > 0 {
				time.AfterFunc(tc.release, func() { close(gate) })
			}
			v3 := tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1}
			send(v3)
			if !tc.switched {
				if err := h.tun.WaitConnects(ctxTimeout(t, 5*time.Second), tunneltest.Destination, 2); err != nil {
					t.Fatalf("destination did not reconnect: %v", err)
				}
				got := h.tun.Received(tunneltest.Destination)
				if len(got) != 1 || got[0].Message.Type != tunnel.TypeStreamReset || got[0].Message.ConnectionID != 0 {
					t.Fatalf("destination sent %+v, want one STREAM_RESET of the V3 stream", got)
				}
				return
			}
			send(tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("v3")})
			got := waitFrames(t, h.tun, tunneltest.Destination, 1)
			if m := got[0].Message; m.Type != tunnel.TypeData || m.ConnectionID != 1 || got[0].PayloadLen != 2 {
				t.Fatalf("destination sent %v (%d bytes), want the echo on V3 connection 1", &m, got[0].PayloadLen)
			}
			if n := h.tun.Connects(tunneltest.Destination); n != 1 {
				t.Errorf("the destination connected %d times, want 1", n)
			}
			if n := logged.Count("peer protocol changed"); n != 1 {
				t.Errorf("the destination logged %d changes of format, want 1", n)
			}
		})
	}
}

// Two connections opened at once on a V3 service (two console terminals, or
// DialService beside a listener): the second is a CONNECTION_START on the stream
// the first starts, and must not reach the wire before that STREAM_START, or the
// destination resets a stream it has not seen and the source ends both. The
// window is narrow, so the test opens four at once, many times.
func TestConcurrentOpensSendStreamStartFirst(t *testing.T) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	tun.Record(true)
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true,
		AccessToken: mustToken(t, tun.SourceToken)}, DialOnly: true, AnswerWait: -1}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx) }()
	defer func() { cancel(); <-errc }()
	for range 200 {
		var wg sync.WaitGroup
		conns := make([]net.Conn, 4)
		for i := range conns {
			wg.Go(func() {
				c, err := src.DialService(ctx, "SSH")
				if err != nil {
					t.Error(err)
					return
				}
				conns[i] = c
			})
		}
		wg.Wait()
		for _, c := range conns {
			if c != nil {
				c.Close() // the last close ends the stream: the next round starts one
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	started := map[int32]bool{}
	for _, f := range tun.Received(tunneltest.Source) {
		switch f.Message.Type {
		case tunnel.TypeStreamStart:
			started[f.Message.StreamID] = true
		case tunnel.TypeConnectionStart:
			if !started[f.Message.StreamID] {
				t.Errorf("CONNECTION_START for stream %d before its STREAM_START", f.Message.StreamID)
			}
		}
	}
}

// A CONNECTION_START on the stream of a V2 session (one connection per
// stream): the destination resets the stream and closes its connection too,
// as a V2 localproxy does. It once sent the reset and kept the connection,
// orphaned until a later STREAM_START.
func TestConnectionStartOnV2StreamEndsIt(t *testing.T) {
	addr, accepted := acceptor(t, 2)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true})
	h.tun.Record(true)
	if err := h.tun.Send(tunneltest.Destination, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"}); err != nil {
		t.Fatal(err)
	}
	var target net.Conn
	select {
	case target = <-accepted:
		defer target.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the destination did not dial its target")
	}
	if err := h.tun.Send(tunneltest.Destination, &tunnel.Message{Type: tunnel.TypeConnectionStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 2}); err != nil {
		t.Fatal(err)
	}
	got := waitFrames(t, h.tun, tunneltest.Destination, 1)
	if m := got[0].Message; m.Type != tunnel.TypeStreamReset || m.StreamID != 1 || m.ServiceID != "SSH" {
		t.Errorf("the destination answered %v, want STREAM_RESET of stream 1", &m)
	}
	waitClosed(t, target, 5*time.Second)
}

// A source whose connection carries -2.0 (it offered it, or the service
// answered -2.0 to -3.0, spec §2.2) sends V2 frames whatever its
// destination's format: no connection ids, no CONNECTION_START.
func TestSourceFormatCappedBySubprotocol(t *testing.T) {
	const key = 0x47
	addr := echoServer(t, key)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, protocol: tunnel.V2})
	h.tun.Record(true)
	for range 2 {
		if err := roundTrip(h.addr("SSH"), key, 4<<10); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range h.tun.Received(tunneltest.Source) {
		if m := f.Message; m.ConnectionID != 0 || m.Type == tunnel.TypeConnectionStart {
			t.Errorf("the source sent %v on a -2.0 connection", &m)
		}
	}
}

// Two services mapped to port 0 of one address get one listener each: the
// listeners bound before the first connection were kept by address, so the
// second replaced the first, which stayed open, never served, until the end.
func TestSourceTwoServicesOnPortZero(t *testing.T) {
	srv := tunneltest.NewServer(t)
	srv.Logf = t.Logf
	tun := srv.OpenTunnel("SSH", "WEB")
	// No collection meanwhile: a leaked listener's finalizer would close it.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := listeningPorts(t)
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Logger: testLogger(t)},
		Listen: map[string]string{"SSH": "127.0.0.1:0", "WEB": "127.0.0.1:0"}}
	served := make(chan int, 2)
	src.OnListen = func(_ string, a net.Addr) { served <- a.(*net.TCPAddr).Port }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	defer func() { cancel(); <-done }()
	want := map[int]bool{}
	for range 2 {
		select {
		case p := <-served:
			want[p] = true
		case <-time.After(10 * time.Second):
			t.Fatal("source did not listen for both services")
		}
	}
	var extra []int
	for p := range listeningPorts(t) {
		if !before[p] && !want[p] {
			extra = append(extra, p)
		}
	}
	if len(want) != 2 || len(extra) != 0 {
		t.Errorf("served ports %v, and listening besides them on %v; want two served and none besides", want, extra)
	}
}

// listeningPorts is the TCP ports this process listens on, from /proc.
func listeningPorts(t *testing.T) map[int]bool {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil {
			if in, ok := strings.CutPrefix(l, "socket:["); ok {
				inodes[strings.TrimSuffix(in, "]")] = true
			}
		}
	}
	ports := map[int]bool{}
	for _, f := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
				ports[int(p)] = true
			}
		}
	}
	return ports
}

// A SERVICE_IDS no real service sends (more services than any tunnel has, or
// one twice) ends the source with ErrConfig and a short message, before it
// opens a listener for each.
func TestSourceRefusesImplausibleServiceIDs(t *testing.T) {
	many := make([]string, 100)
	for i := range many {
		many[i] = fmt.Sprintf("S%03d-%s", i, strings.Repeat("x", 100))
	}
	for _, tc := range []struct {
		ids  []string
		want string
	}{
		{many, "the tunnel lists 100 services, more than 64"},
		{[]string{"SSH", "WEB", "SSH"}, `the tunnel lists service "SSH" twice`},
	} {
		srv := tunneltest.NewServer(t)
		tun := srv.OpenTunnel(tc.ids...)
		listened := 0
		src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
			Logger: testLogger(t)}, Listen: map[string]string{"SSH": "127.0.0.1:0"},
			OnListen: func(string, net.Addr) { listened++ }}
		err := src.Run(ctxTimeout(t, 10*time.Second))
		if !errors.Is(err, tunnel.ErrConfig) || !strings.Contains(err.Error(), tc.want) || len(err.Error()) > 512 {
			t.Errorf("Run = %v, want ErrConfig saying %q in a short message", err, tc.want)
		}
		if listened != 0 {
			t.Errorf("%d listeners reported for a refused service list", listened)
		}
	}
}

// TestSourceV1RefusesTwoServices: a V1 destination gets no service id, so a
// V1 source on a tunnel of two services would carry the connections of both
// to the one service the device serves: WEB's port would reach SSH. Run
// refuses it and listens on neither.
func TestSourceV1RefusesTwoServices(t *testing.T) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH", "WEB")
	listened := 0
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
		Logger: testLogger(t)}, Listen: map[string]string{"SSH": "127.0.0.1:0"}, PeerVersion: tunnel.V1,
		OnListen: func(string, net.Addr) { listened++ }}
	err := src.Run(ctxTimeout(t, 10*time.Second))
	if !errors.Is(err, tunnel.ErrConfig) || !strings.Contains(err.Error(), "a V1 destination needs a one-service tunnel") {
		t.Errorf("Run = %v, want ErrConfig saying a V1 destination needs a one-service tunnel", err)
	}
	if listened != 0 {
		t.Errorf("%d listeners reported for a two-service tunnel towards V1", listened)
	}
}

// TestStdioV1RefusesTwoServices: RunStdio refuses a tunnel of two services
// towards V1 as Run does: its stream, without a service id, went to whichever
// service the device serves.
func TestStdioV1RefusesTwoServices(t *testing.T) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH", "WEB")
	tun.Record(true)
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
		Logger: testLogger(t)}, PeerVersion: tunnel.V1}
	inR, inW := io.Pipe()
	defer inW.Close()
	err := src.RunStdio(ctxTimeout(t, 10*time.Second), "WEB", inR, io.Discard)
	if !errors.Is(err, tunnel.ErrConfig) || !strings.Contains(err.Error(), "a V1 destination needs a one-service tunnel") {
		t.Errorf("RunStdio(\"WEB\") = %v, want ErrConfig saying a V1 destination needs a one-service tunnel", err)
	}
	for _, f := range tun.Received(tunneltest.Source) {
		if f.Message.Type == tunnel.TypeStreamStart {
			t.Errorf("RunStdio refused, but sent %v", f.Message.Type)
		}
	}
}

// TestSourceRefusesBadListen: Run refuses a Listen that ParseListen would,
// before it joins the tunnel, as it does for a port in use: a service id the
// API cannot carry, or a bare [addr:]port beside SERVICE=[addr:]port (whose
// named listener would be bound and then never served). Callers other than
// porthole connect (the console, the lab) fill Listen themselves.
func TestSourceRefusesBadListen(t *testing.T) {
	for _, tc := range []struct {
		listen map[string]string
		want   string
	}{
		{map[string]string{"bad name": "127.0.0.1:0"}, "service id"},
		{map[string]string{"": "127.0.0.1:0", "SSH": "127.0.0.1:0"}, "cannot be mixed"},
	} {
		srv := tunneltest.NewServer(t)
		tun := srv.OpenTunnel("SSH")
		src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
			Logger: testLogger(t)}, Listen: tc.listen}
		err := src.Run(ctxTimeout(t, 10*time.Second))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run with Listen %q = %v, want an error saying %q", tc.listen, err, tc.want)
		}
		if n := tun.Connects(tunneltest.Source); n != 0 {
			t.Errorf("Run with Listen %q joined the tunnel %d times, want none", tc.listen, n)
		}
	}
}

// TestNoDataAfterPeerReset: once the peer has reset a stream, the destination
// sends no DATA for it. A source that starts its stream ids at 1 again (the
// reference localproxy, each time it starts) would take the old local
// connection's output for its new connection's. Here the old target is still
// taking the last payload when the reset comes, and then writes.
func TestNoDataAfterPeerReset(t *testing.T) {
	targets := make(chan net.Conn, 2)
	dialer := tunnel.DialerFunc(func(ctx context.Context, service string) (net.Conn, error) {
		ours, theirs := net.Pipe()
		t.Cleanup(func() { theirs.Close() })
		targets <- theirs
		return ours, nil
	})
	tun, send := runRawDestination(t, dialer, 10*time.Second)
	send(tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1})
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("hello")})
	var old net.Conn
	select {
	case old = <-targets:
	case <-time.After(5 * time.Second):
		t.Fatal("no dial")
	}
	probe(t, tun, 500) // "hello" is queued, unread
	send(tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 1, ServiceID: "SSH"})
	// The source starts again; its first stream is 1 again.
	send(tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1})
	select {
	case <-targets: // the new target: it writes nothing
	case <-time.After(5 * time.Second):
		t.Fatal("the second STREAM_START was not dialled")
	}
	// The old target writes (its output, a login banner...): once Write
	// returns, the destination has read it.
	old.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := old.Write([]byte("old session's output")); err != nil {
		t.Fatalf("the old target's write: %v", err)
	}
	// And takes the payload sent before the reset.
	old.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(old); string(b) != "hello" {
		t.Errorf("the old target got %q (%v) before its end, want the payload sent before the reset", b, err)
	}
	time.Sleep(300 * time.Millisecond) // were it sent, it would have come by now
	for _, f := range tun.Received(tunneltest.Destination) {
		if f.Message.Type == tunnel.TypeData {
			t.Fatalf("after the peer reset stream 1 and started a new stream 1, the destination sent %v: the old connection's output went to the new stream", &f.Message)
		}
	}
}

// TestPeerResetDoesNotStallReader: the peer's reset of a stream whose local
// connections do not read ends them without the WebSocket reader waiting for
// room in their queues: every other stream of the tunnel goes on at once, not
// after the stall timeout for each of them in turn.
func TestPeerResetDoesNotStallReader(t *testing.T) {
	const stall = 10 * time.Second
	dialer := tunnel.DialerFunc(func(ctx context.Context, service string) (net.Conn, error) {
		ours, theirs := net.Pipe() // never read
		t.Cleanup(func() { theirs.Close() })
		return ours, nil
	})
	tun, send := runRawDestination(t, dialer, stall)
	send(tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1})
	send(tunnel.Message{Type: tunnel.TypeConnectionStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 2})
	send(tunnel.Message{Type: tunnel.TypeConnectionStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 3})
	// One payload in each target's write, four queued: a full queue, which
	// holds the reader up no more than its session's budget does.
	for c := uint32(1); c <= 3; c++ {
		for range 5 {
			send(tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: c, Payload: []byte("x")})
		}
	}
	probe(t, tun, 500) // every frame above handled, without a stall
	start := time.Now()
	send(tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 1, ServiceID: "SSH"})
	probe(t, tun, 501)
	// Three stall timeouts before the fix; the bound, one, is loose for a
	// loaded machine: this is no measure of speed.
	if d := time.Since(start); d >= stall {
		t.Fatalf("after the peer's STREAM_RESET the destination read its next frame %v later (stall timeout %v): the tunnel was held up", d.Round(10*time.Millisecond), stall)
	}
}

// runRawDestination runs a Destination whose service SSH is dialled by dialer,
// against a test service whose frames the test sends itself and records.
func runRawDestination(t *testing.T, dialer tunnel.Dialer, stall time.Duration) (*tunneltest.Tunnel, func(tunnel.Message)) {
	t.Helper()
	h := newHarness(t, setup{services: []string{"SSH"}, noSource: true,
		dstTweak: func(d *tunnel.Destination) { d.Dialer, d.StallTimeout = dialer, stall }})
	h.tun.Record(true)
	if err := h.tun.WaitConnects(ctxTimeout(t, 5*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	return h.tun, func(m tunnel.Message) {
		t.Helper()
		if err := h.tun.Send(tunneltest.Destination, &m); err != nil {
			t.Fatal(err)
		}
	}
}

// runDialOnlySource runs a DialOnly source on h's tunnel until the test ends.
func runDialOnlySource(t *testing.T, h *harness) *tunnel.Source {
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: h.srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, h.tun.SourceToken), Logger: testLogger(t)},
		DialOnly: true}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return src
}

// TestConnIDWrapSkipsOpenConnection: once a V3 stream's connection ids wrap
// (2^32 connections while one stays open), a new connection does not take
// the id of one still open: the destination ended both as a duplicate, and
// the old local connection hung, its data dropped.
func TestConnIDWrapSkipsOpenConnection(t *testing.T) {
	addr := echoServer(t, 0x41)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true})
	src := runDialOnlySource(t, h)

	c1, err := src.DialService(ctxTimeout(t, 10*time.Second), "SSH")
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if err := roundTripConn(c1, 0x41, 1000); err != nil {
		t.Fatal(err)
	}
	tunnel.SetLastConnID(src, "SSH", math.MaxUint32) // c1 is connection 1
	c2, err := src.DialService(ctxTimeout(t, 10*time.Second), "SSH")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	for i, c := range []net.Conn{c2, c1} {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := roundTripConn(c, 0x41, 1000); err != nil {
			t.Errorf("connection %d after the ids wrapped: %v", 2-i, err)
		}
	}
}

// TestConnIDWrapSkipsEveryOpenConnection: past 2^32 connections the ids wrap
// and skip every id still open, not only the first: with connections 1 and 2
// open, the next is 3 (a duplicate id would end both on the destination).
func TestConnIDWrapSkipsEveryOpenConnection(t *testing.T) {
	addr := echoServer(t, 0x41)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true})
	src := runDialOnlySource(t, h)

	var conns []net.Conn
	for i := range 3 {
		if i == 2 {
			tunnel.SetLastConnID(src, "SSH", math.MaxUint32) // connections 1 and 2 are open
		}
		c, err := src.DialService(ctxTimeout(t, 10*time.Second), "SSH")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := roundTripConn(c, 0x41, 1000); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := roundTripConn(c, 0x41, 1000); err != nil {
			t.Errorf("connection %d after the ids wrapped: %v", i+1, err)
		}
	}
}
