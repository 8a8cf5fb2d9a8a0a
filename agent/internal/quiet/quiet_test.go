package quiet

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestRepeats(t *testing.T) {
	var r Repeats
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		key     string
		at      time.Duration
		loud    bool
		quieted int
	}{
		{"refused", 0, true, 0},                       // news
		{"refused", time.Minute, false, 0},            // the same, soon after
		{"refused", 2 * time.Minute, false, 0},        //
		{"timeout", 3 * time.Minute, true, 0},         // another cause: news
		{"refused", 4 * time.Minute, false, 0},        // alternating causes stay quiet
		{"timeout", 5 * time.Minute, false, 0},        //
		{"refused", Every, true, 3},                   // Every after it was logged: said again, with the count
		{"refused", Every + time.Minute, false, 0},    //
		{"refused", Every - time.Hour, true, 1},       // the clock stepped back: said again
		{"timeout", 3*time.Minute + Every, true, 1},   //
		{"refused", Every - time.Hour + 1, false, 0},  //
		{"dns", Every + 2*time.Minute, true, 0},       // four causes fit
		{"tls", Every + 3*time.Minute, true, 0},       //
		{"refused", Every + 4*time.Minute, true, 1},   // logged at Every-1h: an hour ago
		{"proxy", Every + 5*time.Minute, true, 0},     // a fifth takes the oldest's place
		{"refused", Every + 6*time.Minute, true, 0},   // forgotten: news again
		{"proxy", Every + 7*time.Minute, false, 0},    //
		{"timeout", Every + 8*time.Minute, true, 0},   // its place was taken by refused
		{"timeout", Every + 9*time.Minute, false, 0},  //
		{"dns", Every + 10*time.Minute, true, 0},      // and dns's by timeout
		{"tls", Every + 11*time.Minute, true, 0},      // tls's by dns
		{"tls", Every + 11*time.Minute + 1, false, 0}, //
	}
	for i, s := range steps {
		loud, quieted := r.Next(s.key, t0.Add(s.at))
		if loud != s.loud || quieted != s.quieted {
			t.Errorf("step %d: Next(%q, +%v) = %v, %d; want %v, %d", i, s.key, s.at, loud, quieted, s.loud, s.quieted)
		}
	}
	r.Reset()
	if loud, _ := r.Next("tls", t0.Add(Every+12*time.Minute)); !loud {
		t.Error("after Reset, a cause logged a minute before is not news")
	}
}

func TestLevel(t *testing.T) {
	var r Repeats
	now := time.Now()
	attrs := []any{"error", "x"}
	if l, a := r.Level(slog.LevelWarn, "k", now, attrs); l != slog.LevelWarn || len(a) != 2 {
		t.Errorf("first: %v %v", l, a)
	}
	if l, a := r.Level(slog.LevelWarn, "k", now.Add(time.Second), attrs); l != slog.LevelDebug || len(a) != 2 {
		t.Errorf("repeat: %v %v", l, a)
	}
	l, a := r.Level(slog.LevelWarn, "k", now.Add(Every), attrs)
	if l != slog.LevelWarn || len(a) != 4 || a[2] != "repeated" || a[3] != 1 {
		t.Errorf("after Every: %v %v", l, a)
	}
}

func TestCause(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"dial tcp 192.0.2.1:8883: connect: connection refused", "dial tcp #: connect: connection refused"},
		{"TLS handshake with b:8883: read tcp 192.0.2.7:41234->198.51.100.1:8883: read: connection reset by peer",
			"TLS handshake with #: read tcp #->#: read: connection reset by peer"},
		{"lookup b on 192.168.1.1:53: read udp [fd00::2]:5->[fd00::1]:53: i/o timeout",
			"lookup b on #: read udp [#]#->[#]#: i/o timeout"},
		{"tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2026-12-04T02:00:38Z is before 2026-12-05T02:00:38Z",
			"tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time #-12-04T#Z is before #-12-05T#Z"},
		{"tunnel: handshake refused: HTTP 503: Service Unavailable (channel-id 0a1b2c3d-0000-0000-0000-000000000001)",
			"tunnel: handshake refused: HTTP 503: Service Unavailable (channel-id #-#-#-#-#)"},
		{"tunnel: connecting to h:443 via proxy p:3128: proxy refused CONNECT: 403", "tunnel: connecting to h# via proxy p#: proxy refused CONNECT: 403"},
		{"broker refused the connection, reason 0x86 (bad user name or password)", "broker refused the connection, reason 0x86 (bad user name or password)"},
		{"deadline exceeded", "deadline exceeded"},
		{"", ""},
	} {
		if got := Cause(errors.New(tc.in)); got != tc.want {
			t.Errorf("Cause(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Another status is another cause.
	if a, b := Cause(errors.New("tunnel: handshake refused: HTTP 503")), Cause(errors.New("tunnel: handshake refused: HTTP 429")); a == b {
		t.Errorf("503 and 429 give one key, %q", a)
	}
	// What the attempts of one cause differ by gives one key.
	a := Cause(errors.New("dial tcp 3.1.2.3:8883: i/o timeout"))
	if b := Cause(errors.New("dial tcp 52.94.133.131:8883: i/o timeout")); a != b {
		t.Errorf("two addresses of one name: %q and %q", a, b)
	}
}
