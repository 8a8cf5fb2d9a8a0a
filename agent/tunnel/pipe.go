package tunnel

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipeBuffer is how many octets one direction of a Pipe holds before its writer
// waits: about what a local socket buffers.
const pipeBuffer = 128 << 10

// pipeUnread is what a direction holds until its reader has read from it, in a
// buffer of its own rather than a pooled payload: an SSH connection waiting for
// a login slot is not read, and a peer can open a hundred of them.
const pipeUnread = 8 << 10

// Pipe returns the two ends of an in-memory, full-duplex stream connection, for a
// service that runs in this process (the agent's SSH server). Unlike net.Pipe each
// direction buffers, as a socket does, so a writer need not wait for every read;
// unlike a socket pair it costs no system calls (a tunnelled scp upload made 258
// of them per MiB in the agent with a socket pair, 81 with Pipe, and took ~10 %
// less agent CPU; docs/benchmarks.md). Close ends both directions: the peer reads
// what was written, then io.EOF; its writes fail with io.ErrClosedPipe. Deadlines
// work as in net.Conn.
func Pipe() (net.Conn, net.Conn) {
	ab, ba := newPipeBuffer(), newPipeBuffer()
	a := &pipeEnd{in: ba, out: ab, done: make(chan struct{}), rd: newDeadline(), wd: newDeadline()}
	b := &pipeEnd{in: ab, out: ba, done: make(chan struct{}), rd: newDeadline(), wd: newDeadline()}
	return a, b
}

// pipeBuf is one direction: chunks written and not yet read.
type pipeBuf struct {
	mu       sync.Mutex
	chunks   [][]byte // pooled buffers (payloads) holding what was written; chunks[0][off:] is next
	off      int
	n        int           // octets buffered
	wasRead  bool          // the reader has read: the buffer may grow to pipeBuffer
	eof      bool          // the writing end closed: readers drain, then io.EOF
	broken   bool          // the reading end closed: writes fail
	readable chan struct{} // a token when data, eof or broken may have changed
	writable chan struct{} // a token when space or broken may have changed
}

