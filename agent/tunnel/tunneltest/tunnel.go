package tunneltest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// ErrNotConnected is returned by Send when the side has no WebSocket.
var ErrNotConnected = errors.New("tunneltest: side not connected")

// ErrTunnelClosed is returned by WaitConnects once the tunnel is closed.
var ErrTunnelClosed = errors.New("tunneltest: tunnel closed")

// Tunnel is one open tunnel of a Server.
type Tunnel struct {
	SourceToken      string // access token for local-proxy-mode=source
	DestinationToken string // access token for local-proxy-mode=destination
	ID               string // "tunnel-N", used in log lines

	s        *Server
	services []string
	pong     atomic.Bool

	// Guarded by s.mu.
	closed  bool
	sides   [2]sideState
	record  bool
	started map[string]bool  // services that ever had a STREAM_START (spec §1.5)
	active  map[string]int32 // service → active stream id, from relayed STREAM_START/STREAM_RESET
	changed chan struct{}    // closed and replaced when a side connects or disconnects
}

// sideState is what the tunnel knows about one side, across its connections.
type sideState struct {
	conn        *conn // nil when not connected
	used        bool  // the access token had a successful handshake
	clientToken string
	connects    int
	received    []Frame
	dropAt      int // DropAfter: cut at this frame count; 0 = off
	dropSeen    int
	chunks      *rand.Rand // Rechunk's message sizes; nil = one frame per message
	dropLogged  bool       // frames from this side are being dropped for want of a peer
}

// Frame is a recorded frame: the message without its payload, and the payload's length.
type Frame struct {
	Message    tunnel.Message
	PayloadLen int
}

// Services returns the tunnel's service IDs, as sent in SERVICE_IDS.
func (t *Tunnel) Services() []string { return slices.Clone(t.services) }

// Rechunk makes every later write to either side re-cut the byte stream of frames
// into WebSocket messages of random sizes (1 to 131076 bytes, skewed small), so that
// messages hold several frames and frames straddle messages (spec §1.2). The
// sequence of sizes is deterministic from seed; which bytes fall where also depends
// on timing. Writers wait about a millisecond to gather frames.
func (t *Tunnel) Rechunk(seed int64) {
	t.s.refreshLogf()
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	for i := range t.sides {
		t.sides[i].chunks = rand.New(rand.NewPCG(uint64(seed), uint64(i)+1))
	}
}

func (t *Tunnel) rechunking(side Side) bool {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.sides[side].chunks != nil
}

// chunkSize draws the next message size for side: a quarter each up to 16 bytes,
// 512 bytes, 8 KiB and the 131076-byte maximum.
func (t *Tunnel) chunkSize(side Side) int {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	r := t.sides[side].chunks
	if r == nil {
		return maxWebSocketMessage
	}
	limit := [...]int{16, 512, 8192, maxWebSocketMessage}[r.IntN(4)]
	return 1 + r.IntN(limit)
}

// DropAfter makes the n-th frame received from side, counting from this call and
// across reconnects, not be relayed; instead side's TCP connection is cut without a
// Close frame. n <= 0 cancels.
func (t *Tunnel) DropAfter(side Side, n int) {
	t.s.refreshLogf()
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.sides[side].dropAt, t.sides[side].dropSeen = max(n, 0), 0
}

// Drop cuts side's TCP connection now, without a Close frame.
func (t *Tunnel) Drop(side Side) {
	t.s.refreshLogf()
	t.s.mu.Lock()
	c := t.sides[side].conn
	t.detachLocked(c)
	t.s.mu.Unlock()
	if c != nil {
		t.s.logf("%s %v %s: dropped", t.ID, side, c.channelID)
		c.cut()
	}
}

// SessionReset sends SESSION_RESET to side (spec §3.3), after what is already queued
// for it. If side is not connected, it logs that and does nothing.
func (t *Tunnel) SessionReset(side Side) {
	if err := t.Send(side, &tunnel.Message{Type: tunnel.TypeSessionReset}); err != nil {
		t.s.logf("%s: SESSION_RESET not sent: %v", t.ID, err)
	}
}

// Send queues m for side, after every frame queued before. The service's stream
// table counts it as if the other side had sent it, unchecked: a STREAM_START sent to
// the destination lets the destination's DATA for that service through, and is reset
// if the destination reconnects. It returns ErrNotConnected if side has no WebSocket,
// or the encoder's error.
func (t *Tunnel) Send(side Side, m *tunnel.Message) error {
	b, err := tunnel.AppendFrame(nil, m)
	if err != nil {
		return err
	}
	return t.SendRaw(side, b)
}

