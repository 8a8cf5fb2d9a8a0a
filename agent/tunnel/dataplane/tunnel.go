package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// Tunnel is one tunnel registered with a Server.
type Tunnel struct {
	id       string
	s        *Server
	services []string
	pong     atomic.Bool
	pongs    atomic.Int64 // sent, on both sides
	limit    limiter

	// Guarded by s.mu.
	closed      bool
	closeReason string // with closed: CloseReason's reason
	sides       [2]sideState
	record      bool
	started     map[string]bool  // services that ever had a STREAM_START (spec §1.5)
	active      map[string]int32 // service → active stream id, from relayed STREAM_START/STREAM_RESET
	changed     chan struct{}    // closed and replaced when a side connects or disconnects
}

// sideState is what the tunnel knows about one side, across its connections.
type sideState struct {
	token       string
	conn        *conn // nil when not connected
	used        bool  // the access token had a successful handshake
	clientToken string
	connects    int
	lastUpdated time.Time // of the connection state
	received    []Frame
	dropAt      int // DropAfter: cut at this frame count; 0 = off
	dropSeen    int
	chunks      *rand.Rand // Rechunk's message sizes; nil = one frame per message
	dropLogged  bool       // frames from this side are being dropped for want of a peer
}

// SideState is a snapshot of one side of a tunnel.
type SideState struct {
	Token       string    // the current access token
	Used        bool      // the token had a successful handshake
	ClientToken string    // the client token that consumed it, if any
	Connected   bool      // the side has a WebSocket
	Connects    int       // successful handshakes so far (this process)
	LastUpdated time.Time // when Connected last changed (or the tunnel was opened)
}

// Frame is a recorded frame: the message without its payload, and the payload's length.
type Frame struct {
	Message    tunnel.Message
	PayloadLen int
}

// ID returns the tunnel's ID.
func (t *Tunnel) ID() string { return t.id }

// Services returns the tunnel's service IDs, as sent in SERVICE_IDS.
func (t *Tunnel) Services() []string { return slices.Clone(t.services) }

// Side returns a snapshot of side's state.
func (t *Tunnel) Side(side Side) SideState {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.sideLocked(side)
}

func (t *Tunnel) sideLocked(side Side) SideState {
	st := &t.sides[side]
	return SideState{
		Token: st.token, Used: st.used, ClientToken: st.clientToken,
		Connected: st.conn != nil, Connects: st.connects, LastUpdated: st.lastUpdated,
	}
}

// Sides returns a snapshot of both sides, taken at one instant.
func (t *Tunnel) Sides() [2]SideState { return t.s.Sides([]*Tunnel{t})[0] }

// Sides returns a snapshot of both sides of each of ts, all taken at one
// instant. Side by side, tunnel by tunnel, a client token that one side gave
// back (a failed upgrade) and another side then took could be in both
// snapshots; a service that saves them (tunneld) would write a state whose
// load OpenTunnel refuses, the client token being registered already.
func (s *Server) Sides(ts []*Tunnel) [][2]SideState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][2]SideState, len(ts))
	for i, t := range ts {
		out[i] = [2]SideState{t.sideLocked(Source), t.sideLocked(Destination)}
	}
	return out
}

// Closed reports whether Close was called.
func (t *Tunnel) Closed() bool {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.closed
}

// Rotate revokes side's access token and issues a new one, which it returns
// (RotateTunnelAccessToken, spec §4). A WebSocket connected with the old token stays
// up until the side connects with the new one, which replaces it as any reconnect
// does. It returns "" if the tunnel is closed.
func (t *Tunnel) Rotate(side Side) string {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.rotateLocked(side)
}

// Revoke rotates side's token as Rotate does and, in the same step, detaches the
// WebSocket connected with the revoked token, which it then cuts (a TCP close,
// as Drop) without waiting: without ConnContext, a cut closes a TLS connection
// through the library, whose close_notify waits up to 5 s for a peer that has
// stopped reading, and the caller (tunneld's rotation) holds its lock. Done in
// two steps, a client handed the new token at once could connect between them
// and have its new connection cut instead. It returns the new token ("" if the
// tunnel is closed) and whether a connection was cut.
func (t *Tunnel) Revoke(side Side) (token string, cut bool) {
	return t.revoke(side, "")
}

