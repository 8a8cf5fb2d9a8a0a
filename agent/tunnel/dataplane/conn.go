package dataplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/internal/bufpool"
	"github.com/porthole-iot/porthole/agent/tunnel/internal/wsstream"
)

const (
	// maxWebSocketMessage is the read limit per message and the largest message the
	// server writes (spec §1.3).
	maxWebSocketMessage = tunnel.MaxWebSocketMessage
	// maxQueued bounds the bytes waiting to be written to one side, queued or
	// taken by the writer and not yet written; a relay into a full queue blocks
	// the sender's reader, so a slow reader slows its peer down as it would
	// through the real service. The room of each frame comes back once it is
	// written, so a side holds at most maxQueued and the frame admitted last, and
	// a sender waits for one frame to reach a slow reader, not for a whole batch
	// (with 1 MiB at 12 KB/s, 90 s without reading the sender's pings: porthole
	// connect's pong timeout).
	maxQueued = 1 << 20
	// gather is how long a rechunking writer waits for more frames before cutting,
	// so that messages carry several frames.
	gather = time.Millisecond
)

// conn is one accepted WebSocket. Its reader runs in the handler goroutine, its
// writer in a goroutine of its own; the writer is the only one to write data, so
// writes to a side are serialized and frames keep their order.
type conn struct {
	s         *Server
	t         *Tunnel
	side      Side
	token     string          // the access token admitted; attach refuses a revoked one
	admitted  time.Time       // when the handshake was admitted: the side's connect time
	ws        *websocket.Conn // set once, before run; read under mu by cut
	raw       net.Conn        // the hijacked TCP connection; closing it cuts without a Close frame
	proto     string
	channelID string
	format    int8 // source: 1 streams with service ids, 2 without; guarded by s.mu
	ctx       context.Context
	cancel    context.CancelFunc
	wake      chan struct{} // buffered 1: the queue grew, a ping came or a close was requested
	done      chan struct{} // closed when the writer returns
	wire      *wire         // under the library's write buffer; set by frameWriter.Hijack
	frameMu   sync.Mutex    // held by SendText's write and by a pong's: SendText's frame may take several wire writes
	pinged    atomic.Bool   // ping holds a ping not answered yet
	dropping  atomic.Bool   // closeWithin's drop: write no more frames, only the Close frame

	// relaying ends when frames read from the conn are no longer relayed:
	// at its cut, or when its token is revoked (stopRelaying), though its
	// close handshake goes on.
	relaying     context.Context
	stopRelaying context.CancelFunc

	mu          sync.Mutex
	space       sync.Cond // signalled when room comes back (a frame written or dropped) or the conn ends
	queue       [][]byte  // complete frames waiting to be written
	queued      int       // bytes in queue
	writing     int       // bytes of the frames the writer has taken and not yet written or dropped
	closeCode   websocket.StatusCode
	closeReason string      // with closeCode != 0: write the queue, then close gracefully
	dead        bool        // cut: nothing more is written
	closeTimer  *time.Timer // with closeCode != 0: cuts a close that takes too long
	closeDone   bool        // the writer's close handshake ended well, before any cut
	ping        [maxControlPayload]byte
	pingLen     int
}

// maxControlPayload is the largest payload of a ping (RFC 6455 §5.5).
const maxControlPayload = 125

// wire is what the library's write buffer writes the WebSocket's frames to: the
// hijacked connection, or tlsbatch's writer over it. The writer goroutine writes
// its pongs to it too (answerPing), between messages; the lock keeps them out of
// a frame of the library's own (the Close frame the reader answers a client's
// with), which it writes whole, its buffer holding the largest frame.
type wire struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// remote is the client's address, for the log; the channel ID ties the
// connection's later lines to it.
func (c *conn) remote() string {
	if c.raw == nil {
		return ""
	}
	return c.raw.RemoteAddr().String()
}

