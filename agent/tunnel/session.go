package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/internal/bufpool"
)

// engineOptions are the limits shared by both engines.
type engineOptions struct {
	_        [0]func()     // not comparable: no equality function in the binary (docs/size.md)
	chunk    int           // largest DATA payload sent
	maxConns int           // per service
	stall    time.Duration // how long one connection may block the WebSocket reader
	// answerWait (source) is how long a started connection waits for the peer's
	// first data before the session says the device may not be there; 0: never.
	answerWait time.Duration
	// stdio (source): the session carries RunStdio's one connection, whose
	// refusal RunStdio returns; said in the log too, an operator read it twice.
	stdio bool
	log   *slog.Logger
}

// linkQueue is how many DATA payloads may wait for one local connection before the
// WebSocket reader blocks: the bound that turns a slow target into back-pressure.
// The protocol has no flow control of its own, so while it blocks, every stream
// of the session waits: for a target that stopped reading, up to the stall
// timeout; for one still being dialled (a LAN host that is off), while more
// than linkQueue payloads came for it, up to the dial timeout. Queueing more
// during a dial would hold more memory per connection (docs/benchmarks.md).
const linkQueue = 4

// sessionBuffered bounds the DATA one session holds for its local connections,
// queued or being written: the capacity of its payload buffers. linkQueue alone bounds one
// connection, not a peer that opens many whose targets do not read (SSH
// connections waiting for a login slot): 128 of them held 46 MiB. Past it the
// WebSocket reader waits, as for a full queue. The connections that hold
// payloads and have written none for the stall timeout are then reset, at
// once or when they have been stuck that long: they hold the budget, not the
// connection the reader waits to queue for. With none stuck, the one it waits
// on for the stall timeout is reset. One bulk transfer needs linkQueue+1
// payloads.
const sessionBuffered = 1 << 20

// session is the state of one WebSocket connection: its streams and the local
// connections they carry. When the WebSocket ends, every local connection of the
// session is closed (spec §3.8): with a TCP reset, unless all it was sent is
// with the kernel (link.cut).
//
// Lock order: s.opening, then s.mu, then the Source's mu (open takes stream and
// connection ids under s.mu); s.opening, then the WebSocket's wmu (open
// writes the start frame under s.opening, which keeps start frames in order:
// the only network write under a lock). A link's mu is never held with s.mu:
// end runs close before it takes s.mu. resetsMu, peerLog's mu and the
// WebSocket's wmu take no other lock.
type session struct {
	conn   *Conn
	parent context.Context // the caller's: ended for a deliberate stop
	ctx    context.Context // ends with the session
	cancel context.CancelFunc
	opt    engineOptions
	wg     sync.WaitGroup

	source bool // the source end: it owns stream ids

	mu      sync.Mutex
	version Version // wire format of the peer; 0 until known (destination: adoptFormatLocked)
	// unknownReset is, per service, the last unknown stream id a destination
	// answered with STREAM_RESET, so that a burst of DATA gets one answer.
	unknownReset map[string]int32
	services     []string // from SERVICE_IDS
	gotIDs       bool
	streams      map[string]*stream // by wire service id ("" in V1)
	closed       bool
	hinted       bool // the source has said once that the device does not answer
	// peerV2: the peer's DATA had no connection id, so it speaks V1/V2 format
	// (spec §2.3). A source's destination would answer a CONNECTION_START
	// with STREAM_RESET (spec §3.3); a session's, since one destination
	// answers all its streams. A destination's source ends a connection with
	// STREAM_RESET (streamReset); until its format changes (adoptFormatLocked).
	// v2Warned (source): open has said so.
	peerV2, v2Warned bool
	// live holds the links whose pumps have not all returned: open ones, and
	// closing ones that s.streams no longer holds but that may still send a frame
	// or be blocked writing their last data to a target that does not read.
	// teardown ends them all.
	live map[*link]struct{}

	// bigReads counts the pooled frame-sized read buffers its links' pumpUps
	// hold (at most maxBigReads).
	bigReads atomic.Int32

	// linkDone is signalled (buffer 1, never blocking) when a link stops being live.
	linkDone chan struct{}
	// written is signalled (buffer 1) when a link has written a payload to its
	// local connection: room in sessionBuffered, for push.
	written chan struct{}
	born    time.Time // when the session began (now)

	plog peerLog // the lines the peer's frames cause

	// opening (source) orders the start frames of concurrent opens: a
	// CONNECTION_START must not reach the wire before its stream's STREAM_START.
	opening sync.Mutex

	// stopAfter and afterDone: teardown waits for the function newSession runs
	// when s.ctx ends (goodbye, abort), so that nothing of a session outlives it.
	stopAfter func() bool
	afterDone chan struct{}

	// resets holds the writes of the resets the session sends, in order, for
	// writeResets; resetsQueued is signalled (buffer 1) when one is added.
	resetsMu     sync.Mutex
	resets       []func()
	resetsQueued chan struct{}
}

// stream is the active stream of one service.
type stream struct {
	id       int32
	target   string // the service the Dialer is asked for (destination)
	links    map[uint32]*link
	answered bool // DATA has come from the peer on this stream; under session.mu
}

