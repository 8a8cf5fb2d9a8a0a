// Package tlsbatch sends the TLS records of one write with one system call.
// crypto/tls writes each record (at most 16 KiB) with its own write, four for a
// full tunnel frame; porthole connect spent 41 % of its CPU in them during an
// upload (docs/benchmarks.md). Conn sits under crypto/tls; Writer writes through
// the TLS connection on top of it and gathers each write's records into one.
package tlsbatch

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"
)

// keepBuffer is the largest gathering buffer kept between batches: two tunnel
// WebSocket messages with their records' overhead.
const keepBuffer = 2*(2*(65536+2)) + 4096

// Conn is a connection under crypto/tls. Every write to the socket, batched or
// not, happens under mu, so records that crypto/tls writes on its own (alerts,
// key updates) keep their order.
type Conn struct {
	// Conn is a named field, not embedded: embedded, Conn and *Conn each had
	// its promoted methods linked as wrappers (docs/size.md).
	Conn     net.Conn
	mu       sync.Mutex
	batching bool
	buf      []byte
}

// New wraps c; give the result to tls.Client or tls.Server.
func New(c net.Conn) *Conn { return &Conn{Conn: c} }

func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batching {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *Conn) Read(p []byte) (int, error)         { return c.Conn.Read(p) }
func (c *Conn) Close() error                       { return c.Conn.Close() }
func (c *Conn) LocalAddr() net.Addr                { return c.Conn.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.Conn.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(t) }

// begin gathers the writes that follow, until end sends them.
func (c *Conn) begin() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

// end sends what was gathered since begin, with one write.
func (c *Conn) end() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if cap(c.buf) > keepBuffer {
		c.buf = nil
	}
	return err
}

// Writer is where to write t's application data: a writer that sends the
// records of each write with one system call when t runs over a Conn, else t.
func Writer(t *tls.Conn) io.Writer {
	if b, ok := t.NetConn().(*Conn); ok {
		return &batched{t, b}
	}
	return t
}

type batched struct {
	t *tls.Conn
	b *Conn
}

func (w *batched) Write(p []byte) (int, error) {
	w.b.begin()
	n, err := w.t.Write(p)
	if berr := w.b.end(); err == nil {
		err = berr
	}
	return n, err
}

// Listener wraps the connections l accepts, for a TLS server on top of it.
func Listener(l net.Listener) net.Listener { return listener{l} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return New(c), nil
}
