package agent

import (
	"fmt"
	"sync"
	"time"

	"github.com/porthole-iot/porthole/sshd"
)

// Refused SSH logins and forwards are published one by one only up to
// refusalBurst per refusalWindow. A client that guesses passwords, or asks for a
// forbidden forward in a loop, would otherwise fill the event queue
// (eventQueueSize, oldest dropped) and push out what an operator needs, such as
// the tunnel events. The rest of a window's refusals are counted and reported in
// one "ssh-refusals-suppressed" event when the window ends (or the agent stops).
const (
	refusalBurst  = 20
	refusalWindow = time.Minute
)

// refusalLimit is the window of refused-login and refused-forward events. The
// zero value is ready; report publishes the count of suppressed ones.
type refusalLimit struct {
	mu         sync.Mutex
	start      time.Time // when the current window began; zero: none open
	passed     int       // refusals published in it
	suppressed int       // refusals counted in it, not published
	timer      *time.Timer
	report     func(n int, since time.Time)
}

// refusal says whether e is a refusal the limit applies to.
func refusal(e sshd.Event) bool {
	return e.Type == sshd.EventLoginFailure || e.Type == sshd.EventForward && !e.Allowed
}

// allow says whether one more refusal, at now, is published.
func (l *refusalLimit) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.start.IsZero() || now.Sub(l.start) >= refusalWindow && l.suppressed == 0 {
		l.start, l.passed = now, 0
	}
	if l.passed < refusalBurst {
		l.passed++
		return true
	}
	if l.suppressed == 0 {
		l.timer = time.AfterFunc(time.Until(l.start.Add(refusalWindow)), l.flush)
	}
	l.suppressed++
	return false
}

// flush reports the suppressed count, if any, and closes the window.
func (l *refusalLimit) flush() {
	l.mu.Lock()
	n, since := l.suppressed, l.start
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.start, l.passed, l.suppressed = time.Time{}, 0, 0
	l.mu.Unlock()
	if n > 0 && l.report != nil {
		l.report(n, since)
	}
}

// reportSuppressed is the Agent's refusalLimit.report.
func (a *Agent) reportSuppressed(n int, since time.Time) {
	a.log.Warn("ssh refusals not reported one by one", "count", n, "since", since.UTC().Format(time.RFC3339))
	a.emit(Event{Type: "ssh-refusals-suppressed", Reason: fmt.Sprintf("%d more refused logins or forwards since %s (at most %d per %s are published one by one)",
		n, since.UTC().Format(time.RFC3339), refusalBurst, refusalWindow)})
}
