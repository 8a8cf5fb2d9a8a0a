package agent

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/sshd"
)

// A flood of refused logins and forwards does not push other events out of the
// queue: 20 per window are published, the rest are counted in one event.
func TestRefusalEventsLimited(t *testing.T) {
	a := &Agent{cfg: &Config{ThingName: "dev"}, log: slog.New(slog.DiscardHandler), events: newEventQueue(nil, slog.New(slog.DiscardHandler))}
	a.refusals.report = a.reportSuppressed
	a.emit(&Event{Type: "tunnel-connected"})
	for i := range 1000 {
		a.audit(sshd.Event{Type: sshd.EventLoginFailure, User: "root", Reason: "bad password"})
		if i == 500 {
			a.audit(sshd.Event{Type: sshd.EventLoginSuccess, User: "op"}) // not a refusal: always published
			a.audit(sshd.Event{Type: sshd.EventForward, Allowed: true})
		}
		a.audit(sshd.Event{Type: sshd.EventForward, Allowed: false, Dest: "10.0.0.1:22"})
	}
	count := func() map[string]int {
		a.events.mu.Lock()
		defer a.events.mu.Unlock()
		n := map[string]int{}
		for _, q := range a.events.queue {
			n[q.e.Type]++
		}
		return n
	}
	got := count()
	if got["tunnel-connected"] != 1 || got["ssh-login-success"] != 1 || got["ssh-forward"] != refusalBurst/2+1 || got["ssh-login-failure"] != refusalBurst/2 {
		t.Fatalf("queued events %v, want the tunnel event, the login, the allowed forward and %d refusals", got, refusalBurst)
	}
	if a.events.dropped != 0 {
		t.Fatalf("%d events dropped", a.events.dropped)
	}
	a.refusals.flush() // as the window's end (or the agent's stop) does
	got = count()
	if got["ssh-refusals-suppressed"] != 1 {
		t.Fatalf("queued events %v, want one ssh-refusals-suppressed", got)
	}
	a.events.mu.Lock()
	last := a.events.queue[len(a.events.queue)-1].e
	a.events.mu.Unlock()
	if !strings.HasPrefix(last.Reason, "1980 more refused") || last.Attempts != 1980 {
		t.Errorf("summary reason %q, attempts %d; want the count 1980 in both", last.Reason, last.Attempts)
	}
	// The next window publishes refusals again.
	a.audit(sshd.Event{Type: sshd.EventLoginFailure})
	if got := count()["ssh-login-failure"]; got != refusalBurst/2+1 {
		t.Errorf("after the window: %d login failures queued, want %d", got, refusalBurst/2+1)
	}
}

// Refused sessions are limited as refused logins and forwards are: a client
// that has logged in can ask for sessions past max_sessions in a loop.
func TestRefusalKinds(t *testing.T) {
	for _, tc := range []struct {
		e    sshd.Event
		want bool
	}{
		{sshd.Event{Type: sshd.EventLoginFailure}, true},
		{sshd.Event{Type: sshd.EventSessionRefused, Reason: "too many sessions"}, true},
		{sshd.Event{Type: sshd.EventForward}, true},
		{sshd.Event{Type: sshd.EventForward, Allowed: true}, false},
		{sshd.Event{Type: sshd.EventLoginSuccess}, false},
		{sshd.Event{Type: sshd.EventSessionEnd, Reason: "idle timeout"}, false},
	} {
		if got := refusal(tc.e); got != tc.want {
			t.Errorf("refusal(%s, allowed %v) = %v, want %v", tc.e.Type, tc.e.Allowed, got, tc.want)
		}
	}
}

// The window ends by itself: the summary comes without any further refusal.
func TestRefusalLimitTimer(t *testing.T) {
	reported := make(chan int, 1)
	l := refusalLimit{report: func(n int, _ time.Time) { reported <- n }}
	start := time.Now().Add(-refusalWindow + 50*time.Millisecond) // a window that ends in 50 ms
	for range refusalBurst + 3 {
		l.allow(start)
	}
	select {
	case n := <-reported:
		if n != 3 {
			t.Errorf("reported %d, want 3", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no report at the end of the window")
	}
}
