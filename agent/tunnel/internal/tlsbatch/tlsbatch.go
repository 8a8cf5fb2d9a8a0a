// Package tlsbatch sends the TLS records of one write with one system call.
// crypto/tls writes each record (at most 16 KiB) with its own write, four for a
// full tunnel frame; porthole connect spent 41 % of its CPU in them during an
// upload (docs/benchmarks.md). Conn sits under crypto/tls and gathers the records
// between Begin and End.
package tlsbatch

import (
	"crypto/tls"
	"net"
	"sync"
)

// keepBuffer is the largest gathering buffer kept between batches: two tunnel
// WebSocket messages with their records' overhead.
const keepBuffer = 2*(2*(65536+2)) + 4096

// Conn is a connection under crypto/tls. Every write to the socket, batched or
// not, happens under mu, so records that crypto/tls writes on its own (alerts,
// key updates) keep their order.
type Conn struct {
	net.Conn
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

// Begin gathers the writes that follow, until End sends them.
func (c *Conn) Begin() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

// End sends what was gathered since Begin, with one write.
func (c *Conn) End() error {
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

// Write writes p to t, whose connection is b, with one system call for all its
// records.
func Write(t *tls.Conn, b *Conn, p []byte) (int, error) {
	b.Begin()
	n, err := t.Write(p)
	if berr := b.End(); err == nil {
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

// Under is the Conn under t, if it has one.
func Under(t *tls.Conn) (*Conn, bool) {
	b, ok := t.NetConn().(*Conn)
	return b, ok
}
