package stack

import (
	"bytes"
	"regexp"
	"sync"
	"testing"
	"time"
)

// Log collects a process's output and lets a test wait for a line.
type Log struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	cond    chan struct{}
	stalled chan struct{} // non-nil: Write waits until it is closed
}

// NewLog makes an empty Log.
func NewLog() *Log { return &Log{cond: make(chan struct{}, 1)} }

// Stall makes Write wait until Resume: a process whose output exec copies
// into the Log through a pipe then blocks in its writes once the pipe is
// full, as with a log destination that stops reading.
func (l *Log) Stall() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stalled == nil {
		l.stalled = make(chan struct{})
	}
}

// Resume lets a stalled Log take writes again.
func (l *Log) Resume() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stalled != nil {
		close(l.stalled)
		l.stalled = nil
	}
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	stalled := l.stalled
	l.mu.Unlock()
	if stalled != nil {
		<-stalled
	}
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	select {
	case l.cond <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Len is how many bytes the log holds: an offset for Wait.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

// Wait returns the first match of re after offset from, waiting up to d; the
// test fails if none comes.
func (l *Log) Wait(tb testing.TB, re *regexp.Regexp, from int, d time.Duration) []string {
	tb.Helper()
	m := l.Await(re, from, d)
	if m == nil {
		tb.Fatalf("no line matching %q within %v; log:\n%s", re, d, l)
	}
	return m
}

// Await returns the first match of re after offset from, waiting up to d, or
// nil. A process's log trails what it does (the agent queues its lines, and
// a pipe and a copying goroutine lie between), so a test that looks for the
// line of something it just saw happen waits for it.
func (l *Log) Await(re *regexp.Regexp, from int, d time.Duration) []string {
	deadline := time.After(d)
	for {
		s := l.String()
		if from < len(s) {
			if m := re.FindStringSubmatch(s[from:]); m != nil {
				return m
			}
		}
		select {
		case <-l.cond:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return nil
		}
	}
}