// newConn makes the conn before the WebSocket exists (see Server.upgrade); setWS
// completes it.
func newConn(s *Server, t *Tunnel, side Side, raw net.Conn, proto, channelID string) *conn {
	c := &conn{
		s: s, t: t, side: side, raw: raw, proto: proto, channelID: channelID,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.relaying, c.stopRelaying = context.WithCancel(c.ctx)
	c.space.L = &c.mu
	if proto != SubprotocolV1 {
		// SERVICE_IDS goes first on every V2/V3 connect, even with no services
		// (spec §3.1); a V1 client would not know the type. Whether AWS sends
		// it to a -1.0 client is unknown (spec §3.1); porthole's clients take
		// either.
		b, err := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeServiceIDs, AvailableServiceIDs: t.services})
		if err != nil {
			panic("dataplane: encoding SERVICE_IDS: " + err.Error())
		}
		c.queue, c.queued = [][]byte{b}, cap(b) // counted as enqueue counts
	}
	return c
}

func (c *conn) setWS(ws *websocket.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ws = ws
}

// run serves the connection until it ends; it runs in the handler goroutine.
func (c *conn) run() {
	c.s.handler.Add(1)
	go func() {
		defer c.s.handler.Done()
		c.writeLoop()
	}()
	err := c.readLoop()
	if reason, closed := c.t.closing(); closed && errors.Is(err, errStopped) {
		// A frame that came as the tunnel closed: CloseReason, about to
		// close this conn with a Close frame, must not find it cut (the
		// client would reconnect, and be refused, instead of learning
		// that the tunnel is closed).
		c.closeWith(websocket.StatusNormalClosure, reason)
	}
	c.mu.Lock()
	sent := c.closeCode // of the Close frame this side sends, if any
	c.mu.Unlock()
	graceful := sent != 0
	if !graceful {
		c.cut()
	}
	<-c.done
	c.mu.Lock()
	if c.closeTimer != nil {
		c.closeTimer.Stop()
	}
	closeDone := c.closeDone
	c.mu.Unlock()
	c.ws.CloseNow()
	c.cancel()
	c.t.detach(c)
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	c.s.changed(c.t)
	if graceful && cleanEnd(err, sent, closeDone) {
		err = nil
	}
	c.s.log().Info("ended", "tunnel", c.t.id, "side", c.side, "channel", c.channelID, "error", err)
}

// cleanEnd reports whether err, why the reader of a connection this side
// closed with a Close frame of status sent ended, is part of a clean close:
// the client's answer, read by the reader; or, with the close handshake
// done by the writer (closeDone), what the reader finds after it: the tunnel
// stopped it for the close (a frame that came as the tunnel closed), or the
// connection closed on this side (net.ErrClosed; context.Canceled after the
// cut at the end of the grace, which a reader waiting to relay to a peer
// that does not read waits for). A Close frame of the client's own status (a
// client that closed first) and a network failure remain errors: the
// writer's close handshake fails with them too.
func cleanEnd(err error, sent websocket.StatusCode, closeDone bool) bool {
	if code := websocket.CloseStatus(err); code != -1 {
		return code == sent
	}
	return closeDone && (errors.Is(err, errStopped) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled))
}

// enqueue queues frame b, which the conn now owns. It blocks while the queue is full
// and reports false if the conn no longer writes data.
func (c *conn) enqueue(b []byte) bool { return c.enqueueWait(b, true, nil) }

// relay is enqueue for a frame read from the peer's connection from: it gives
// up, and reports false, once from is cut (replaced by a reconnect, dropped)
// or revoked, whose frames are stale; otherwise the reader of a connection
// that has ended would wait for as long as c's client does not read, and
// every reconnect meanwhile would leave one more, and a revoked client's frame
// that waited would reach c after the SESSION_RESET tunneld sends c.
func (c *conn) relay(b []byte, from *conn) bool { return c.enqueueWait(b, true, from) }

// enqueueControl is enqueue for the service's own small frames (STREAM_RESET on a
// reconnect, SESSION_RESET): it does not wait for room, so that a peer that has
// stopped reading holds up neither a handshake nor an API call. Their number is
// bounded by the calls that make them.
func (c *conn) enqueueControl(b []byte) bool { return c.enqueueWait(b, false, nil) }

