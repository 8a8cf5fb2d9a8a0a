package notify

import (
	"log/slog"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	low := func(int64) int64 { return 0 }
	high := func(n int64) int64 { return n - 1 }
	// min 1s, max 2min; lowWant and highWant are the ends of the range.
	tests := []struct {
		attempt           int
		lowWant, highWant time.Duration
	}{
		{attempt: 0, lowWant: 0, highWant: time.Second},
		{attempt: 1, lowWant: time.Second, highWant: 2 * time.Second},
		{attempt: 2, lowWant: time.Second, highWant: 4 * time.Second},
		{attempt: 6, lowWant: time.Second, highWant: 64 * time.Second},
		{attempt: 7, lowWant: time.Second, highWant: 2 * time.Minute},
		{attempt: 1000, lowWant: time.Second, highWant: 2 * time.Minute},
	}
	for _, tc := range tests {
		lo := backoff{min: time.Second, max: 2 * time.Minute, rand: low}.delay(tc.attempt)
		hi := backoff{min: time.Second, max: 2 * time.Minute, rand: high}.delay(tc.attempt)
		if lo != tc.lowWant || hi != tc.highWant {
			t.Errorf("delay(%d) ranges over [%v, %v], want [%v, %v]", tc.attempt, lo, hi, tc.lowWant, tc.highWant)
		}
	}
	// The real random source stays in range.
	b := backoff{min: 10 * time.Millisecond, max: 50 * time.Millisecond}
	for i := range 1000 {
		if d := b.delay(1 + i%10); d < b.min || d > b.max {
			t.Fatalf("delay = %v, out of [%v, %v]", d, b.min, b.max)
		}
	}
	// min == max: a constant delay.
	if d := (backoff{min: time.Second, max: time.Second}).delay(3); d != time.Second {
		t.Errorf("constant backoff delay = %v, want 1s", d)
	}
}

// TestShortConnectionsBackOff checks that a connection the broker drops
// soon after accepting it (a duplicate client id, a policy violation) makes
// the next reconnect wait, and that a lasting one resets that.
func TestShortConnectionsBackOff(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	log, rec := newLogRecorder(t)
	l := &Listener{
		cfg:     Config{ClientID: "dev-1"},
		log:     log,
		backoff: backoff{min: time.Second, max: time.Minute, rand: func(n int64) int64 { return n - 1 }},
		ready:   make(chan struct{}),
		now:     func() time.Time { return now },
	}
	// The rand seam takes the top of each range: the reconnect after a lasting
	// connection waits up to min (full jitter below the floor).
	if d := l.reconnectDelay(0); d != time.Second {
		t.Errorf("first reconnect waits up to %v, want 1s", d)
	}
	for i, want := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second} {
		l.upAt = now.Add(-time.Second)
		l.connectionDown()
		if d := l.reconnectDelay(0); d != want {
			t.Errorf("after %d short connections the reconnect waits up to %v, want %v", i+1, d, want)
		}
	}
	// From the third short connection in a row the line says what it may be:
	// a broker that drops the older of two clients with one id (Mosquitto
	// sends no DISCONNECT) leaves nothing else in the log.
	if n := rec.count("hint="); n != 1 {
		t.Errorf("%d reconnect lines with a hint after three short connections, want 1 (the third)", n)
	}
	rec.waitFor("level=WARN", "mqtt reconnecting", "short_connections=3", `client id \"dev-1\"`)
	l.upAt = now.Add(-stableConnection)
	l.connectionDown()
	if d := l.reconnectDelay(0); d != time.Second {
		t.Errorf("after a lasting connection the reconnect waits up to %v, want 1s", d)
	}
	if n := rec.count("hint="); n != 1 {
		t.Errorf("a lasting connection's reconnect line has a hint")
	}
}

// A fleet whose broker drops every connection at once while it still accepts
// new ones (a broker node drained or restarted behind a load balancer, AWS IoT
// Core's SERVER_INITIATED_DISCONNECT "for operational reasons"): every device's
// connection was lasting, so each reconnected after exactly 0 s, in step, into
// the account's connect-rate quota. Here 1000 devices with the defaults compute
// their first reconnect delay after losing a lasting connection.
func TestFleetReconnectIsJittered(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	distinct := map[time.Duration]bool{}
	for range 1000 {
		l := &Listener{
			cfg:     Config{ClientID: "dev"},
			log:     slog.New(slog.DiscardHandler),
			backoff: backoff{min: DefaultConnectRetryMin, max: DefaultConnectRetryMax},
			ready:   make(chan struct{}),
			now:     func() time.Time { return now },
		}
		l.upAt = now.Add(-time.Hour) // a connection that lasted an hour
		l.connectionDown()
		d := l.reconnectDelay(0)
		if d < 0 || d > DefaultConnectRetryMin {
			t.Fatalf("the reconnect after a lasting connection waits %v, want at most %v", d, DefaultConnectRetryMin)
		}
		distinct[d] = true
	}
	if len(distinct) < 100 {
		t.Errorf("1000 devices that lost a lasting connection at the same moment reconnect after %d distinct delays: in step, no jitter",
			len(distinct))
	}
}
