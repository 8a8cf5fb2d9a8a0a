// Package acceptretry wraps a net.Listener so that Accept waits out the errors
// that pass by themselves (tunnel.TemporaryAcceptError: out of descriptors or
// memory for a moment) instead of returning them, and says so once at Warn.
// The host tools' servers need it because the loops they hand their listeners
// to do not: net/http's Serve returns on ENOBUFS and ENOMEM (and tunneld then
// exits, cutting every tunnel) and logs EMFILE only to its ErrorLog, and
// mochi-mqtt's listeners stop accepting at the first error of any kind,
// leaving the port open with nobody serving its backlog. The agent's own
// accept loops (sshd, porthole connect) retry by themselves and do not use it.
//
// It is not a rate limiter: a listener that fails for good (closed, or any
// error TemporaryAcceptError does not name) returns the error at once.
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

// Wrap returns l whose Accept retries temporary errors, waiting 5 ms doubling
// to 1 s between attempts, and logs the first of each run of them to log at
// Warn (nil means discard). Closing it ends a wait at once.
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
			l.log.Warn("accepting connections failed; retrying", "listener", l.Addr().String(), "error", err)
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

func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