func (c *conn) enqueueWait(b []byte, wait bool, from *conn) bool {
	ended := func() bool { return from != nil && from.relaying.Err() != nil }
	c.mu.Lock()
	if wait && from != nil && c.fullLocked() && !c.dead && c.closeCode == 0 {
		// from's cut or revocation ends its relaying: wake the wait below.
		stop := context.AfterFunc(from.relaying, func() {
			c.mu.Lock()
			c.space.Broadcast()
			c.mu.Unlock()
		})
		defer stop()
	}
	for wait && c.fullLocked() && !c.dead && c.closeCode == 0 && !ended() {
		c.space.Wait()
	}
	if c.dead || c.closeCode != 0 || ended() {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, b)
	// Its buffer's size, not the frame's: frames from 4 KiB up are read into
	// 64 KiB buffers, and 1 MiB of 4 KiB frames held 16 MiB.
	c.queued += cap(b)
	c.mu.Unlock()
	c.signal()
	return true
}

// fullLocked reports whether a relay to c waits for room: what is queued and
// what the writer has taken but not written fill maxQueued.
func (c *conn) fullLocked() bool { return c.queued+c.writing >= maxQueued }

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// closeWith writes what is queued, then closes the WebSocket with a Close frame.
func (c *conn) closeWith(code websocket.StatusCode, reason string) {
	c.closeWithin(code, reason, c.s.closeGraceOrDefault(), false)
}

// closeWithin is closeWith, the connection cut after grace. With drop, for a
// client that must get nothing more (its access token revoked), the frames
// queued for it are dropped, as on a cut, and the writer stops before the next
// frame of the batch it is writing. The caller does not wait.
func (c *conn) closeWithin(code websocket.StatusCode, reason string, grace time.Duration, drop bool) {
	// A close frame's payload is at most 125 bytes: the code and a UTF-8 reason.
	for len(reason) > 123 {
		_, n := utf8.DecodeLastRuneInString(reason)
		reason = reason[:len(reason)-n]
	}
	c.mu.Lock()
	if c.dead || c.closeCode != 0 {
		c.mu.Unlock()
		return
	}
	c.closeCode, c.closeReason = code, reason
	if drop {
		c.dropping.Store(true)
		c.queue, c.queued = nil, 0
	}
	c.space.Broadcast()
	// A client that has stopped reading blocks the writer before it gets to
	// the Close frame, and would keep the connection (and its goroutines and
	// queue) for as long as it lives: after the grace, it is cut.
	c.closeTimer = time.AfterFunc(grace, c.cut)
	c.mu.Unlock()
	c.signal()
}

// closeGrace is how long a graceful close (closeWith) may take before the
// connection is cut: the queue, then the close handshake, which coder/websocket
// bounds to 5 s for the frame and 5 s for the answer.
const closeGrace = 15 * time.Second

func (s *Server) closeGraceOrDefault() time.Duration {
	if s.closeGrace > 0 {
		return s.closeGrace
	}
	return closeGrace
}

// cut closes the TCP connection abruptly: no Close frame, queued frames are lost.
func (c *conn) cut() {
	c.mu.Lock()
	was := c.dead
	c.dead = true
	c.queue, c.queued = nil, 0
	c.space.Broadcast()
	c.mu.Unlock()
	if was {
		return
	}
	c.cancel()
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	switch {
	case c.raw != nil:
		if t, ok := c.raw.(*tls.Conn); ok {
			// The TCP connection first, so that the TLS one's Close does
			// not wait: it sends close_notify, and with a client that has
			// stopped reading, that write waits out its 5 s deadline
			// behind the writer's (blocked in tlsbatch's socket write, or
			// in the TLS connection's). Server.Close cut stalled clients
			// one after the other, 5 s each, and a reconnect's 101 waited
			// for the cut of the connection it replaced. A cut is abrupt:
			// no Close frame, no close_notify.
			t.NetConn().Close()
		}
		c.raw.Close()
	case ws != nil:
		ws.CloseNow()
	}
}