// RevokeClose is Revoke, but the WebSocket connected with the revoked token is
// closed with a Close frame, status 1008 (policy violation: its credential is no
// longer valid) and reason (at most 123 bytes are sent), instead of being cut:
// a client takes a Close frame as the end of its token, a cut as a reason to
// reconnect with it (spec §3.8). What AWS does with a connection whose token is
// rotated is undocumented (spec §4). Unlike Close, the frames queued for the
// side are dropped and nothing more is written to it, since its token's holder
// is who the rotation shuts out; and the close gets revokeGrace, not the 15 s of
// a graceful one, before the connection is cut: a client that has stopped
// reading holds nothing for long. It does not wait, and reports whether a
// connection was closed.
func (t *Tunnel) RevokeClose(side Side, reason string) (token string, closed bool) {
	return t.revoke(side, reason)
}

// revoke is Revoke with reason "", else RevokeClose.
//
// With a reason, the Close is under way before the conn is detached: its
// reader, given a frame by a detached conn, stops, and a conn that stops
// reading with no Close under way is cut. Detached first, a frame the client
// sent as the rotation came had it cut, and the client, with no Close frame,
// reconnected with the revoked token. Nothing more is written to it, and
// nothing more it sent is relayed, a frame waiting for room in the peer's
// queue included: the caller tells the peer next (tunneld's SESSION_RESET),
// and a frame of the revoked client must not reach the peer after that.
// Revoke's cut would end the wait too, but later, in its own goroutine.
func (t *Tunnel) revoke(side Side, reason string) (token string, up bool) {
	t.s.mu.Lock()
	token = t.rotateLocked(side)
	var c *conn
	if token != "" {
		c = t.sides[side].conn
		if reason == "" {
			t.detachLocked(c)
		}
	}
	t.s.mu.Unlock()
	if c != nil {
		c.stopRelaying()
	}
	switch {
	case c == nil:
	case reason == "":
		t.s.log().Info("dropped: its access token was revoked", "tunnel", t.id, "side", side, "channel", c.channelID)
		go c.cut()
	default:
		t.s.log().Info("closing: its access token was revoked", "tunnel", t.id, "side", side, "channel", c.channelID, "reason", reason)
		c.closeWithin(StatusRevoked, reason, min(revokeGrace, c.s.closeGraceOrDefault()), true)
		if revokeStep != nil {
			revokeStep()
		}
		t.detach(c)
	}
	return token, c != nil
}

// revokeStep, when a test sets it, runs between revoke's Close and its detach.
var revokeStep func()

// StatusRevoked is the status of RevokeClose's Close frame.
const StatusRevoked = websocket.StatusPolicyViolation

// revokeGrace bounds RevokeClose's close handshake: the Close frame is small
// and nothing is written before it but the rest of a message in flight.
const revokeGrace = 2 * time.Second

func (t *Tunnel) rotateLocked(side Side) string {
	s := t.s
	if t.closed {
		return ""
	}
	st := &t.sides[side]
	delete(s.tokens, st.token)
	if st.clientToken != "" && s.clientTokens[st.clientToken] == st.token {
		delete(s.clientTokens, st.clientToken)
	}
	st.token = NewToken()
	st.used, st.clientToken = false, ""
	s.tokens[st.token] = tokenRef{t, side}
	return st.token
}

// SetBandwidth limits the bytes the tunnel carries per second, frames from both sides
// and ping and pong frames together (spec §7); 0 or less removes the limit. Frames
// wait in the reader, which slows the sender down as TCP back-pressure would.
func (t *Tunnel) SetBandwidth(bytesPerSecond int) {
	t.limit.set(bytesPerSecond)
}

// Rechunk makes every later write to either side re-cut the byte stream of frames
// into WebSocket messages of random sizes (1 to 131076 bytes, skewed small), so that
// messages hold several frames and frames straddle messages (spec §1.2). The
// sequence of sizes is deterministic from seed; which bytes fall where also depends
// on timing. Writers wait about a millisecond to gather frames.
func (t *Tunnel) Rechunk(seed int64) {
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
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.sides[side].dropAt, t.sides[side].dropSeen = max(n, 0), 0
}