// SendRaw queues b, which should be whole frames, for side as is: tests use it for
// frames AppendFrame refuses to encode. Without Rechunk, b is written as one message.
// Frames in b that decode are counted as Send counts them.
func (t *Tunnel) SendRaw(side Side, b []byte) error {
	t.s.refreshLogf()
	b = slices.Clone(b)
	d := newDecoder()
	t.s.mu.Lock()
	c := t.sides[side].conn
	if c != nil {
		for rest := b; len(rest) >= 2; {
			n := 2 + (int(rest[0])<<8 | int(rest[1]))
			if n > len(rest) {
				break
			}
			d.br.Reset(rest[:n])
			if d.fr.Next(&d.m) == nil {
				t.trackLocked(&d.m)
			}
			rest = rest[n:]
		}
	}
	t.s.mu.Unlock()
	if c == nil || !c.enqueue(b) {
		return fmt.Errorf("sending to %v: %w", side, ErrNotConnected)
	}
	return nil
}

// Close closes the tunnel, as CloseTunnel does: both sides get a Close frame with
// status 1000 after what is already queued for them, the tokens become invalid and
// later handshakes get 400. It does not wait for the close handshakes.
func (t *Tunnel) Close() {
	t.s.refreshLogf()
	t.s.mu.Lock()
	if t.closed {
		t.s.mu.Unlock()
		return
	}
	t.closed = true
	var conns []*conn
	for i := range t.sides {
		st := &t.sides[i]
		if st.conn != nil {
			conns = append(conns, st.conn)
			st.conn = nil
		}
		if st.clientToken != "" {
			delete(t.s.clientTokens, st.clientToken)
		}
	}
	t.notifyLocked()
	t.s.mu.Unlock()
	t.s.logf("%s: closed", t.ID)
	for _, c := range conns {
		c.closeWith(websocket.StatusNormalClosure, "tunnel closed")
	}
}

// Connects returns the number of successful handshakes of side so far.
func (t *Tunnel) Connects(side Side) int {
	t.s.refreshLogf()
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.sides[side].connects
}

// Connected reports whether side has a WebSocket.
func (t *Tunnel) Connected(side Side) bool {
	t.s.refreshLogf()
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.sides[side].conn != nil
}

// WaitConnects waits until side has had at least n successful handshakes and is
// connected. It fails when ctx ends or the tunnel is closed.
func (t *Tunnel) WaitConnects(ctx context.Context, side Side, n int) error {
	t.s.refreshLogf()
	for {
		t.s.mu.Lock()
		st := &t.sides[side]
		have, ok, closed, ch := st.connects, st.connects >= n && st.conn != nil, t.closed, t.changed
		t.s.mu.Unlock()
		switch {
		case ok:
			return nil
		case closed:
			return fmt.Errorf("waiting for %d %v connects (have %d): %w", n, side, have, ErrTunnelClosed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d %v connects (have %d): %w", n, side, have, ctx.Err())
		}
	}
}

// Record turns recording of the frames received from both sides on or off.
// Recorded frames are kept until the tunnel is garbage.
func (t *Tunnel) Record(on bool) {
	t.s.refreshLogf()
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.record = on
}

// Received returns the frames recorded from side, in order, including the one that
// broke a rule or triggered DropAfter.
func (t *Tunnel) Received(side Side) []Frame {
	t.s.refreshLogf()
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return slices.Clone(t.sides[side].received)
}

// SetPong turns the answering of WebSocket pings on (the default) or off; off, pings
// are swallowed (spec §3.7 notes the service does not always answer).
func (t *Tunnel) SetPong(on bool) {
	t.s.refreshLogf()
	t.pong.Store(on)
}

func (t *Tunnel) notifyLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// attach makes c the side's connection, cutting the one it replaces, and sends the
// other side a STREAM_RESET for each active stream if this side had been connected
// before (spec §3.8). It reports false if the tunnel or server closed meanwhile.
func (t *Tunnel) attach(c *conn) bool {
	s := t.s
	s.mu.Lock()
	if s.closed || t.closed {
		s.mu.Unlock()
		return false
	}
	s.conns[c] = struct{}{}
	st := &t.sides[c.side]
	old := st.conn
	replaced := st.connects > 0
	st.conn = c
	st.connects++
	var resets []*tunnel.Message
	if replaced {
		for svc, id := range t.active {
			resets = append(resets, &tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: id, ServiceID: svc})
		}
		slices.SortFunc(resets, func(a, b *tunnel.Message) int { return strings.Compare(a.ServiceID, b.ServiceID) })
		clear(t.active)
	}
	peer := t.sides[c.side.other()].conn
	t.notifyLocked()
	s.mu.Unlock()

	s.logf("%s %v %s: connected (%s, connect #%d)", t.ID, c.side, c.channelID, c.proto, st.connects)
	if old != nil {
		s.logf("%s %v %s: replaced by %s", t.ID, c.side, old.channelID, c.channelID)
		old.cut()
	}
	for _, m := range resets {
		if peer == nil {
			break
		}
		b, err := tunnel.AppendFrame(nil, m)
		if err == nil && peer.enqueue(b) {
			s.logf("%s %v: sent %v after %v reconnected", t.ID, peer.side, m, c.side)
		}
	}
	return true
}

