package main

import (
	"bytes"
	"io"
	"sync"
	"time"
)

// logQueue bounds the log output that waits for its destination, in bytes:
// a few hundred lines, a burst of logins' worth.
const logQueue = 64 << 10

// logWriter hands the agent's log lines to a goroutine that writes them to w,
// so that a destination that stops taking them cannot stop the agent. A
// blocked write of the log would hold the log handler's lock, and with it
// every goroutine that logs: the SSH server's logins and the tunnel's streams
// among them, so an operator could not get in while, say, a serial console
// stalls or a supervisor stops draining the agent's pipe. Lines wait in a
// queue of at most logQueue bytes; past it they are dropped and counted, and
// once a line has been written again, the function given to onDropped (a line
// through the agent's logger, in its format) is told how many were lost. The
// goroutine runs while there are lines to write: an idle agent has none.
type logWriter struct {
	w io.Writer

	mu      sync.Mutex
	closed  bool
	writing bool // a goroutine is writing the queue
	dropped func(n int)
	queue   [][]byte      // lines waiting, oldest first; queue[0] is being written
	queued  int           // their bytes
	lost    int           // lines dropped since the last report
	drained chan struct{} // closed when the queue empties
}

func newLogWriter(w io.Writer) *logWriter {
	return &logWriter{w: w}
}

// onDropped sets the function told how many lines were dropped.
func (l *logWriter) onDropped(f func(n int)) {
	l.mu.Lock()
	l.dropped = f
	l.mu.Unlock()
}

// Write queues a copy of p (one log record: slog writes each in one call)
// and returns at once.
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
	case l.queued > 0 && l.queued+len(p) > logQueue: // a longer line alone is taken
		l.lost++
	default:
		l.queue = append(l.queue, bytes.Clone(p))
		l.queued += len(p)
		if !l.writing {
			l.writing = true
			l.drained = make(chan struct{})
			go l.run()
		}
	}
	return len(p), nil
}

// run writes the queued lines in order until the queue is empty.
func (l *logWriter) run() {
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.writing = false
			l.queue = nil // let the backing array of a burst go
			close(l.drained)
			l.mu.Unlock()
			return
		}
		line := l.queue[0]
		l.mu.Unlock()
		l.w.Write(line) // an error is the destination's: nowhere else to say it
		l.mu.Lock()
		l.queue[0] = nil
		l.queue = l.queue[1:]
		l.queued -= len(line)
		lost, report := l.lost, l.dropped
		l.lost = 0
		l.mu.Unlock()
		if lost > 0 && report != nil {
			report(lost)
		}
	}
}

// flush waits until the lines queued so far have been written, or for at
// most d: an agent that exits must not lose its last lines, nor hang on a
// destination that takes none.
func (l *logWriter) flush(d time.Duration) {
	l.mu.Lock()
	if !l.writing {
		l.mu.Unlock()
		return
	}
	drained := l.drained
	l.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
	}
}

// close flushes (for at most d); what is logged after it is dropped (the
// agent is exiting).
func (l *logWriter) close(d time.Duration) {
	l.flush(d)
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}
