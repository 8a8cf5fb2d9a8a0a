package tunnel_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// slowTargets dials like a target on the allow-list whose host is down or
// behind a route that drops SYNs (a LAN camera switched off): the dial
// returns only when its context ends. It counts the dials still waiting.
func slowTargets(waiting *atomic.Int64) tunnel.Dialer {
	return tunnel.DialerFunc(func(ctx context.Context, svc string) (net.Conn, error) {
		waiting.Add(1)
		defer waiting.Add(-1)
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

// A source that starts and resets streams (V2: a STREAM_START supersedes the
// last one too) or V3 connections as fast as it can, for a service whose
// target is slow to answer: the connections it has ended must not pile up.
// Each one went on dialing for the whole dial timeout, with a goroutine (and,
// with a real target, a socket), and one with data to write also waited for
// its dial: growth in proportion to the rate of the flood, thousands in a few
// seconds. A connection reset with nothing to write now ends with its dial,
// and a session holds at most MaxConnections per service open and as many
// closing.
func TestStartResetFloodBounded(t *testing.T) {
	const maxConns = 8
	const bound = 2 * maxConns // one service
	for _, tc := range []struct {
		name      string
		v3, data  bool
		supersede bool // V2 STREAM_STARTs only, no resets
	}{
		{name: "V2 superseded", supersede: true},
		{name: "V2 start reset"},
		{name: "V2 start data reset", data: true},
		{name: "V3 start reset", v3: true},
		{name: "V3 start data reset", v3: true, data: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var waiting atomic.Int64
			h := slowTargetHarness(t, []string{"WEB"}, maxConns, &waiting)
			base := runtime.NumGoroutine()
			const n = 2000
			send := func(m *tunnel.Message) {
				if err := h.tun.Send(tunneltest.Destination, m); err != nil {
					t.Fatal(err)
				}
			}
			if tc.v3 {
				send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "WEB", ConnectionID: 1})
			}
			for i := range n {
				m := tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: int32(1 + i), ServiceID: "WEB"}
				if tc.v3 {
					m = tunnel.Message{Type: tunnel.TypeConnectionStart, StreamID: 1, ServiceID: "WEB", ConnectionID: 2}
				}
				send(&m)
				if tc.data {
					m.Type, m.Payload = tunnel.TypeData, []byte("x")
					send(&m)
					m.Payload = nil
				}
				if !tc.supersede {
					m.Type = tunnel.TypeStreamReset
					if tc.v3 {
						m.Type = tunnel.TypeConnectionReset
					}
					send(&m)
				}
			}
			// Handled in order: once the probe is answered, every frame was.
			h.tun.Record(true)
			probe(t, h.tun, 99999)
			// Without data, only the last connection's dial is left: the
			// others ended with theirs (the session's crowding bound alone
			// would let 2 × MaxConnections wait, and refuse new connections
			// until their dial timeout).
			held := int64(bound)
			if !tc.data {
				held = 1
			}
			var g int
			var w int64
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				g, w = runtime.NumGoroutine(), waiting.Load()
				if w <= held && g <= base+2*bound+10 {
					break
				}
			}
			t.Logf("after %d connections: %d dials waiting, goroutines %d → %d", n, w, base, g)
			if w > held || g > base+2*bound+10 {
				t.Errorf("after %d connections started and ended to a slow target: %d dials still waiting, goroutines %d → %d; want at most %d connections held", n, w, base, g, held)
			}
			if n := h.tun.Connects(tunneltest.Destination); n != 1 {
				t.Errorf("the destination connected %d times, want 1", n)
			}
		})
	}
}

