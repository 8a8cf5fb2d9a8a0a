// Package testlog is a log sink for tests: it keeps the lines a logger writes,
// safe for the goroutines that log while the test reads them.
package testlog

import (
	"strings"
	"sync"
)

// Lines records what is written to it, one entry per Write (a slog handler
// writes one line at a time). The zero value is ready to use.
type Lines struct {
	mu    sync.Mutex
	lines []string
}

func (l *Lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, strings.TrimSpace(string(p)))
	l.mu.Unlock()
	return len(p), nil
}

// String is every line so far, newline-separated.
func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// Count is the number of lines that contain sub.
func (l *Lines) Count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}