func (c *conn) writeLoop() {
	defer close(c.done)
	for {
		rechunk := c.t.rechunking(c.side)
		if rechunk {
			// Let frames accumulate so that messages carry several of them.
			select {
			case <-time.After(gather):
			case <-c.ctx.Done():
			}
		}
		c.mu.Lock()
		batch, dead, code, reason := c.queue, c.dead, c.closeCode, c.closeReason
		// The batch keeps its room until each frame is written (release):
		// no room comes back at the take.
		c.queue, c.queued, c.writing = nil, 0, c.writing+c.queued
		c.mu.Unlock()
		if dead {
			return // cut emptied the queue: batch is empty
		}
		if err := c.answerPing(); err != nil {
			c.release(batch)
			c.cut()
			return
		}
		if len(batch) == 0 {
			if code != 0 {
				err := c.ws.Close(code, reason)
				c.mu.Lock()
				// Close takes a connection closed on this side
				// meanwhile for a success: a cut (the grace ran out)
				// is not one.
				c.closeDone = err == nil && !c.dead
				c.mu.Unlock()
				c.s.log().Info("closed", "tunnel", c.t.id, "side", c.side, "channel", c.channelID, "code", int(code), "reason", reason, "error", err)
				return
			}
			select {
			case <-c.wake:
			case <-c.ctx.Done():
			}
			continue
		}
		var err error
		if rechunk {
			err = c.writeRechunked(batch)
		} else {
			for i, b := range batch {
				if c.dropping.Load() {
					break
				}
				if err = c.ws.Write(c.ctx, websocket.MessageBinary, b); err != nil {
					break
				}
				c.release(batch[i : i+1])
				if err = c.answerPing(); err != nil {
					break
				}
			}
		}
		c.release(batch) // the frames not written: dropped
		if err != nil {
			c.cut()
			return
		}
	}
}

// onPing is the WebSocket's OnPingReceived. Left to the library, the pong is
// written by the reader, which gives it 5 s to take the library's write lock and
// write the frame and, past that, ends the read with an error or closes the
// connection itself: the writer holds that lock for as long as a frame takes to
// reach the client, over 5 s for a 64 KiB frame below 13 KB/s, so a client on a
// slow link that pinged during a bulk transfer was cut, though it read
// everything (spec §3.7 lets the service not answer a ping, not cut). So the
// writer answers, between messages (answerPing), and the library writes no pong.
// The ping counts toward the bandwidth here, as a frame does in the reader; its
// pong in the writer.
func (c *conn) onPing(ctx context.Context, p []byte) bool {
	if c.wire == nil { // not over frameWriter: Accept needs the Hijacker it wraps
		c.t.limit.wait(ctx, 2*(2+len(p)))
		return c.t.pong.Load()
	}
	c.t.limit.wait(c.ctx, 2+len(p))
	if !c.t.pong.Load() {
		return false
	}
	c.mu.Lock()
	// Only the latest ping gets a pong (RFC 6455 §5.5.3): a client that pings
	// and does not read holds one.
	c.pingLen = copy(c.ping[:], p)
	c.pinged.Store(true)
	c.mu.Unlock()
	c.signal()
	return false
}

// answerPing writes the pong to the latest ping not answered yet, if any, with no
// deadline: it is late if the client reads slowly, never the end of the
// connection. The writer calls it between messages.
func (c *conn) answerPing() error {
	if !c.pinged.Load() {
		return nil
	}
	var b [2 + maxControlPayload]byte
	c.mu.Lock()
	n := copy(b[2:], c.ping[:c.pingLen])
	c.pinged.Store(false)
	c.mu.Unlock()
	b[0], b[1] = 0x8a, byte(n) // FIN and pong; a server's frames are not masked (RFC 6455 §5.2)
	c.t.limit.wait(c.ctx, 2+n)
	c.frameMu.Lock()
	defer c.frameMu.Unlock()
	_, err := c.wire.Write(b[:2+n])
	if err == nil {
		c.t.pongs.Add(1)
	}
	return err
}

// frames recycles the buffers that carry relayed frames from one side's reader
// to the other side's writer (tunneld's CPU per relayed MiB went from 3.7 to 2.3
// ms). The reader reads each frame straight into one (frames.Make), which it
// hands on; frames under 4 KiB are made to size.
var frames = bufpool.New(2+tunnel.MaxMessageSize, 4<<10)

// maxHeld bounds the pooled buffers, by capacity, that the frames of the
// message being read hold while they wait for its end, which a client need
// never send. Each frame from 4 KiB up takes a 64 KiB buffer: a message of 4
// KiB frames held 31, 2 MiB per connection, for as long as the client liked.
// Past the bound, frames are made to size, so that a message holds at most
// maxHeld and its own bytes. Four full-size buffers fit: the frames of a
// message of one, as the agent sends them, or of a few, as a client that
// batches does (BenchmarkRelay: four of 16 KiB), are pooled all the same.
const maxHeld = 2 * maxWebSocketMessage