func newSession(ctx context.Context, conn *Conn, opt engineOptions) *session {
	s := &session{conn: conn, opt: opt, streams: map[string]*stream{}, live: map[*link]struct{}{}, linkDone: make(chan struct{}, 1), written: make(chan struct{}, 1),
		resetsQueued: make(chan struct{}, 1), born: time.Now()}
	s.parent = ctx
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(1)
	go s.writeResets()
	// Ending the session (or the caller's context) ends the connection's reads.
	// When the caller stops it, the peer first hears that every stream is gone.
	s.afterDone = make(chan struct{})
	s.stopAfter = context.AfterFunc(s.ctx, func() {
		defer close(s.afterDone)
		if ctx.Err() != nil && s.goodbye() {
			// The resets reach the service before the connection closes.
			conn.finish(context.Canceled, goodbyeTimeout)
			return
		}
		conn.abort(context.Canceled)
	})
	return s
}

// goodbyeTimeout bounds the resets written when a session is stopped.
const goodbyeTimeout = time.Second

// goodbye resets every open stream before a deliberate stop (the agent shuts
// down, or a session yields to a newer tunnel). The service does not reset the
// other side's streams when a side leaves, it waits for that side to return
// (spec §3.8), so without this an operator's ssh through a stopped agent hung
// until an agent came back. A session that already failed says nothing. It
// reports whether it sent resets, which the connection then waits to deliver.
func (s *session) goodbye() bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	resets := make([]*Message, 0, len(s.streams))
	for service, st := range s.streams {
		resets = append(resets, &Message{Type: TypeStreamReset, StreamID: st.id, ServiceID: service})
	}
	s.mu.Unlock()
	if len(resets) == 0 {
		return false
	}
	s.conn.ws.writesWithin(goodbyeTimeout) // the conn is dropped next
	for _, m := range resets {
		if err := s.conn.WriteMessage(context.Background(), m); err != nil {
			return false
		}
	}
	s.opt.log.Info("stopping: reset the open streams", "streams", len(resets))
	return true
}

// crowdedLocked reports whether the session holds as many local connections
// as it may, open or still closing: MaxConnections times one more than the
// tunnel's services (room for MaxConnections open on each service, and
// MaxConnections more closing). A connection the peer has reset stays until its last
// data is written, within the stall timeout, and one whose target is slow to
// answer until its dial returns, within the dial timeout; a peer that starts
// and resets connections faster than that made them grow with its rate, a
// goroutine and a socket each. The services counted are at most
// maxCountedServices: their list is the service's to send (SERVICE_IDS), and
// one of a thousand names lifted the bound a thousandfold.
func (s *session) crowdedLocked() bool {
	// Divided, not multiplied: a large MaxConnections cannot overflow.
	return len(s.live)/(min(max(len(s.services), 1), maxCountedServices)+1) >= s.opt.maxConns
}

// maxCountedServices bounds the services crowdedLocked makes room for. A
// tunnel has up to 3 (spec §3.4, a quota AWS may raise).
const maxCountedServices = 8

// openLocked counts the local connections of the session that are open: those its
// streams hold. A reset or a local close takes a connection out before it closes.
func (s *session) openLocked() int {
	n := 0
	for _, st := range s.streams {
		n += len(st.links)
	}
	return n
}

// connKeyLocked is the connection id a message refers to: V3 reads an absent id as 1
// (spec §1.5); V1/V2 have one connection per stream, keyed 0.
func (s *session) connKeyLocked(id uint32) uint32 {
	if s.version == V3 {
		if id == 0 {
			return 1
		}
		return id
	}
	return 0
}

// sendReset has f, which writes resets, run after the resets sent before it,
// by writeResets: the WebSocket reader, which resets connections and streams,
// must never wait for a write. It once did: when both ends of a connection
// wrote without reading, each side's reader, once it had reset its stalled
// connection, waited to write the reset, while the service, its reader of
// each side waiting to relay to the other, read neither, and the whole
// tunnel froze for good. Past maxQueuedResets unsent (the service reads
// nothing of ours), the session ends.
func (s *session) sendReset(f func()) {
	s.resetsMu.Lock()
	if len(s.resets) >= maxQueuedResets {
		s.resetsMu.Unlock()
		s.conn.abort(fmt.Errorf("%d resets not sent: the service reads nothing", maxQueuedResets))
		return
	}
	s.resets = append(s.resets, f)
	s.resetsMu.Unlock()
	wake(s.resetsQueued)
}

// maxQueuedResets bounds sendReset's queue: a session holds fewer links (see
// crowdedLocked), and resets of unknown streams are limited (resetUnknownStream).
const maxQueuedResets = 4096

// writeResets runs the functions sendReset queues, in order, until the
// session ends.
func (s *session) writeResets() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.resetsQueued:
		}
		for {
			s.resetsMu.Lock()
			if len(s.resets) == 0 {
				s.resets = nil
				s.resetsMu.Unlock()
				break
			}
			f := s.resets[0]
			s.resets[0] = nil
			s.resets = s.resets[1:]
			s.resetsMu.Unlock()
			f()
		}
	}
}

// send writes one frame; a failed write ends the session. Once the session's
// context has ended, the connection is newSession's to close: a link still
// sending then (a download running when the agent stops) must not cut it
// before the goodbye's resets are out.
func (s *session) send(m *Message) error {
	err := s.conn.WriteMessage(s.ctx, m)
	if err != nil && s.ctx.Err() == nil {
		s.conn.abort(err)
	}
	return err
}

