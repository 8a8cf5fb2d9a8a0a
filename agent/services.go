//go:build linux

package agent

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// serviceDialer routes a tunnel's service IDs: "builtin" to the in-process SSH server
// over an in-memory pipe (no TCP port, no system calls), anything else to its
// host:port or unix: target.
// Nothing outside the map is reachable. The map can be swapped on SIGHUP.
type serviceDialer struct {
	services *atomic.Pointer[map[string]string] // the agent's, swapped on reload
	ssh      func(net.Conn)                     // serves one SSH connection; returns at once
	label    string                             // names the tunnel in the connection's remote address
}

func (d *serviceDialer) DialService(ctx context.Context, service string) (net.Conn, error) {
	target, ok := (*d.services.Load())[service]
	if !ok {
		// tunnel.Targets' refusal, which cuts the name for the log: the
		// service's SERVICE_IDS may hold one of 64 KiB.
		return tunnel.Targets(nil).DialService(ctx, service)
	}
	if target != BuiltinSSH {
		return tunnel.Targets{service: target}.DialService(ctx, service)
	}
	ours, theirs := tunnel.Pipe()
	d.ssh(&labelledConn{Conn: theirs, remote: streamAddr("tunnel:" + d.label + "/" + service)})
	return ours, nil
}

// labelledConn gives a tunnel stream a remote address that says where it came from,
// for sshd's logs, audit events and per-source limits.
type labelledConn struct {
	_ [0]func() // not comparable: no equality function in the binary (docs/size.md)
	// Conn is a named field and the methods are *labelledConn's alone: with
	// net.Conn embedded, labelledConn and *labelledConn each had all of them
	// linked (docs/size.md).
	Conn   net.Conn
	remote net.Addr
}

func (c *labelledConn) Read(p []byte) (int, error)        { return c.Conn.Read(p) }
func (c *labelledConn) Write(p []byte) (int, error)       { return c.Conn.Write(p) }
func (c *labelledConn) Close() error                      { return c.Conn.Close() }
func (c *labelledConn) LocalAddr() net.Addr               { return c.Conn.LocalAddr() }
func (c *labelledConn) RemoteAddr() net.Addr              { return c.remote }
func (c *labelledConn) SetDeadline(t time.Time) error     { return c.Conn.SetDeadline(t) }
func (c *labelledConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }
func (c *labelledConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(t)
}

type streamAddr string

func (a streamAddr) Network() string { return "tunnel" }
func (a streamAddr) String() string  { return string(a) }

// countingConn counts the bytes of one stream and reports its end once.
type countingConn struct {
	Conn    net.Conn // named, not embedded: as labelledConn
	in, out atomic.Int64
	start   time.Time
	closed  atomic.Bool
	onClose func(in, out int64, d time.Duration)
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.out.Add(int64(n)) // from the service, out to the operator
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.in.Add(int64(n))
	return n, err
}

// NetConn is the connection counted: agent/tunnel half-closes and resets
// it (its CloseWrite, its TCP linger).
func (c *countingConn) NetConn() net.Conn { return c.Conn }

func (c *countingConn) LocalAddr() net.Addr                { return c.Conn.LocalAddr() }
func (c *countingConn) RemoteAddr() net.Addr               { return c.Conn.RemoteAddr() }
func (c *countingConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(t) }
func (c *countingConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(t) }
func (c *countingConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(t) }

func (c *countingConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) && c.onClose != nil {
		c.onClose(c.in.Load(), c.out.Load(), time.Since(c.start))
	}
	return err
}