// Drop cuts side's TCP connection now, without a Close frame.
func (t *Tunnel) Drop(side Side) {
	t.s.mu.Lock()
	c := t.sides[side].conn
	t.detachLocked(c)
	t.s.mu.Unlock()
	if c != nil {
		t.s.log().Info("dropped", "tunnel", t.id, "side", side, "channel", c.channelID)
		c.cut()
	}
}

// SessionReset sends SESSION_RESET to side (spec §3.3), after what is already queued
// for it. If side is not connected, it logs that and does nothing.
// It does not wait for room in a full queue (enqueueControl).
func (t *Tunnel) SessionReset(side Side) {
	b, err := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeSessionReset})
	if err == nil {
		t.s.mu.Lock()
		c := t.sides[side].conn
		t.s.mu.Unlock()
		if c == nil || !c.enqueueControl(b) {
			err = fmt.Errorf("sending to %v: %w", side, ErrNotConnected)
		}
	}
	if err != nil {
		t.s.log().Info("SESSION_RESET not sent", "tunnel", t.id, "error", err)
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

// SendText writes b to side as one WebSocket text message, which the service
// never sends (spec §1.2): tests use it for a client's answer to one. It is
// written at once, not after the frames queued for side, so a test that needs
// the order waits until side has read those first; with Rechunk it may fall
// between the pieces of a frame. It returns ErrNotConnected if side has no
// WebSocket yet, or the write's error.
func (t *Tunnel) SendText(side Side, b []byte) error {
	t.s.mu.Lock()
	c := t.sides[side].conn
	t.s.mu.Unlock()
	var ws *websocket.Conn
	if c != nil {
		c.mu.Lock()
		ws = c.ws
		c.mu.Unlock()
	}
	if ws == nil {
		return fmt.Errorf("sending text to %v: %w", side, ErrNotConnected)
	}
	c.frameMu.Lock() // no pong inside the frame (answerPing)
	defer c.frameMu.Unlock()
	return ws.Write(c.ctx, websocket.MessageText, b)
}

// Close closes the tunnel, as CloseTunnel does: both sides get a Close frame with
// status 1000 after what is already queued for them, the tokens become invalid and
// later handshakes get 400. It does not wait for the close handshakes.
func (t *Tunnel) Close() { t.CloseReason("tunnel closed") }

// CloseReason is Close with the Close frame's reason text (at most 123 bytes are
// sent), e.g. "tunnel expired".
func (t *Tunnel) CloseReason(reason string) {
	s := t.s
	s.mu.Lock()
	if t.closed {
		s.mu.Unlock()
		return
	}
	t.closed, t.closeReason = true, reason
	var conns []*conn
	for i := range t.sides {
		st := &t.sides[i]
		if st.conn != nil {
			conns = append(conns, st.conn)
			st.conn = nil
			st.lastUpdated = s.clock()
		}
		if st.clientToken != "" && s.clientTokens[st.clientToken] == st.token {
			delete(s.clientTokens, st.clientToken)
		}
	}
	t.notifyLocked()
	s.mu.Unlock()
	s.log().Info("closed", "tunnel", t.id, "reason", reason)
	for _, c := range conns {
		c.closeWith(websocket.StatusNormalClosure, reason)
	}
	s.changed(t)
}

// closing returns the reason the tunnel was closed with, if it was.
func (t *Tunnel) closing() (string, bool) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.closeReason, t.closed
}

// Connects returns the number of successful handshakes of side so far.
func (t *Tunnel) Connects(side Side) int {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.sides[side].connects
}

// Connected reports whether side has a WebSocket.
func (t *Tunnel) Connected(side Side) bool {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.sides[side].conn != nil
}

// WaitConnects waits until side has had at least n successful handshakes and is
// connected. It fails when ctx ends or the tunnel is closed.
func (t *Tunnel) WaitConnects(ctx context.Context, side Side, n int) error {
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
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.record = on
}

// Received returns the frames recorded from side, in order, including the one that
// broke a rule or triggered DropAfter.
func (t *Tunnel) Received(side Side) []Frame {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return slices.Clone(t.sides[side].received)
}