// detach forgets c as its side's connection, if it still is.
func (t *Tunnel) detach(c *conn) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.detachLocked(c)
}

func (t *Tunnel) detachLocked(c *conn) {
	if c != nil && t.sides[c.side].conn == c {
		t.sides[c.side].conn = nil
		t.notifyLocked()
	}
}

// receive handles one raw frame (length prefix included) read from c: record it,
// apply DropAfter and the rules of spec §1.5, then relay the same bytes to the other
// side. It reports whether c should keep reading.
func (t *Tunnel) receive(c *conn, raw []byte, d *decoder) bool {
	m := &d.m
	reason, ignorable := "", false
	typ, ign, err := scanFields(raw[2:])
	if err != nil {
		reason = err.Error()
		*m = tunnel.Message{Type: typ, Ignorable: ign}
	} else {
		d.br.Reset(raw)
		switch err := d.fr.Next(m); {
		case err == nil:
		case errors.Is(err, io.EOF):
			// An unknown type marked ignorable: the service relays it.
			ignorable = true
			*m = tunnel.Message{Type: typ, Ignorable: ign}
		default:
			reason = strings.TrimPrefix(err.Error(), tunnel.ErrProtocol.Error()+": ")
		}
	}

	s := t.s
	s.mu.Lock()
	st := &t.sides[c.side]
	if st.conn != c {
		s.mu.Unlock()
		return false
	}
	if t.record {
		f := Frame{Message: *m, PayloadLen: len(m.Payload)}
		f.Message.Payload = nil
		st.received = append(st.received, f)
	}
	if st.dropAt > 0 {
		st.dropSeen++
		if st.dropSeen == st.dropAt {
			st.dropAt, st.dropSeen = 0, 0
			t.detachLocked(c)
			s.mu.Unlock()
			s.logf("%s %v %s: dropped at %v (DropAfter)", t.ID, c.side, c.channelID, m)
			c.cut()
			return false
		}
	}
	if reason == "" && !ignorable {
		reason = t.checkLocked(c.side, m)
	}
	if reason != "" {
		t.detachLocked(c)
		s.mu.Unlock()
		s.logf("%s %v %s: closing on %v: %s", t.ID, c.side, c.channelID, m, reason)
		c.closeWith(websocket.StatusPolicyViolation, reason)
		return false
	}
	peer := t.sides[c.side.other()].conn
	logDrop := peer == nil && !st.dropLogged
	st.dropLogged = peer == nil
	s.mu.Unlock()
	if peer == nil {
		if logDrop {
			// Once per absence, not per frame.
			s.logf("%s %v: dropping frames (first: %v): %v not connected", t.ID, c.side, m, c.side.other())
		}
		return true
	}
	peer.enqueue(slices.Clone(raw))
	return true
}

// checkLocked applies the tunnel-level rules of spec §1.5 to a decoded message from
// side and, if it passes, updates the stream state. It returns why m breaks a rule.
func (t *Tunnel) checkLocked(side Side, m *tunnel.Message) string {
	switch m.Type {
	case tunnel.TypeStreamStart, tunnel.TypeConnectionStart:
		if side == Destination {
			return fmt.Sprintf("destination may not send %v (spec §1.5)", m.Type)
		}
	case tunnel.TypeSessionReset, tunnel.TypeServiceIDs:
		return fmt.Sprintf("clients may not send %v (spec §1.5)", m.Type)
	}
	if _, v1 := t.active[""]; v1 && m.ServiceID != "" {
		return fmt.Sprintf("service id %q while a stream started without one is active (spec §1.5)", m.ServiceID)
	}
	switch m.Type {
	case tunnel.TypeStreamStart:
		if m.ServiceID != "" && !slices.Contains(t.services, m.ServiceID) {
			return fmt.Sprintf("STREAM_START for service %q, not one of the tunnel's %q (spec §1.5)", m.ServiceID, t.services)
		}
	case tunnel.TypeData:
		if !t.started[m.ServiceID] {
			return fmt.Sprintf("DATA for service %q without a STREAM_START (spec §1.5)", m.ServiceID)
		}
	}
	t.trackLocked(m)
	return ""
}

// trackLocked updates the stream table from a message passing through the service.
func (t *Tunnel) trackLocked(m *tunnel.Message) {
	switch m.Type {
	case tunnel.TypeStreamStart:
		t.started[m.ServiceID] = true
		t.active[m.ServiceID] = m.StreamID
	case tunnel.TypeStreamReset:
		if id, ok := t.active[m.ServiceID]; ok && id == m.StreamID {
			delete(t.active, m.ServiceID)
		}
	}
}