// serve reads frames and hands them to handle until the connection fails, then closes
// every local connection and waits for the session's goroutines.
func (s *session) serve(handle func(*Message) error) error {
	defer s.teardown()
	var m Message
	for {
		if err := s.conn.ReadMessage(&m); err != nil {
			if errors.As(err, new(*zeroStreamError)) {
				s.opt.log.Debug("dropping a frame with stream id 0 (spec §3.2)", "frame", &m)
				continue
			}
			return err
		}
		if m.Type == TypeData {
			// A line per DATA frame would be a line per keystroke, and
			// dozens per MiB moved: rate-limited as the peer's other lines.
			s.plog.log(s.opt.log, slog.LevelDebug, "data frame in", "frame", &m)
		} else {
			s.opt.log.Debug("frame in", "frame", &m)
		}
		if err := handle(&m); err != nil {
			if errors.Is(err, ErrProtocol) {
				s.conn.closeAfterProtocolError()
			}
			return err
		}
	}
}

func (s *session) teardown() {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	// Every live link, not only those of s.streams: one the peer reset may still
	// be writing its last data to a target that does not read.
	all := make([]*link, 0, len(s.live))
	for l := range s.live {
		all = append(all, l)
	}
	s.streams = map[string]*stream{}
	s.mu.Unlock()
	for _, l := range all {
		if l.cut() {
			l.reset.Store(true) // never cleared: a link reset before stays so
		}
		l.end()
	}
	s.wg.Wait()
	// s.cancel above has started it, unless it ran already.
	if !s.stopAfter() {
		<-s.afterDone
	}
}

// serviceIDs records the first SERVICE_IDS of the session; later ones are ignored
// (spec §3.1). It reports whether this one was the first.
func (s *session) serviceIDs(m *Message) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gotIDs {
		s.opt.log.Debug("ignoring repeated SERVICE_IDS")
		return false
	}
	s.gotIDs = true
	s.services = append([]string(nil), m.AvailableServiceIDs...)
	s.opt.log.Info("tunnel services", "services", loggedServices(s.services))
	return true
}

// What a log line shows of the tunnel's services is bounded: a tunnel has up to 3,
// of up to 128 characters (spec §3.4), but one SERVICE_IDS frame can carry 64 KiB
// of names, and its line is written on every connect.
const (
	maxLoggedServices = 8
	maxLoggedName     = 128
)

// loggedName is a service id as log lines show it: the peer chooses it, up to
// 64 KiB, so it is cut to maxLoggedName bytes. Not inlined (agent/tunnel keeps
// inlining, device.gcflags): its nine callers would each carry a copy.
//
//go:noinline
func loggedName(id string) string {
	if len(id) > maxLoggedName {
		id = strings.ToValidUTF8(id[:maxLoggedName], "") + "…"
	}
	return id
}

// loggedServices is ids as log lines show them: the first maxLoggedServices
// names, each cut to maxLoggedName bytes, then how many more there are.
func loggedServices(ids []string) []string {
	out := make([]string, 0, min(len(ids), maxLoggedServices+1))
	for _, id := range ids[:min(len(ids), maxLoggedServices)] {
		out = append(out, loggedName(id))
	}
	if n := len(ids) - maxLoggedServices; n > 0 {
		out = append(out, fmt.Sprintf("(%d more)", n))
	}
	return out
}

// lookupLocked finds the link a stream message is for; stale ids give nil (spec §3.2).
func (s *session) lookupLocked(m *Message) (*stream, *link) {
	st := s.streams[m.ServiceID]
	if st == nil || st.id != m.StreamID {
		return nil, nil
	}
	return st, st.links[s.connKeyLocked(m.ConnectionID)]
}

// relayed handles the messages both ends treat alike: DATA and the resets.
func (s *session) relayed(m *Message) {
	switch m.Type {
	case TypeData:
		s.data(m)
	case TypeStreamReset:
		s.streamReset(m)
	case TypeConnectionReset:
		s.connectionReset(m)
	case TypeSessionReset:
		s.sessionReset()
	}
}

// data delivers a DATA payload to its local connection, or drops it as stale.
func (s *session) data(m *Message) {
	s.mu.Lock()
	st, l := s.lookupLocked(m)
	if l != nil {
		s.peerV2 = s.peerV2 || m.ConnectionID == 0
		if len(m.Payload) > 0 {
			st.answered, l.answered = true, true
		}
	}
	s.mu.Unlock()
	if l == nil {
		s.plog.log(s.opt.log, slog.LevelDebug, "dropping stale DATA", "frame", m)
		if st == nil {
			s.resetUnknownStream(m)
		}
		return
	}
	if len(m.Payload) == 0 {
		return
	}
	l.push(payloads.Copy(m.Payload))
}

// payloads recycles the copies of DATA payloads between the WebSocket reader and a
// local connection's writer: a third of the agent's allocations in a tunnelled
// upload before.
var payloads = bufpool.New(MaxPayload, 4<<10)

// maxUnknownResets bounds the services whose last unknown stream
// resetUnknownStream remembers.
const maxUnknownResets = 8