// release gives back the room and the buffers of frames of the writer's batch,
// written or dropped, and wakes the relays that wait for room. It skips the
// frames released before, which it leaves nil, so that the writer may release
// the frames it wrote one by one and then the whole batch.
func (c *conn) release(batch [][]byte) {
	n := 0
	for i, b := range batch {
		if b == nil {
			continue // released before (frames.Release allocates even for nil)
		}
		n += cap(b)
		frames.Release(b)
		batch[i] = nil
	}
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.writing -= n
	c.space.Broadcast()
	c.mu.Unlock()
}

func releaseFrames(bs [][]byte) {
	for i, b := range bs {
		frames.Release(b)
		bs[i] = nil
	}
}

// writeRechunked writes the batch's bytes as messages whose sizes come from the
// tunnel's random source (Rechunk), ignoring frame boundaries. A frame's room
// comes back with the message that ends it; the caller releases the frames it
// leaves.
func (c *conn) writeRechunked(batch [][]byte) error {
	b := bytes.Join(batch, nil)
	written := 0
	next, end := 0, 0 // the first frame not released, and where the frames before it end in b
	for written < len(b) && !c.dropping.Load() {
		n := min(c.t.chunkSize(c.side), len(b)-written)
		if err := c.ws.Write(c.ctx, websocket.MessageBinary, b[written:written+n]); err != nil {
			return err
		}
		written += n
		done := next
		for done < len(batch) && end+len(batch[done]) <= written {
			end += len(batch[done])
			done++
		}
		c.release(batch[next:done])
		next = done
		if err := c.answerPing(); err != nil {
			return err
		}
	}
	return nil
}

// errStopped ends reading when the tunnel refuses to go on with a conn.
var errStopped = errors.New("stopped by the tunnel")

// readLoop reads the concatenated binary messages as a stream of tunnel frames and
// hands each, raw, to the tunnel once the message it ends in has ended within the
// read limit: a message over the limit is refused whole (spec §1.3), its frames
// neither relayed nor checked nor recorded, so that the peer gets nothing of it.
// Frames are not copied on the way: each is read into the buffer the other side's
// writer gets. It returns why reading ended.
func (c *conn) readLoop() error {
	d := newDecoder()
	var held [][]byte // frames that end in the message being read
	heldCap := 0      // the capacity of held's buffers
	defer func() { releaseFrames(held) }()
	ms := &wsstream.Stream{Ctx: c.ctx, WS: c.ws, Limit: maxWebSocketMessage,
		EndMessage: func() error {
			for i, raw := range held {
				held[i] = nil
				if !c.t.receive(c, raw, d) {
					releaseFrames(held[i+1:])
					held = held[:0]
					return errStopped
				}
			}
			held, heldCap = held[:0], 0
			return nil
		}}
	var prefix [2]byte
	for {
		if _, err := io.ReadFull(ms, prefix[:]); err != nil {
			return c.readError(err)
		}
		n := 2 + (int(prefix[0])<<8 | int(prefix[1]))
		var raw []byte
		if heldCap+2+tunnel.MaxMessageSize > maxHeld { // a pooled buffer would pass it
			raw = make([]byte, n)
		} else {
			raw = frames.Make(n)
		}
		copy(raw, prefix[:])
		if _, err := io.ReadFull(ms, raw[2:]); err != nil {
			frames.Release(raw)
			return c.readError(err)
		}
		c.t.limit.wait(c.ctx, len(raw))
		// Counted once read: a frame that straddles two messages is held
		// with the second, whose count starts at the first's end.
		held, heldCap = append(held, raw), heldCap+cap(raw)
	}
}

func (c *conn) readError(err error) error {
	switch {
	case errors.Is(err, wsstream.ErrText):
		c.t.detach(c)
		c.closeWith(websocket.StatusUnsupportedData, "text messages are not allowed (spec §1.2)")
	case errors.Is(err, wsstream.ErrTooBig):
		// Spec §1.3: the connection is closed abnormally, without a Close
		// frame. A client takes a Close frame as the end of the tunnel and a
		// cut as a reason to reconnect: a 1009 here would make it behave
		// otherwise than against the real service.
		c.t.detach(c)
		c.s.log().Info("message over the limit: connection cut", "tunnel", c.t.id, "side", c.side, "limit", maxWebSocketMessage)
		c.cut()
	}
	return err
}