// SetPong turns the answering of WebSocket pings on (the default) or off; off, pings
// are swallowed (spec §3.7 notes the service does not always answer).
func (t *Tunnel) SetPong(on bool) {
	t.pong.Store(on)
}

// Pongs returns how many pongs the tunnel's connections have been sent.
func (t *Tunnel) Pongs() int64 { return t.pongs.Load() }

func (t *Tunnel) notifyLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// changed calls OnChange; no locks may be held.
func (s *Server) changed(t *Tunnel) {
	if s.OnChange != nil {
		s.OnChange(t)
	}
}

// attach makes c the side's connection, cutting the one it replaces, and sends the
// other side a STREAM_RESET for each active stream: after a reconnect (spec §3.8),
// and also on a first connect, since streams started before it were relayed to
// nobody (frames to an absent side are dropped) and the source would otherwise keep
// using a stream the destination never saw. It reports false if the server
// closed meanwhile, or if the token c was admitted with was rotated since (a
// Revoke between admit and attach would otherwise let it in): c is to be cut.
//
// If the tunnel closed meanwhile, c is not attached but closed as CloseReason
// closes the connections it finds, and attach reports true: c is to be run,
// for its writer to send the Close frame. Cut, the client would take it for a
// network failure and reconnect, and learn only from the refusal of that
// reconnect that the tunnel is closed.
func (t *Tunnel) attach(c *conn) bool {
	s := t.s
	s.mu.Lock()
	if s.closed || t.sides[c.side].token != c.token {
		s.mu.Unlock()
		return false
	}
	s.conns[c] = struct{}{}
	if t.closed {
		reason := t.closeReason
		s.mu.Unlock()
		s.log().Info("closing: the tunnel closed during the handshake", "tunnel", t.id, "side", c.side, "channel", c.channelID)
		c.closeWith(websocket.StatusNormalClosure, reason)
		return true
	}
	st := &t.sides[c.side]
	old := st.conn
	st.conn = c
	st.connects++
	// The time admit gave a first use, which may be saved; a change since
	// (the connection this one replaces dropped) keeps its later time, but
	// not a time still ahead of the clock (restored after the clock was set
	// back), which is no change since.
	if c.admitted.After(st.lastUpdated) || st.lastUpdated.After(s.clock()) {
		st.lastUpdated = c.admitted
	}
	var resets []*tunnel.Message
	if len(t.active) > 0 {
		for svc, id := range t.active {
			resets = append(resets, &tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: id, ServiceID: svc})
		}
		slices.SortFunc(resets, func(a, b *tunnel.Message) int { return strings.Compare(a.ServiceID, b.ServiceID) })
		clear(t.active)
	}
	peer := t.sides[c.side.other()].conn
	connects := st.connects
	t.notifyLocked()
	s.mu.Unlock()

	log := s.log()
	log.Info("connected", "tunnel", t.id, "side", c.side, "channel", c.channelID, "protocol", c.proto, "connect", connects, "remote", c.remote())
	if old != nil {
		log.Info("replaced", "tunnel", t.id, "side", c.side, "channel", old.channelID, "by", c.channelID)
		// Cut, not closed with a Close frame, though the revoke path
		// sends one: what AWS sends a replaced connection is not
		// documented (spec §3.8), and the safe choice is the cut. The
		// later handshake is not always the connection the client
		// uses: one it gave up on (a path that lost the 101, a proxy
		// that delivered the request late) can reach the service after
		// its next reconnect and replace its live connection. Clients
		// take a Close frame as the end of the token (the agent ends
		// the session, publishes tunnel-ended and forgets the saved
		// tunnel; localproxy exits, spec §3.8), a cut as a reason to
		// reconnect: a wrong cut costs a reconnect, a wrong Close the
		// tunnel (TestReplacedByALateHandshakeKeepsTheSession in
		// tools/e2e). A client's own reconnect never reads the Close
		// frame anyway: it has closed the old connection first.
		old.cut()
	}
	for _, m := range resets {
		if peer == nil {
			break
		}
		b, err := tunnel.AppendFrame(nil, m)
		if err == nil && peer.enqueueControl(b) {
			log.Info("sent reset for streams the connecting side never saw", "tunnel", t.id, "side", peer.side, "message", m, "reconnected", c.side)
		}
	}
	s.changed(t)
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
		t.sides[c.side].lastUpdated = t.s.clock()
		t.notifyLocked()
	}
}