// resetUnknownStream answers traffic for a stream the destination does not have
// with one STREAM_RESET per stream id, so that a source which started the stream
// while the destination was away (tunneld drops such frames; what AWS does with
// them is an open question of spec §8, and the reset is harmless if it queues
// them instead) or missed a reset
// ends it and starts a new one, instead of sending into the void forever. The
// reference proxies stay silent here; a STREAM_RESET for a stream the source has
// already left is stale to it and ignored (spec §3.2).
func (s *session) resetUnknownStream(m *Message) {
	if s.source {
		return
	}
	s.mu.Lock()
	if s.unknownReset == nil {
		s.unknownReset = map[string]int32{}
	}
	last, ok := s.unknownReset[m.ServiceID]
	if ok && last == m.StreamID {
		s.mu.Unlock()
		return
	}
	// The ids are the peer's to choose: a hostile service can send DATA
	// with a new one of up to 64 KiB each time, and all were kept for the
	// life of the connection. A tunnel has up to 3 services of up to 128
	// characters (spec §3.4); past that, a burst gets more than one answer.
	if !ok && len(s.unknownReset) >= maxUnknownResets {
		clear(s.unknownReset)
	}
	if len(m.ServiceID) <= maxLoggedName {
		s.unknownReset[m.ServiceID] = m.StreamID
	}
	s.mu.Unlock()
	s.plog.log(s.opt.log, slog.LevelInfo, "traffic for an unknown stream: resetting it", "service", loggedName(m.ServiceID), "stream", m.StreamID)
	s.sendStreamReset(m.ServiceID, m.StreamID)
}

// streamReset ends every connection of the service's active stream, after their
// pending data is written (spec §3.3).
func (s *session) streamReset(m *Message) {
	s.mu.Lock()
	st := s.streams[m.ServiceID]
	if st == nil || st.id != m.StreamID {
		s.mu.Unlock()
		s.opt.log.Debug("ignoring stale STREAM_RESET", "frame", m)
		return
	}
	delete(s.streams, m.ServiceID)
	answered := st.answered
	// A V3 peer ends a connection with CONNECTION_RESET: a STREAM_RESET of
	// a stream with connections open is a cut (the peer stopped, or the
	// service replaced it), not an end: what came before is written, then
	// the connection reset, so that a transfer does not look whole. A V2
	// peer ends with STREAM_RESET: no telling.
	cut := s.version == V3 && !s.peerV2
	s.mu.Unlock()
	if s.source && !answered && !s.opt.stdio {
		// The service drops frames for a side that is not connected and resets the
		// stream when it arrives, so this is what starting too early looks like.
		s.opt.log.Warn("stream reset before the destination answered: its agent may not have joined the tunnel yet "+
			"or lost its connection to it, or its service refused the connection; connect again", "service", loggedName(m.ServiceID), "stream", m.StreamID)
	} else {
		s.plog.log(s.opt.log, slog.LevelInfo, "stream reset by peer", "service", loggedName(m.ServiceID), "stream", m.StreamID)
	}
	for _, l := range st.links {
		if cut {
			l.reset.Store(true)
		}
		l.peerEnded()
	}
}

// connectionReset ends one connection of a V3 stream.
func (s *session) connectionReset(m *Message) {
	s.mu.Lock()
	st, l := s.lookupLocked(m)
	if l != nil {
		delete(st.links, l.id)
	}
	s.mu.Unlock()
	if l == nil {
		s.opt.log.Debug("ignoring stale CONNECTION_RESET", "frame", m)
		return
	}
	l.peerEnded()
}

// sessionReset ends every stream, without a stream id filter (spec §3.3).
func (s *session) sessionReset() {
	s.mu.Lock()
	old := s.streams
	s.streams = map[string]*stream{}
	s.mu.Unlock()
	s.plog.log(s.opt.log, slog.LevelWarn, "session reset by the service", "streams", len(old))
	for _, st := range old {
		for _, l := range st.links {
			l.reset.Store(true) // never a connection's end: a cut (a token rotated)
			l.peerEnded()
		}
	}
}

// link is one local connection carried by the tunnel: (service, stream, connection).
type link struct {
	s       *session
	service string // wire service id
	target  string // service name for a Dialer
	stream  int32
	id      uint32 // wire connection id, and key in stream.links: 0 in V1/V2
	v3      bool
	first   bool // destination: opened by the STREAM_START (the others by CONNECTION_START)

	answered bool // DATA has come from the peer for it; under session.mu

	in chan []byte // tunnel → local
	// peerGone is closed by the peer's reset (peerEnded): the link ends once
	// the data queued before it is written. It is no entry in the queue, so
	// that the reset need not wait for room there.
	peerGone chan struct{}
	// held is the memory of the payloads queued in in or being written
	// (sessionBuffered): the capacity of each, pooled or not. Counted per
	// link, so that what a link that ended left in its queue stops counting
	// with it.
	held atomic.Int64
	// moved is when the link last wrote a payload to its local connection,
	// or when it was given one with none held (session.now): a link that
	// holds payloads and has not moved for the stall timeout is stuck.
	moved atomic.Int64
	done  chan struct{}
	idle  chan struct{} // closed when the pumps have returned: the link sends nothing more
	once  sync.Once
	quiet atomic.Bool // the peer ended the link (or the session did): send no reset
	// reset has the local connection closed with a TCP reset, not a FIN: its
	// stream was cut short (the WebSocket lost, a stall), and a client that
	// reads to the end must not take what it got for all of it.
	reset atomic.Bool
	pumps atomic.Int32 // pumps not yet returned; the link is live (session.live) until 0

	mu    sync.Mutex
	conn  io.ReadWriteCloser
	drain *time.Timer // after the peer's reset: how long the last data may take
	// lingering: finish has stopped the drain timer, and ends the link itself
	lingering bool
	// stopDial ends the dial of the local connection, while one runs: a link
	// that ends (superseded, reset) must not hold a goroutine and a socket
	// for the dial timeout, or a peer that starts and ends connections to a
	// slow target makes them grow with its rate.
	stopDial context.CancelFunc
}

