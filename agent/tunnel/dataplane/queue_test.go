package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// gateListener hands out its connections as gatedConns, kept in the order
// accepted.
type gateListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*gatedConn
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	g := &gatedConn{Conn: c}
	g.cond.L = &g.mu
	l.mu.Lock()
	l.conns = append(l.conns, g)
	l.mu.Unlock()
	return g, nil
}

func (l *gateListener) conn(i int) *gatedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[i]
}

// gatedConn is the server's end of a client that reads only what the test lets
// it read: once held (hold), each write waits until the test lets it through
// (let) or opens the gate (open). What the service has written is then
// exactly what the test allowed, with no socket buffer of unknown size in
// between. The data plane writes each relayed frame with one write
// (TestFrameWriterOneWritePerFrame).
type gatedConn struct {
	net.Conn

	mu      sync.Mutex
	cond    sync.Cond // signalled when allowed grows, the gate opens or the connection closes
	held    bool
	begun   int // writes begun since held
	allowed int // how many of those may go through
	passed  int // bytes of those let through
	closed  bool
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.held {
		i := c.begun
		c.begun++
		for c.held && i >= c.allowed && !c.closed {
			c.cond.Wait()
		}
		if !c.closed {
			c.passed += len(p)
		}
	}
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

func (c *gatedConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}

// hold makes every later write wait for let.
func (c *gatedConn) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = true
}

// open lets every write through again.
func (c *gatedConn) open() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	c.cond.Broadcast()
}

// let lets one more write through.
func (c *gatedConn) let() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.allowed++
	c.cond.Broadcast()
}

// bytes is how many bytes the gate has let through.
func (c *gatedConn) bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.passed
}

// waitHeld waits until the writer waits at the gate: the writes let through
// are done, and it has begun the next.
func (c *gatedConn) waitHeld(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		held := c.begun > c.allowed
		c.mu.Unlock()
		if held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("after 10 s the writer has not come back to the gate")
		}
	}
}

// gatedServer is newTestServer over a gateListener.
func gatedServer(t *testing.T) (*testServer, *gateListener) {
	t.Helper()
	s := &testServer{Server: &Server{KeepHandshakes: -1, Logger: testLogger(t)}}
	s.hs = httptest.NewUnstartedServer(s.Server)
	l := &gateListener{Listener: s.hs.Listener}
	s.hs.Listener = l
	s.hs.Config.ConnContext = s.Server.ConnContext
	s.hs.Start()
	s.URL = "ws://" + strings.TrimPrefix(s.hs.URL, "http://")
	t.Cleanup(s.Close)
	return s, l
}

// queuedBytes is how many bytes the queue of side's connection holds, not
// counting what its writer has taken.
func (t *Tunnel) queuedBytes(side Side) int {
	t.s.mu.Lock()
	c := t.sides[side].conn
	t.s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

// fillQueue sends b from src, each message once the one before is queued,
// until a relay to the destination would wait for room, and returns how many
// it sent. The destination's writer must wait at its gate, so that only
// relays change the queue.
func fillQueue(t *testing.T, tun *testTunnel, src *client, b []byte) int {
	t.Helper()
	n := 0
	for !tun.queueFull(Destination) {
		if n > 2*maxQueued/len(b) {
			t.Fatalf("%d frames of %d bytes queued, and the queue is not full", n, len(b))
		}
		before := tun.queuedBytes(Destination)
		src.SendRaw(b)
		n++
		for deadline := time.Now().Add(10 * time.Second); tun.queuedBytes(Destination) <= before; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after 10 s frame %d is not queued", n)
			}
		}
	}
	return n
}

// TestRelayWaitsForAFrameNotABatch: a destination that reads slowly (here,
// what the test lets through) holds up its source for the frame the
// service is writing to it, not for all it has queued. The room in the
// queue came back only when the writer took the next batch, a whole queue:
// the service held up to twice maxQueued for a side, and a source sending
// into a slow reader had its reader blocked, reading no pings, for the time
// 1 MiB took to reach the destination (90 s at 12 KB/s), long enough for
// porthole connect's pong timeout on a live one-way transfer.
func TestRelayWaitsForAFrameNotABatch(t *testing.T) {
	for _, rechunk := range []bool{false, true} {
		t.Run(fmt.Sprintf("rechunk=%v", rechunk), func(t *testing.T) { relayWaitsForAFrame(t, rechunk) })
	}
}

func relayWaitsForAFrame(t *testing.T, rechunk bool) {
	s, gates := gatedServer(t)
	tun := s.OpenTunnel("SSH")
	src, dst := pairOn(t, s, tun) // the destination first: gates.conn(0)
	gate := gates.conn(0)
	if rechunk {
		tun.Rechunk(1)
	}
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	dst.MustNext()
	src.WS.CloseRead(context.Background()) // reads the pong below
	frame, err := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: make([]byte, tunnel.MaxPayload)})
	if err != nil {
		t.Fatal(err)
	}

	// The writer takes a first frame alone and waits to write it; the
	// queue fills behind it.
	gate.hold()
	src.SendRaw(frame)
	gate.waitHeld(t)
	took := 1 + fillQueue(t, tun, src, frame)
	// The destination reads that frame: there is room again, and the
	// writer takes what is queued.
	for tun.queueFull(Destination) {
		gate.let()
		gate.waitHeld(t)
	}
	took += fillQueue(t, tun, src, frame)
	// Approximate: the bytes let through count WebSocket headers too.
	if held := took*len(frame) - gate.bytes(); held > maxQueued+len(frame) {
		t.Errorf("the service holds %d bytes of %d-byte frames for a destination that reads no more, want at most maxQueued (%d) and one frame",
			held, len(frame), maxQueued)
	}

	// The source's next frame waits for room, its ping behind it.
	src.SendRaw(frame)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pong := make(chan error, 1)
	go func() { pong <- src.WS.Ping(ctx) }()
	// The destination reads one frame more (one message, with its
	// header); rechunked, the message that ends it may run past it.
	bound := len(frame) + 14
	if rechunk {
		bound += maxWebSocketMessage + 4<<10
	}
	before, queued := gate.bytes(), tun.queuedBytes(Destination)
	for tun.queueFull(Destination) && tun.queuedBytes(Destination) <= queued {
		if read := gate.bytes() - before; read > bound {
			t.Fatalf("the destination read %d bytes more (%.1f frames) and a relay to it still waits for room", read, float64(read)/float64(len(frame)))
		}
		gate.let()
		gate.waitHeld(t)
	}
	// With nothing more read, the room of that frame lets the source's
	// reader relay its frame and read its ping.
	select {
	case err := <-pong:
		if err != nil {
			t.Fatalf("ping: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pong 10 s after the destination read a frame more: the source's reader still waits")
	}
}