func newPipeBuffer() *pipeBuf {
	return &pipeBuf{readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// read copies buffered octets into p; ok is false when there are none yet.
func (b *pipeBuf) read(p []byte) (n int, err error, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n == 0 {
		if b.eof {
			return 0, io.EOF, true
		}
		return 0, nil, len(p) == 0
	}
	b.wasRead = true
	for n < len(p) && len(b.chunks) > 0 {
		c := b.chunks[0][b.off:]
		k := copy(p[n:], c)
		n += k
		b.off += k
		if k == len(c) {
			payloads.Release(b.chunks[0])
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
			b.off = 0
		}
	}
	b.n -= n
	if len(b.chunks) == 0 {
		b.chunks = nil // let a drained buffer's backing array go
	}
	wake(b.writable)
	if b.n > 0 {
		wake(b.readable) // for another reader
	}
	return n, nil, true
}

// write buffers as much of p as fits; ok is false when nothing fits yet.
func (b *pipeBuf) write(p []byte) (n int, err error, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.broken {
		return 0, io.ErrClosedPipe, true
	}
	if b.eof {
		return 0, net.ErrClosed, true
	}
	limit := pipeBuffer
	if !b.wasRead {
		limit = pipeUnread
	}
	room := limit - b.n
	if room <= 0 {
		return 0, nil, false
	}
	for n < len(p) && room > 0 {
		// Fill the last chunk, then take another: memory stays near what is
		// buffered however small the writes are.
		if last := len(b.chunks) - 1; last >= 0 && len(b.chunks[last]) < cap(b.chunks[last]) {
			k := min(len(p)-n, room, cap(b.chunks[last])-len(b.chunks[last]))
			b.chunks[last] = append(b.chunks[last], p[n:n+k]...)
			n += k
			room -= k
			continue
		}
		if b.wasRead {
			b.chunks = append(b.chunks, payloads.Get())
		} else {
			b.chunks = append(b.chunks, make([]byte, 0, pipeUnread))
		}
	}
	b.n += n
	wake(b.readable)
	if b.n < pipeBuffer {
		wake(b.writable) // for another writer
	}
	return n, nil, true
}

// pipeEnd is one end of a Pipe.
type pipeEnd struct {
	_       [0]func() // not comparable: no equality function in the binary (docs/size.md)
	in, out *pipeBuf
	done    chan struct{} // closed by Close: this end's blocked calls return
	once    sync.Once
	rd, wd  *deadline
}

func (e *pipeEnd) Read(p []byte) (int, error) {
	for {
		select {
		case <-e.done:
			return 0, net.ErrClosed
		case <-e.rd.expired():
			return 0, os.ErrDeadlineExceeded
		default:
		}
		if n, err, ok := e.in.read(p); ok {
			return n, err
		}
		select {
		case <-e.in.readable:
		case <-e.done:
			return 0, net.ErrClosed
		case <-e.rd.expired():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (e *pipeEnd) Write(p []byte) (int, error) {
	written := 0
	for {
		select {
		case <-e.done:
			return written, net.ErrClosed
		case <-e.wd.expired():
			return written, os.ErrDeadlineExceeded
		default:
		}
		n, err, ok := e.out.write(p[written:])
		written += n
		if err != nil || written == len(p) {
			return written, err
		}
		if ok {
			continue // part fitted; try the rest
		}
		select {
		case <-e.out.writable:
		case <-e.done:
			return written, net.ErrClosed
		case <-e.wd.expired():
			return written, os.ErrDeadlineExceeded
		}
	}
}

// Close ends both directions; the peer still reads what was written before.
func (e *pipeEnd) Close() error {
	e.once.Do(func() {
		close(e.done)
		e.out.mu.Lock()
		e.out.eof = true
		e.out.mu.Unlock()
		wake(e.out.readable)
		e.in.mu.Lock()
		e.in.broken = true
		for _, c := range e.in.chunks {
			payloads.Release(c)
		}
		e.in.chunks, e.in.n, e.in.off = nil, 0, 0
		e.in.mu.Unlock()
		wake(e.in.writable)
	})
	return nil
}

func (e *pipeEnd) LocalAddr() net.Addr  { return &pipeAddr{} }
func (e *pipeEnd) RemoteAddr() net.Addr { return &pipeAddr{} }

func (e *pipeEnd) SetDeadline(t time.Time) error {
	e.rd.set(t)
	e.wd.set(t)
	return nil
}
func (e *pipeEnd) SetReadDeadline(t time.Time) error  { e.rd.set(t); return nil }
func (e *pipeEnd) SetWriteDeadline(t time.Time) error { e.wd.set(t); return nil }

type pipeAddr struct{}

func (*pipeAddr) Network() string { return "pipe" }
func (*pipeAddr) String() string  { return "pipe" }

// deadline is a channel that is closed when a set time passes. Every set starts a
// new generation, so a timer of an earlier deadline never closes the channel of a
// later one.
type deadline struct {
	_     [0]func() // not comparable: no equality function in the binary (docs/size.md)
	mu    sync.Mutex
	gen   uint64
	t     *time.Timer
	c     chan struct{} // closed once the deadline has passed
	fired bool
}

func newDeadline() *deadline { return &deadline{c: make(chan struct{})} }

func (d *deadline) set(at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.t != nil {
		d.t.Stop()
		d.t = nil
	}
	if d.fired {
		d.c, d.fired = make(chan struct{}), false
	}
	if at.IsZero() {
		return
	}
	wait := time.Until(at)
	if wait <= 0 {
		close(d.c)
		d.fired = true
		return
	}
	gen := d.gen
	d.t = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen && !d.fired {
			close(d.c)
			d.fired = true
		}
	})
}

func (d *deadline) expired() <-chan struct{} {
	d.mu.Lock()
	c := d.c
	d.mu.Unlock()
	return c
}