// newLinkLocked adds a connection to st; id is the wire connection id (normalised:
// 0 in V1/V2, ≥ 1 in V3).
func (s *session) newLinkLocked(st *stream, service string, id uint32) *link {
	key := s.connKeyLocked(id)
	l := &link{s: s, service: service, target: st.target, stream: st.id, id: key, v3: s.version == V3,
		in: make(chan []byte, linkQueue), done: make(chan struct{}), idle: make(chan struct{}), peerGone: make(chan struct{})}
	st.links[key] = l
	s.live[l] = struct{}{}
	l.pumps.Store(1) // pumpDown
	s.wg.Add(1)      // for pumpDown; start must follow
	return l
}

// attrs are the link's attributes for a log line. Not inlined (agent/tunnel
// keeps inlining, device.gcflags): its seven callers would each carry a copy
// of the slice's making, ~100 B on linux/mipsle.
//
//go:noinline
func (l *link) attrs() []any {
	return []any{"service", loggedName(l.service), "stream", l.stream, "conn", l.id}
}

// start runs the link's pumps; it must follow newLinkLocked, even for a link that
// has already ended. conn is the local connection, or nil when dial must make it
// first (destination).
func (l *link) start(conn io.ReadWriteCloser, dial func(context.Context) (io.ReadWriteCloser, error)) {
	go func() {
		defer l.s.wg.Done()
		defer l.pumpDone()
		l.pumpDown(conn, dial)
	}()
}

// pumpDone is called as each pump of the link returns; after the last one the link
// sends nothing more, and no longer counts as live.
func (l *link) pumpDone() {
	if l.pumps.Add(-1) != 0 {
		return
	}
	l.s.mu.Lock()
	delete(l.s.live, l)
	l.s.mu.Unlock()
	close(l.idle)
	wake(l.s.written) // what it held no longer counts
	select {
	case l.s.linkDone <- struct{}{}:
	default:
	}
}

// pumpDown writes tunnel data to the local connection, in order. It owns the start
// of the upstream pump so that the local connection exists first.
func (l *link) pumpDown(conn io.ReadWriteCloser, dial func(context.Context) (io.ReadWriteCloser, error)) {
	if conn == nil {
		ctx, cancel := context.WithCancel(l.s.ctx)
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			cancel()
			return
		default:
		}
		l.stopDial = cancel
		l.mu.Unlock()
		var err error
		conn, err = dial(ctx)
		cancel()
		if err != nil {
			select {
			case <-l.done:
				return // ended while dialing: nothing to say
			default:
			}
			l.s.plog.log(l.s.opt.log, slog.LevelWarn, "dialing service failed", append(l.attrs(), "target", loggedName(l.target), "error", err)...)
			if !l.first {
				l.endAndNotify(false, false)
				return
			}
			// A STREAM_START whose dial failed is answered with STREAM_RESET,
			// in V3 as in V1/V2 (spec §3.3; a CONNECTION_RESET would leave the
			// stream open for connections that have no target either), unless
			// the peer ended the stream first.
			peerFirst := l.quiet.Load()
			l.end()
			if !peerFirst {
				l.s.endStream(l.service, l.stream, false)
			}
			return
		}
	}
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		l.closeConn(conn) // a reset, if superseded: an empty upload is not a complete one
		return
	default:
	}
	l.conn = conn
	select {
	case <-l.peerGone: // nothing more comes: its kernel may hold all of it
	default:
		boundUnsent(conn, true)
	}
	l.mu.Unlock()
	l.s.opt.log.Debug("connection open", l.attrs()...)

	l.s.wg.Add(1)
	l.pumps.Add(1)
	go func() {
		defer l.s.wg.Done()
		defer l.pumpDone()
		l.pumpUp(conn)
	}()
	// Once a write has failed, the local connection no longer takes data:
	// its target has closed or reset it. What the target wrote before is
	// still to be read (an answer, an SSH disconnect message): closing the
	// connection here would throw it away, and the reset would overtake it.
	// So pumpUp reads on and ends the link at the end of its input, with the
	// reset after the last data; meanwhile what the peer sends is dropped,
	// and a target whose output does not end within the stall timeout is
	// closed.
	failed := false
	write := func(b []byte) {
		var err error
		if !failed {
			_, err = conn.Write(b)
		}
		l.held.Add(-int64(cap(b)))
		l.moved.Store(l.s.now())
		payloads.Release(b)
		wake(l.s.written)
		if err != nil {
			failed = true
			l.armDrain(func() { l.endAndNotify(false, false) })
		}
	}
	for {
		select {
		case b := <-l.in:
			write(b)
		case <-l.peerGone:
			// Nothing more is queued after the peer's reset: what was is
			// written, in order, while it moves (the drain timer peerEnded
			// armed).
			for {
				select {
				case b := <-l.in:
					write(b)
				default:
					l.finish(conn, failed)
					return
				}
			}
		case <-l.done:
			return
		}
	}
}

// endStream ends stream id of service here, with every connection of it if it
// is still the active one, and tells the peer with STREAM_RESET: at once, or,
// for the WebSocket reader (byReader), after the resets it has queued (see
// sendReset).
func (s *session) endStream(service string, id int32, byReader bool) {
	s.mu.Lock()
	var links []*link
	if st := s.streams[service]; st != nil && st.id == id {
		delete(s.streams, service)
		for _, l := range st.links {
			links = append(links, l)
		}
	}
	s.mu.Unlock()
	for _, l := range links {
		l.end()
	}
	if byReader {
		s.sendStreamReset(service, id)
		return
	}
	_ = s.send(&Message{Type: TypeStreamReset, StreamID: id, ServiceID: service})
}

