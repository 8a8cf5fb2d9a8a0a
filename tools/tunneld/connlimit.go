package tunneld

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// A cap on the connections a Server holds at once (Config.MaxConnections):
// without one, anyone who reaches it could open connections until the process
// is out of descriptors, and then agents and operators could not connect, and
// the state file could not be written (a first use of a token is refused
// when it cannot be). Both planes share one listener, so one cap covers both:
// a connection counts from its accept to its close, an API client's and a
// WebSocket's alike (a hijacked connection is the one accepted, and its close
// releases its place).
//
// Past the cap, Accept holds the connection it has just accepted until a
// place is free, and accepts no other: the connections beyond it stay in the
// kernel's backlog, finished there, and are served in turn when one ends. So
// the server holds at most the cap plus one connection per listener. Accepting
// and closing them at once would spend a descriptor and a goroutine on each,
// keep the accept loop busy for a flood, and make every agent that comes at
// the wrong moment fail and back off, where one in the backlog is served as
// soon as a place is free (clients' connect timeouts, and the backlog's size,
// bound the wait). A place is taken once a connection is accepted, not before:
// a listener waiting in accept holds none, so a quiet one does not keep a
// place from the others.

// DefaultMaxConnections is Config.MaxConnections's default.
const DefaultMaxConnections = 1024

// limitListener is a net.Listener whose Accept, once it has a connection,
// waits while places (a token in sem each) are all taken.
type limitListener struct {
	net.Listener
	sem       chan struct{} // a token per connection held; shared by the server's listeners
	closed    chan struct{} // closed by Close: ends a wait for a place
	closeOnce sync.Once
	log       *slog.Logger

	mu     sync.Mutex
	warned time.Time // the last Warn line about the cap
}

func newLimitListener(l net.Listener, sem chan struct{}, log *slog.Logger) *limitListener {
	return &limitListener{Listener: l, sem: sem, closed: make(chan struct{}), log: log}
}

func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	select {
	case l.sem <- struct{}{}:
	default:
		l.warn()
		select {
		case l.sem <- struct{}{}:
		case <-l.closed:
			c.Close()
			return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
		}
	}
	return &limitConn{Conn: c, sem: l.sem}, nil
}

// warn says, at most once a minute, that the cap is reached.
func (l *limitListener) warn() {
	now := time.Now()
	l.mu.Lock()
	if !l.warned.IsZero() && now.Sub(l.warned) < time.Minute {
		l.mu.Unlock()
		return
	}
	l.warned = now
	l.mu.Unlock()
	l.log.Warn("connection cap reached: new connections wait in the listen backlog until one ends (--max-connections)",
		"listener", l.Addr().String(), "max_connections", cap(l.sem))
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitConn is a connection that gives its place back when it is closed,
// the first time.
type limitConn struct {
	net.Conn
	sem  chan struct{}
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.sem })
	return err
}

// CloseWrite shuts the write side of a TCP connection (hangUp).
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
