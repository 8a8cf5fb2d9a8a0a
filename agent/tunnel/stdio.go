package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// errStdioDone is the cause given to the WebSocket when the stdio connection ends.
var errStdioDone = errors.New("tunnel: stdio connection ended")

// errStdioCut ends a stdio connection cut short: the device's end reset it (its
// agent stopped, the service reset the session) or it stalled. As a -L
// client's reset, it must not look like the connection's normal end.
var errStdioCut = errors.New("tunnel: the connection was cut short (the device's agent stopped, the service reset the session, " +
	"or stdout stalled): what it carried may be incomplete")

// ErrRefused is a stdio connection the peer ended before it sent anything: the
// device's agent refused it (its service did not answer), has not joined, or
// lost its own connection to the service, which then resets the stream (on the
// wire the three look the same: a STREAM_RESET).
var ErrRefused = errors.New("tunnel: the device ended the connection before it answered " +
	"(its service refused it, or its agent has not joined the tunnel or lost its connection to it)")

// RunStdio carries one connection of service over in and out instead of a listener,
// so that `ssh -o ProxyCommand='porthole connect --stdio …'` needs no local port. An
// empty service means the tunnel's only service. It returns nil when the connection
// ends normally, ctx's error when ctx ends first (with ErrStoppedOpen if the
// connection was open), ErrRefused when the peer ends it before sending anything,
// and an error when it is cut short or the tunnel is lost while it is open (a
// reconnect cannot resume the connection). Listen is ignored. The goroutine that
// reads in ends when in reports EOF or an error.
func (src *Source) RunStdio(ctx context.Context, service string, in io.Reader, out io.Writer) error {
	opt := src.options()
	opt.stdio = true
	cfg := src.Config
	cfg.Logger = opt.log
	rwc := newStdioConn(in, out)
	defer func() {
		rwc.Close()
		// What the device sent goes out before RunStdio returns (the process
		// then exits), unless ctx has ended: an out nobody reads must not keep
		// Ctrl-C waiting.
		select {
		case <-rwc.flushed:
		case <-ctx.Done():
		}
	}()
	var ended *stopError // how the connection ended, once it has
	opened := false
	err := run(ctx, cfg, ModeSource, func(ctx context.Context, c *Conn) error {
		var l *link
		err := src.serve(ctx, c, opt, func(ids []string) error {
			name := service
			if name == "" && len(ids) == 1 {
				name = ids[0]
			}
			if name == "" && len(ids) > 1 {
				// As plan's unnamed mapping: which service is meant is not ours to guess.
				return errOneService("an unnamed service", ids)
			}
			// As plan's: a V1 destination takes the stream for the one service it
			// serves, whichever was named.
			if src.peerVersion() == V1 && len(ids) > 1 {
				return errOneService("a V1 destination", ids)
			}
			// A tunnel without services takes no service id (spec §1.5): as
			// plan's, a named one is refused, not sent for the service to close
			// the connection on. A V1 connection has no SERVICE_IDS to check.
			if (len(ids) > 0 || name != "" && c.Version() > V1) && !containsString(ids, name) {
				return errNotInTunnel(name, ids)
			}
			r := serviceRoute{wire: name, name: name}
			if src.peerVersion() == V1 {
				r.wire = ""
			}
			src.mu.Lock()
			s := src.cur
			src.mu.Unlock()
			if l = src.open(s, r, rwc); l != nil {
				go func() { // the session ends with its one connection
					// Once its pumps have returned, not when it is closed: the
					// reset of a local end is sent after the close, and an abort
					// before it would leave the device's end of the stream open.
					<-l.idle
					s.mu.Lock()
					refused := !l.answered && l.quiet.Load()
					s.mu.Unlock()
					cause := errStdioDone
					if refused {
						cause = ErrRefused
					} else if l.reset.Load() {
						cause = errStdioCut
					}
					c.finish(cause, protocolCloseWait)
				}()
			}
			return nil
		})
		switch {
		case l == nil:
			return err
		case errors.Is(err, errStdioDone):
			ended = &stopError{}
		case errors.Is(err, ErrRefused), errors.Is(err, errStdioCut):
			ended = &stopError{err: err}
		case ctx.Err() != nil: // stopped with it open: run returns nil
			opened = true
			return err
		default:
			ended = &stopError{err: &lostError{err: err}}
		}
		return ended
	})
	switch {
	case ended != nil: // though ctx may have ended since
		return ended.err
	case err == nil && opened:
		return fmt.Errorf("%w: %w", ErrStoppedOpen, ctx.Err())
	case err == nil:
		return ctx.Err()
	}
	return err
}

// ErrStoppedOpen comes with ctx's error from RunStdio when ctx ended while its
// connection was open: what the connection carried may be cut short.
var ErrStoppedOpen = errors.New("tunnel: stopped with the connection open")

// lostError is a tunnel lost while the stdio connection was open.
type lostError struct{ err error }

func (e *lostError) Error() string {
	return "tunnel: lost while the connection was open: " + strings.TrimPrefix(e.err.Error(), "tunnel: ")
}

func (e *lostError) Unwrap() error { return e.err }

// stopError ends run's reconnect loop with err (nil for a normal end).
type stopError struct{ err error }

func (e *stopError) Error() string {
	if e.err == nil {
		return "tunnel: done"
	}
	return e.err.Error()
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// stdioConn joins a reader and a writer into an io.ReadWriteCloser. Reads come
// through a pipe fed by its own goroutine, so that Close unblocks a pending Read even
// when in (like os.Stdin) cannot be interrupted; writes go through a pipe to a
// goroutine of their own for the same reason: a Write blocked on an out that is
// not read (like os.Stdout, its reader stalled) is unblocked by Close, so that
// the session's teardown, and Ctrl-C, do not wait for it.
type stdioConn struct {
	_       [0]func() // not comparable: no equality function in the binary (docs/size.md)
	pr      *io.PipeReader
	pw      *io.PipeWriter
	flushed chan struct{} // closed when what was written has gone to out (or out failed)
	once    sync.Once
}

func newStdioConn(in io.Reader, out io.Writer) *stdioConn {
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, in)
		pw.CloseWithError(err)
	}()
	or, ow := io.Pipe()
	c := &stdioConn{pr: pr, pw: ow, flushed: make(chan struct{})}
	go func() {
		defer close(c.flushed)
		_, err := io.Copy(out, or)
		or.CloseWithError(err) // a Write after out failed fails too
		if err != nil {
			// out takes no more (its reader, ssh, is gone: EPIPE, SIGPIPE
			// being caught): nothing the device sends can reach anyone, so
			// the connection ends, as at in's end, rather than wait for an
			// in that may stay open.
			pr.Close()
		}
	}()
	return c
}

func (c *stdioConn) Read(p []byte) (int, error)  { return c.pr.Read(p) }
func (c *stdioConn) Write(p []byte) (int, error) { return c.pw.Write(p) }
func (c *stdioConn) Close() error {
	c.once.Do(func() {
		c.pr.Close()
		c.pw.Close() // what the writer goroutine holds still goes to out
	})
	return nil
}