// sendStreamReset sends STREAM_RESET for stream id of service (see sendReset).
//
// Not inlined (agent/tunnel keeps inlining, device.gcflags): each of its three
// callers would carry its own copy of the closure.
//
//go:noinline
func (s *session) sendStreamReset(service string, id int32) {
	s.sendReset(func() { _ = s.send(&Message{Type: TypeStreamReset, StreamID: id, ServiceID: service}) })
}

// pumpUp reads the local connection and sends DATA, at most chunk bytes a frame; the
// WebSocket write blocks while the socket is busy, slowing this reader. A quiet
// connection reads into a small buffer and a busy one into a pooled frame-sized one,
// so that idle connections (10 SSH sessions, or a hundred V3 keep-alives) do not
// hold 63 KiB each.
func (l *link) pumpUp(conn io.Reader) {
	small := make([]byte, min(smallRead, l.s.opt.chunk))
	buf := small
	var big []byte // pooled, while the connection is busy
	defer func() { l.s.releaseBigRead(big) }()
	m := Message{Type: TypeData, StreamID: l.stream, ServiceID: l.service, ConnectionID: l.id}
	for {
		n, err := conn.Read(buf)
		// Once the peer has reset the link (or it ended here), what the
		// target writes belongs to no stream: a peer that starts the id again
		// (localproxy's streams start at 1 each time it starts) would take it
		// for its new connection's. It is read on and dropped, so that the
		// target, not held up by its output, takes the last data (peerEnded).
		if n > 0 && !l.quiet.Load() {
			m.Payload = buf[:n]
			if l.s.send(&m) != nil { // sent, or failed, when it returns: buf is free
				// The session is ending (a failed send ends it): the
				// connection is closed as teardown closes it, with a reset
				// if cut short. Closed with a FIN here first, an upload to
				// a target that answered as it read looked whole to it.
				if l.cut() {
					l.reset.Store(true)
				}
				l.end()
				return
			}
		}
		if err != nil {
			// A local connection reset (a client that aborted) is passed
			// on as a reset where the protocol can say one, not as its
			// end: an upload with no length of its own (nc, HTTP ended by
			// the close) would look complete at the other side.
			l.endAndNotify(false, errors.Is(err, errConnReset))
			return
		}
		switch {
		case big == nil && n == len(small) && len(small) < l.s.opt.chunk:
			if big = l.s.getBigRead(); big != nil {
				big = big[:l.s.opt.chunk]
				buf = big
			}
		case big != nil && n < smallRead:
			l.s.releaseBigRead(big)
			big, buf = nil, small
		}
	}
}

// maxBigReads bounds the frame-sized read buffers one session's links hold in
// pumpUp: a link blocked in send holds its buffer, and a peer that reads slowly
// (an operator on a slow link) with MaxConnections busy connections left one
// 63 KiB buffer with each, 128 of them ~10 MiB of the agent per service of a
// tunnel. Past the bound a busy connection reads into its small buffer. 16 of
// them are ~1 MiB, as sessionBuffered for the other direction.
const maxBigReads = 16

// getBigRead takes a pooled frame-sized buffer, nil when the session's links
// hold maxBigReads already.
func (s *session) getBigRead() []byte {
	if s.bigReads.Add(1) > maxBigReads {
		s.bigReads.Add(-1)
		return nil
	}
	return payloads.Get()
}

// releaseBigRead gives back a buffer of getBigRead (nil: none).
func (s *session) releaseBigRead(b []byte) {
	if b == nil {
		return
	}
	payloads.Release(b)
	s.bigReads.Add(-1)
}

// smallRead is the read buffer of a quiet local connection (pumpUp).
const smallRead = 4 << 10

// push queues a payload for the local connection. When the queue stays full for the
// stall timeout, the connection is reset so that it cannot hold up the others.
func (l *link) push(b []byte) {
	if !l.s.overBuffered() {
		select {
		case l.in <- b:
			l.hold(b)
			return
		case <-l.done:
			return
		default:
		}
	}
	t := time.NewTimer(l.s.opt.stall)
	defer t.Stop()
	for {
		// Over the session's budget, b waits for room (a nil channel is
		// never ready), and the connections stuck holding it are reset.
		in := l.in
		if l.s.overBuffered() {
			if l.s.shedStuck(l) {
				continue // their pumps end, and what they held stops counting (written)
			}
			in = nil
		}
		select {
		case in <- b:
			l.hold(b)
			return
		case <-l.s.written:
		case <-l.done:
			return
		case <-l.s.ctx.Done():
			return
		case <-t.C:
			if in == nil && l.s.shedStuck(l) {
				t.Reset(l.s.opt.stall)
				continue
			}
			l.stalled()
			return
		}
	}
}

// hold counts b, queued for the local connection, in what the link holds.
func (l *link) hold(b []byte) {
	if l.held.Add(int64(cap(b))) == int64(cap(b)) {
		l.moved.Store(l.s.now()) // it held none: it is not stuck until it has held b for the stall timeout
	}
}

// now is the time since the session began, for link.moved.
func (s *session) now() int64 { return int64(time.Since(s.born)) }

// shedStuck resets the session's connections other than l that hold payloads
// and have written none for the stall timeout: when the session's budget is
// spent, they hold it (local targets that stopped reading), and a connection
// of another target that does read must not be reset, nor hold up the
// session's other streams, in their place. It reports whether it reset any.
func (s *session) shedStuck(l *link) bool {
	now, stall := s.now(), int64(s.opt.stall)
	var stuck []*link
	s.mu.Lock()
	for o := range s.live {
		if o != l && o.held.Load() > 0 && now-o.moved.Load() >= stall {
			select {
			case <-o.done: // reset or ended already: its pumps are on their way out
			default:
				stuck = append(stuck, o)
			}
		}
	}
	s.mu.Unlock()
	for _, o := range stuck {
		o.stalled()
	}
	return len(stuck) > 0
}