// receive handles one raw frame (length prefix included) read from c: record it,
// apply DropAfter and the rules of spec §1.5, then relay the same bytes to the other
// side. It owns raw, a buffer from frames.Make: the other side's writer gets it, or it
// goes back to the pool. It reports whether c should keep reading.
func (t *Tunnel) receive(c *conn, raw []byte, d *decoder) bool {
	relayed := false
	defer func() {
		if !relayed {
			frames.Release(raw)
		}
	}()
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
			s.log().Info("dropped (DropAfter)", "tunnel", t.id, "side", c.side, "channel", c.channelID, "at", m)
			c.cut()
			return false
		}
	}
	if reason == "" && !ignorable {
		reason = t.checkLocked(c, m)
	}
	if reason == staleFrame {
		s.mu.Unlock()
		return true // dropped
	}
	if reason != "" {
		t.detachLocked(c)
		s.mu.Unlock()
		s.log().Info("closing on a bad frame", "tunnel", t.id, "side", c.side, "channel", c.channelID, "message", m, "reason", reason)
		c.closeWith(websocket.StatusPolicyViolation, reason)
		return false
	}
	peer := t.sides[c.side.other()].conn
	logDrop := peer == nil && !st.dropLogged
	st.dropLogged = peer == nil
	s.mu.Unlock()
	if peer == nil {
		// Dropped: what AWS does with a frame for an absent side is not
		// known (spec §8). Kept, it would reach a side that connects later
		// and knows none of the streams it belongs to; the streams it
		// started are reset when the side connects (attach).
		if logDrop {
			// Once per absence, not per frame.
			s.log().Info("dropping frames: peer not connected", "tunnel", t.id, "side", c.side, "first", m)
		}
		return true
	}
	relayed = peer.relay(raw, c)
	return true
}

// staleFrame is checkLocked's verdict on a frame the service drops.
const staleFrame = "\x00stale"

// checkLocked applies the tunnel-level rules of spec §1.5 to a decoded message from
// side and, if it passes, updates the stream state. It returns why m breaks a rule.
func (t *Tunnel) checkLocked(c *conn, m *tunnel.Message) string {
	side := c.side
	switch m.Type {
	case tunnel.TypeStreamStart, tunnel.TypeConnectionStart:
		if side == Destination {
			return fmt.Sprintf("destination may not send %v (spec §1.5)", m.Type)
		}
	case tunnel.TypeSessionReset, tunnel.TypeServiceIDs:
		return fmt.Sprintf("clients may not send %v (spec §1.5)", m.Type)
	}
	if _, v1 := t.active[""]; v1 && m.ServiceID != "" {
		if side == Destination {
			// Sent before the destination read the service's STREAM_RESET
			// of a source that one switching to V1 format replaced; the
			// stream id cannot tell (localproxy's start at 1 in each
			// process). A Close would end the tunnel for a destination
			// that did nothing wrong, and relayed, a V1 source that takes
			// an unknown service id for its first (localproxy) would take
			// it for its stream's data.
			return staleFrame
		}
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
	if side == Source && (m.Type >= tunnel.TypeData && m.Type <= tunnel.TypeStreamReset || m.Type >= tunnel.TypeConnectionStart && m.Type <= tunnel.TypeConnectionReset) {
		// A source keeps one format, with or without service IDs, for the
		// lifetime of its WebSocket (V2 guide, backward compatibility).
		with := int8(1)
		if m.ServiceID == "" {
			with = 2
		}
		switch {
		case c.format == 0 && m.Type == tunnel.TypeStreamStart:
			c.format = with
		case c.format != 0 && c.format != with:
			how := "with"
			if c.format == 2 {
				how = "without"
			}
			return fmt.Sprintf("service id %q on a WebSocket whose streams started %s one (spec §1.5, §2.3)", m.ServiceID, how)
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
