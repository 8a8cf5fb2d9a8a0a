package tunnel

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Lines the peer's frames cause (a stream started, refused or reset, a dial
// that failed) are rate-limited per message: a peer can send thousands of
// frames a second, each worth a line, and a router's log is a small tmpfs
// file or ring. peerLogBurst lines of one message per peerLogWindow are
// written; the first after a window in which more were dropped says how many.
const (
	peerLogBurst  = 10
	peerLogWindow = 10 * time.Second
)

// peerLog limits the lines of one session.
type peerLog struct {
	mu     sync.Mutex
	bursts map[string]*logBurst
}

type logBurst struct {
	start      time.Time
	n          int // lines written in the window
	suppressed int // lines dropped since the last one written
}

// log writes msg at level unless peerLogBurst lines of it were written in
// the current window.
func (p *peerLog) log(l *slog.Logger, level slog.Level, msg string, args ...any) {
	if !l.Enabled(context.Background(), level) {
		return
	}
	now := time.Now()
	p.mu.Lock()
	if p.bursts == nil {
		p.bursts = map[string]*logBurst{}
	}
	b := p.bursts[msg]
	if b == nil {
		b = &logBurst{}
		p.bursts[msg] = b
	}
	if now.Sub(b.start) >= peerLogWindow {
		b.start, b.n = now, 0
	}
	if b.n >= peerLogBurst {
		b.suppressed++
		p.mu.Unlock()
		return
	}
	b.n++
	dropped := b.suppressed
	b.suppressed = 0
	p.mu.Unlock()
	if dropped > 0 {
		args = append(args, "suppressed_before", dropped)
	}
	l.Log(context.Background(), level, msg, args...)
}