func (l *link) stalled() {
	l.s.plog.log(l.s.opt.log, slog.LevelWarn, "local connection stalled, resetting it", append(l.attrs(), "stall_timeout", l.s.opt.stall)...)
	l.reset.Store(true)
	l.endAndNotify(true, false)
}

// overBuffered reports whether the session's local connections hold
// sessionBuffered or more in payloads, queued or being written. It counts
// only when they could: with few connections the sum is not taken. (A link's
// count may dip below zero for a moment: pumpDown can write a payload before
// push has added it.)
func (s *session) overBuffered() bool {
	const perLink = (linkQueue + 1) * MaxPayload
	s.mu.Lock()
	defer s.mu.Unlock()
	// Divided, not multiplied: thousands of links overflow a 32-bit int.
	if len(s.live) <= (sessionBuffered-1)/perLink {
		return false
	}
	var held int64
	for l := range s.live {
		held += l.held.Load()
	}
	return held >= sessionBuffered
}

// peerEnded closes the link because the peer reset it: pending data is written
// first, within the stall timeout. A local connection that does not read would
// otherwise hold its pump, and the link, for as long as the session lasts. It
// does not wait: the WebSocket reader, which calls it, serves every other
// connection too.
func (l *link) peerEnded() {
	l.quiet.Store(true)
	// Still dialing, and no data for it: nothing to write, so it ends now
	// rather than when the dial (up to its timeout) returns. Only the
	// WebSocket reader, which calls this, queues in l.in, and nothing leaves
	// it before the connection is open.
	l.mu.Lock()
	dialing := l.conn == nil && len(l.in) == 0
	l.mu.Unlock()
	if dialing {
		l.end()
		return
	}
	close(l.peerGone) // once: each reset took the link out of its stream first
	// Nothing more is pushed, so the bound on what the kernel holds no
	// longer keeps the tunnel's other streams moving: lifted, the kernel
	// takes what is queued, and a slow reader still gets all of it if the
	// session ends before it has read it (cut).
	l.mu.Lock()
	if l.conn != nil {
		boundUnsent(l.conn, false)
	}
	l.mu.Unlock()
	l.armDrain(l.drainExpired)
}

// armDrain has f run after the stall timeout, unless the link has ended or a
// drain is armed already: the last data before an end gets that long.
func (l *link) armDrain(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
	default:
		if l.drain == nil {
			l.drain = time.AfterFunc(l.s.opt.stall, f)
		}
	}
}

// finish ends the link once the data the peer sent before its reset is
// written. Closed at once with output unread (progress, acknowledgements of
// an upload), a socket is reset by its kernel, which drops what it had still
// to send, the end of the transfer. So a TCP or Unix connection gets its end
// of input after the data, and the link ends once the target has all of it
// (acknowledged), or its output ends (pumpUp reads it on and drops it): not
// later, so that a target that never stops writing (a stream) is not read
// for nothing. The drain timer, which bounded the writes, no longer applies:
// a slow reader takes the rest at its pace, and one that takes nothing for
// the stall timeout is closed, as before the linger.
func (l *link) finish(conn io.Writer, failed bool) {
	cw, ok := netConn(conn).(interface {
		CloseWrite() error
		syscall.Conn
	})
	// A link cut short (l.reset: its peer's STREAM_RESET in V3, a
	// SESSION_RESET) gets no FIN, after which its data looked whole.
	if !ok || failed || l.reset.Load() || cw.CloseWrite() != nil {
		l.end()
		return
	}
	l.mu.Lock()
	l.lingering = true
	if l.drain != nil {
		l.drain.Stop()
	}
	l.mu.Unlock()
	t := time.NewTicker(lingerPoll)
	defer t.Stop()
	last, moved := -2, time.Now()
	for n := unsent(cw); n != 0; n = unsent(cw) {
		if n != last {
			last, moved = n, time.Now()
		}
		if d := time.Since(moved); d >= l.s.opt.stall || n < 0 && d >= lingerBlind {
			break
		}
		select {
		case <-l.done:
			return
		case <-t.C:
		}
	}
	l.end()
}

// netConn is the connection under c's wrappers that name it (NetConn, as
// tls.Conn's; the agent counts each stream's bytes in one), or c.
func netConn(c any) any {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = w.NetConn()
	}
}

// lingerPoll is how often finish looks whether the target has taken the data.
const lingerPoll = 20 * time.Millisecond

// lingerBlind is how long finish waits for the target's output to end where
// the kernel cannot say what the target has taken (unsent -1: not Linux).
const lingerBlind = 2 * time.Second

