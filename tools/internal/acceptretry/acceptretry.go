// Package acceptretry wraps a net.Listener so that Accept waits out the errors
// that pass by themselves (tunnel.TemporaryAcceptError: out of descriptors or
// memory for a moment, or one connection's failure) instead of returning
// them, and says so at Warn, at most once a minute.
// The host tools' servers need it because the loops they hand their listeners
// to do not: net/http's Serve returns on ENOBUFS and ENOMEM (and tunneld then
// exits, cutting every tunnel) and logs EMFILE only to its ErrorLog, and
// mochi-mqtt's listeners stop accepting at the first error of any kind,
// leaving the port open with nobody serving its backlog. The agent's own
// accept loops (sshd, porthole connect) retry by themselves and do not use it.
//
// It is not a rate limiter: a listener that fails for good (closed, or any
// error TemporaryAcceptError does not take) returns the error at once.
package acceptretry

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// Backoff between attempts after a temporary error, as the agent's sshd: the
// first wait, doubled up to the cap.
const (
	firstDelay = 5 * time.Millisecond
	maxDelay   = time.Second
)

// warnEvery is the least time between two Warn lines. Out of descriptors for
// long while connections come and go, each connection that ends lets one
// Accept through and the next fails again: every run is short, and a line a
// run would be a line a connection.
var warnEvery = time.Minute

// Wrap returns l whose Accept retries temporary errors, waiting 5 ms doubling
// to 1 s between attempts, and logs the first of a run of them to log at Warn
// (nil means discard), at most once per warnEvery. Closing it ends a wait at
// once.
func Wrap(l net.Listener, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &listener{Listener: l, log: log, closed: make(chan struct{})}
}

type listener struct {
	net.Listener
	log       *slog.Logger
	closed    chan struct{} // closed by Close: ends a wait between attempts
	closeOnce sync.Once

	mu       sync.Mutex
	warned   time.Time // when the last Warn line was written
	unlogged int       // runs of failures since then not logged
}

func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || !tunnel.TemporaryAcceptError(err) {
			return c, err
		}
		// One line a run, not one an attempt: out of descriptors, every
		// attempt fails until a connection ends.
		if delay == 0 {
			l.warn(err)
		}
		delay = min(max(2*delay, firstDelay), maxDelay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
		}
	}
}

// warn logs err, the first failure of a run, unless a line was written less
// than warnEvery ago; the next line says how many runs went unlogged.
func (l *listener) warn(err error) {
	now := time.Now()
	l.mu.Lock()
	if !l.warned.IsZero() && now.Sub(l.warned) < warnEvery {
		l.unlogged++
		l.mu.Unlock()
		return
	}
	n := l.unlogged
	l.warned, l.unlogged = now, 0
	l.mu.Unlock()
	args := []any{"listener", l.Addr().String(), "error", err}
	if n > 0 {
		args = append(args, "runs_not_logged", n)
	}
	l.log.Warn("accepting connections failed; retrying", args...)
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
