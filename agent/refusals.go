//go:build linux

package agent

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/sshd"
)

// Refused SSH logins, sessions and forwards are published one by one only up to
// refusalBurst per refusalWindow. A client that guesses passwords, or asks for a
// forbidden forward or a session past max_sessions in a loop, would otherwise
// fill the event queue
// (eventQueueSize, oldest dropped) and push out what an operator needs, such as
// the tunnel events. The rest of a window's refusals are counted and reported in
// one "ssh-refusals-suppressed" event when the window ends (or the agent stops).
const (
	refusalBurst  = 20
	refusalWindow = time.Minute
)

// Rejected notifications are published one by one only up to rejectionBurst per
// rejectionWindow, the rest counted in one "notification-rejections-suppressed"
// event. AWS publishes only valid notifications, so a rejection is rare and worth
// an event; a stream of them is a broken or hostile publisher on the notify
// topic, and each event is a billed QoS 1 publish.
const (
	rejectionBurst  = 5
	rejectionWindow = 10 * time.Minute
)

// refusalLimit is a window of events published one by one (refused logins,
// sessions and forwards, rejected notifications). The zero value lets refusalBurst through
// per refusalWindow; report publishes the count of suppressed ones.
type refusalLimit struct {
	burst  int           // zero: refusalBurst
	window time.Duration // zero: refusalWindow

	mu         sync.Mutex
	start      time.Time // when the current window began; zero: none open
	passed     int       // refusals published in it
	suppressed int       // refusals counted in it, not published
	timer      *time.Timer
	report     func(n int, since time.Time)
}

// refusal says whether e is a refusal the limit applies to.
func refusal(e sshd.Event) bool {
	return e.Type == sshd.EventLoginFailure || e.Type == sshd.EventSessionRefused || e.Type == sshd.EventForward && !e.Allowed
}

// allow says whether one more refusal, at now, is published.
func (l *refusalLimit) allow(now time.Time) bool {
	burst, window := l.limits()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.start.IsZero() || now.Sub(l.start) >= window && l.suppressed == 0 {
		l.start, l.passed = now, 0
	}
	if l.passed < burst {
		l.passed++
		return true
	}
	if l.suppressed == 0 {
		l.timer = time.AfterFunc(time.Until(l.start.Add(window)), l.flush)
	}
	l.suppressed++
	return false
}

func (l *refusalLimit) limits() (int, time.Duration) {
	burst, window := l.burst, l.window
	if burst == 0 {
		burst = refusalBurst
	}
	if window == 0 {
		window = refusalWindow
	}
	return burst, window
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
	a.log.Warn("ssh refusals not reported one by one", "count", n, "since", utc(since))
	a.emit(&Event{Type: "ssh-refusals-suppressed", Attempts: n, Reason: fmt.Sprintf("%d more refused logins, sessions or forwards since %s (at most %d per %s are published one by one)",
		n, utc(since), refusalBurst, refusalWindow)})
}

// rejected is the notify listener's OnRejected: a notification that is not valid
// is published as a notification-rejected event with the reason, within the
// limit. The reason names the field and never holds the token or the payload
// (notify.ParseNotification); the listener has logged it already.
func (a *Agent) rejected(err error) {
	a.rejectNotification(Event{Reason: strings.TrimPrefix(err.Error(), notify.ErrInvalidNotification.Error()+": ")})
}

// rejectNotification publishes e as a notification-rejected event, unless the
// limit on them is reached.
func (a *Agent) rejectNotification(e Event) {
	a.mu.Lock()
	a.rejectNotificationLocked(e)
	a.mu.Unlock()
}

// rejectNotificationLocked is rejectNotification for a caller that holds a.mu
// (admit, refusing a tunnel past max_tunnels).
//
// Once the agent stops, rejections are only logged: the count was flushed on
// the way out, and a new window would arm a timer that outlives Run.
func (a *Agent) rejectNotificationLocked(e Event) {
	stopping := a.ctx != nil && a.ctx.Err() != nil
	if a.events == nil || stopping || !a.rejections.allow(time.Now()) {
		return
	}
	e.Type = "notification-rejected"
	a.emit(&e)
}

// reportRejections is the Agent's rejections.report.
func (a *Agent) reportRejections(n int, since time.Time) {
	a.log.Warn("rejected notifications not reported one by one", "count", n, "since", utc(since))
	a.emit(&Event{Type: "notification-rejections-suppressed", Attempts: n, Reason: fmt.Sprintf("%d more notifications rejected since %s (at most %d per %s are published one by one)",
		n, utc(since), rejectionBurst, rejectionWindow)})
}