// drainExpired closes a link whose local connection has taken none of the
// data the peer sent before its reset for the stall timeout. One that is
// still taking it, slowly (a device writing an upload to flash), gets on:
// what is queued (linkQueue payloads) can take a slow reader longer than the
// stall timeout, and cutting it then would lose the end of a transfer that
// was moving.
func (l *link) drainExpired() {
	select {
	case <-l.done:
		return
	default:
	}
	l.mu.Lock()
	if l.lingering { // finish took over as the timer fired
		l.mu.Unlock()
		return
	}
	if idle := time.Duration(l.s.now() - l.moved.Load()); idle < l.s.opt.stall {
		l.drain.Reset(l.s.opt.stall - idle)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.s.plog.log(l.s.opt.log, slog.LevelWarn, "local connection did not take the last data before the peer's reset, resetting it",
		append(l.attrs(), "stall_timeout", l.s.opt.stall)...)
	l.reset.Store(true)
	l.end()
}

// endAndNotify ends the link from the local side and tells the peer, unless the
// peer ended it first: at once, or, for the WebSocket reader (byReader), after
// the resets it has queued (see sendReset). A pump's reset is written before
// it returns: a stdio session ends once its pumps have.
//
// aborted says the local connection was reset. V3's CONNECTION_RESET is a
// connection's end, which the peer passes on as one (a FIN); its STREAM_RESET
// is a cut (see streamReset), passed on as a reset. So on the source, a V3
// link reset here (a client that aborted an upload) that is its stream's only
// one ends the stream with STREAM_RESET, and the destination resets its
// connection to the service. One that shares its stream (a browser's
// connections to one web UI) can only end, as the protocol has no reset of one
// connection. A destination does not do it: the source starts connections on
// the stream, and one whose CONNECTION_START was on its way would be cut too
// (a browser's next request, reset by another's failure). In V1 and V2 every
// end is a STREAM_RESET, which their peers take as an end.
func (l *link) endAndNotify(byReader, aborted bool) {
	first := false
	l.once.Do(func() { first = true; l.close() })
	if !first || l.quiet.Load() {
		return
	}
	l.s.mu.Lock()
	cut := false
	if st := l.s.streams[l.service]; st != nil && st.id == l.stream && st.links[l.id] == l {
		delete(st.links, l.id)
		cut = aborted && l.v3 && l.s.source && len(st.links) == 0
		if !l.v3 || cut {
			delete(l.s.streams, l.service) // the stream ends with its connection
		}
	}
	l.s.mu.Unlock()
	m := &Message{Type: TypeStreamReset, StreamID: l.stream, ServiceID: l.service}
	if l.v3 && !cut {
		m.Type, m.ConnectionID = TypeConnectionReset, l.id
	}
	l.s.opt.log.Debug("connection closed locally", l.attrs()...)
	tell := func() {
		if l.s.send(m) == nil && l.v3 && l.s.source {
			l.s.endIdleStream(l.service, l.stream)
		}
	}
	if byReader {
		l.s.sendReset(tell)
		return
	}
	tell()
}

// endIdleStream ends a source's V3 stream once its last connection is gone, so the
// next connection starts a fresh stream: if the destination lost the old one (it
// reconnected, or never saw the STREAM_START), CONNECTION_STARTs on it would go
// unanswered. localproxy keeps the stream; a new STREAM_START is valid either way.
func (s *session) endIdleStream(service string, id int32) {
	s.mu.Lock()
	st := s.streams[service]
	if st == nil || st.id != id || len(st.links) > 0 {
		s.mu.Unlock()
		return
	}
	delete(s.streams, service)
	s.mu.Unlock()
	_ = s.send(&Message{Type: TypeStreamReset, StreamID: id, ServiceID: service})
}

// end closes the link without telling the peer.
func (l *link) end() {
	l.quiet.Store(true)
	l.once.Do(l.close)
	l.s.mu.Lock()
	if st := l.s.streams[l.service]; st != nil && st.links[l.id] == l {
		delete(st.links, l.id)
		if !l.v3 && len(st.links) == 0 {
			delete(l.s.streams, l.service)
		}
	}
	l.s.mu.Unlock()
}

func (l *link) close() {
	l.mu.Lock()
	close(l.done)
	if l.stopDial != nil {
		l.stopDial()
	}
	if l.drain != nil {
		l.drain.Stop()
	}
	if l.conn != nil {
		l.closeConn(l.conn)
	}
	l.mu.Unlock()
}

// cut reports whether the session's end, the WebSocket lost or the caller
// stopping it, cuts l's data short: unless the peer ended l and what it sent
// before is all with the kernel (l lingers in finish), which a FIN still
// delivers. Closed with a FIN, a transfer stopped midway (the agent or
// porthole connect stopped) looked whole at its end; closed with a reset,
// a download whose last data was on its way to a slow client was lost with
// the tunnel after it.
func (l *link) cut() bool {
	select {
	case <-l.peerGone:
		return l.held.Load() > 0
	default:
		return true
	}
}

// closeConn closes the link's local connection, with a TCP reset if the link
// was cut short (see link.reset).
func (l *link) closeConn(conn io.Closer) {
	if l.reset.Load() {
		abortConn(conn)
		return
	}
	conn.Close()
}

// abortConn closes conn with a TCP reset if it is a TCP connection: for one
// cut short, and for one the source turns away before it carried anything
// (the tunnel not ready, too many connections), which a plain end would show
// a raw download (nc, curl of a file) as a whole, empty one. It takes any:
// converting the callers' interfaces to io.Closer took 0.5 KB more of the
// device binary's code.
func abortConn(conn any) {
	if tc, ok := netConn(conn).(*net.TCPConn); ok {
		tc.SetLinger(0) // close sends an RST
	}
	if c, ok := conn.(io.Closer); ok {
		c.Close()
	}
}

// supersede ends a link whose stream a new STREAM_START replaces (V1/V2 carry one
// connection per service): with a TCP reset, as a stream cut short (see
// link.reset), so that a truncated transfer does not look complete at its end.
func (l *link) supersede() {
	l.reset.Store(true)
	l.end()
}