// A hostile service sends DATA for unknown streams, each with another long
// service id (the real service refuses such DATA from a source, spec §1.5, so
// only the service itself can): the destination answers each with a
// STREAM_RESET, and what it keeps to answer a burst once must not grow with
// the number of service ids. It kept every id, 60 KiB each, for the life of
// the connection.
func TestUnknownServiceIDsNotKept(t *testing.T) {
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": echoServer(t, 1)}, noSource: true,
		dstTweak: func(d *tunnel.Destination) { d.Logger = slog.New(slog.DiscardHandler) }})
	if err := h.tun.WaitConnects(ctxTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	h.tun.Record(true)
	probe(t, h.tun, 1)
	base := heapInUse()
	const n, size = 300, 60 << 10
	long := make([]byte, size)
	for i := range n {
		for j := range long {
			long[j] = 'a' + byte((i>>(j%8))&15)
		}
		copy(long, fmt.Sprintf("%08d", i))
		if err := h.tun.Send(tunneltest.Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 7, ServiceID: string(long), Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	probe(t, h.tun, 2)
	h.tun.Record(false)
	// The service's record of the destination's frames (STREAM_RESETs
	// naming each id) is the test's, not the destination's.
	recorded := 0
	for _, f := range h.tun.Received(tunneltest.Destination) {
		recorded += len(f.Message.ServiceID)
	}
	grew := heapInUse() - base - int64(recorded)
	t.Logf("after DATA for %d unknown service ids of %d KiB: heap grew by %.1f MiB", n, size>>10, float64(grew)/(1<<20))
	if grew > 4<<20 {
		t.Errorf("heap grew by %.1f MiB after DATA for %d unknown service ids of %d KiB; want what the destination keeps bounded", float64(grew)/(1<<20), n, size>>10)
	}
}

// heapInUse is the heap in use after a collection: what is still held.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// The bound of TestStartResetFloodBounded is per service of the tunnel, and
// the tunnel's services are what the service's SERVICE_IDS says: a list of a
// thousand names (TestDestinationThousandServiceIDs) must not lift it a
// thousandfold. A flood of connections started and ended on the one service
// that has a target, to a target slow to answer, held a dial for each.
func TestStartResetFloodBoundedWithManyServices(t *testing.T) {
	const maxConns = 8
	services := make([]string, 1000)
	for i := range services {
		services[i] = fmt.Sprintf("S%d", i)
	}
	services[0] = "WEB"
	var waiting atomic.Int64
	h := slowTargetHarness(t, services, maxConns, &waiting)
	send := func(m *tunnel.Message) {
		if err := h.tun.Send(tunneltest.Destination, m); err != nil {
			t.Fatal(err)
		}
	}
	send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "WEB", ConnectionID: 1})
	const n = 2000
	for range n {
		m := tunnel.Message{Type: tunnel.TypeConnectionStart, StreamID: 1, ServiceID: "WEB", ConnectionID: 2}
		send(&m)
		m.Type, m.Payload = tunnel.TypeData, []byte("x")
		send(&m)
		m.Type, m.Payload = tunnel.TypeConnectionReset, nil
		send(&m)
	}
	h.tun.Record(true)
	probe(t, h.tun, 99999)
	// A tunnel has up to 3 services (spec §3.4): a list of more counts as 8
	// (maxCountedServices). Each dial is counted once its goroutine runs,
	// a moment after the frame: looked at for a while.
	const bound = maxConns * (8 + 1)
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if w := waiting.Load(); w > bound {
			t.Fatalf("after %d connections started and ended to a slow target on a tunnel that lists %d services: %d dials still waiting; want at most %d", n, len(services), w, bound)
		}
	}
}

// slowTargetHarness starts a destination of services, with no source, whose
// targets never answer a dial (slowTargets counts them in waiting) and whose
// session holds at most maxConns local connections per service; it returns
// once the destination is connected.
func slowTargetHarness(t *testing.T, services []string, maxConns int, waiting *atomic.Int64) *harness {
	h := newHarness(t, setup{services: services, noSource: true,
		dstTweak: func(d *tunnel.Destination) {
			d.Dialer = slowTargets(waiting)
			// Longer than the tests' waits: a dial that ends only at its
			// timeout is one left waiting.
			d.DialTimeout = time.Minute
			d.MaxConnections = maxConns
			d.Logger = slog.New(slog.DiscardHandler)
		}})
	if err := h.tun.WaitConnects(ctxTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	return h
}
