package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/sshd"
)

// TestSSHEventJSON: an ssh-* event carries sshd's audit record as sshd
// writes it, the certificate's CA (ca_fingerprint) included.
func TestSSHEventJSON(t *testing.T) {
	e := Event{Type: "ssh-login-success", Thing: "t", SSH: &sshd.Event{Type: sshd.EventLoginSuccess, User: "root", Method: "publickey",
		KeyFingerprint: "SHA256:key", CertID: "op", CertSerial: 7, CAFingerprint: "SHA256:ca"}}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `"ssh":{"type":"login-success","user":"root","method":"publickey","key_fingerprint":"SHA256:key","cert_id":"op","cert_serial":7,"ca_fingerprint":"SHA256:ca"}`
	if !strings.Contains(string(b), want) {
		t.Errorf("json.Marshal = %s, want it to hold %s", b, want)
	}
}

// TestEventQueueDropsRefusedEvents: an event the broker refuses (not authorized
// for the topic, say) is dropped with a warning, instead of being retried forever
// in front of every later event; an event that failed because the broker was
// away is sent again.
func TestEventQueueDropsRefusedEvents(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	calls := map[string]int{}
	publish := func(_ context.Context, b []byte) error {
		var e Event
		json.Unmarshal(b, &e)
		mu.Lock()
		defer mu.Unlock()
		calls[e.Type]++
		switch {
		case strings.HasPrefix(e.Type, "refused"):
			return fmt.Errorf("notify: publishing to t: %w, reason 0x87 (not authorized)", notify.ErrRefused)
		case e.Type == "away" && calls[e.Type] == 1:
			return errors.New("not connected")
		}
		sent = append(sent, e.Type)
		return nil
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	q := newEventQueue(publish, slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil)))
	for _, typ := range []string{"refused-1", "first", "refused-2", "away", "last"} {
		q.add(Event{Type: typ})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.run(ctx); q.finish(time.Second); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(sent)
		mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(sent, " "); got != "first away last" {
		t.Fatalf("published %q, want \"first away last\"", got)
	}
	if calls["refused-1"] != 1 || calls["refused-2"] != 1 {
		t.Fatalf("refused events tried %d and %d times, want once each", calls["refused-1"], calls["refused-2"])
	}
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logs.String(), "event refused by the broker, dropped"); n != 1 {
		t.Fatalf("%d warnings for two refusals within a minute, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "not authorized") {
		t.Fatalf("the warning does not say why:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A full queue (the broker away or slow) drops stream events first: anyone
// holding the source token can open thousands of streams, and they must not
// push the logins of the audit trail out, their own included.
func TestEventQueueKeepsAuditEventsOverStreamEvents(t *testing.T) {
	q := newEventQueue(func(context.Context, []byte) error { return nil }, slog.New(slog.DiscardHandler))
	q.add(Event{Type: "tunnel-connected"})
	for i := range eventQueueSize {
		q.add(Event{Type: "stream-start", Service: fmt.Sprint(i)})
		if i == 10 {
			q.add(Event{Type: "ssh-login-success", Reason: "root"})
		}
	}
	for range 3 * eventQueueSize {
		q.add(Event{Type: "stream-end"})
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var kept []string
	for _, qe := range q.queue {
		if !strings.HasPrefix(qe.e.Type, "stream-") {
			kept = append(kept, qe.e.Type)
		}
	}
	if len(q.queue) != eventQueueSize || strings.Join(kept, ",") != "tunnel-connected,ssh-login-success" {
		t.Errorf("queue of %d holds %q besides stream events; want %d and the tunnel and login events, in order", len(q.queue), kept, eventQueueSize)
	}
}

// Allowed forwards go before the audit trail too: an `ssh -L` to a web UI
// opens one per HTTP connection, and a flood of them pushed the login out.
func TestEventQueueKeepsAuditEventsOverAllowedForwards(t *testing.T) {
	q := newEventQueue(func(context.Context, []byte) error { return nil }, slog.New(slog.DiscardHandler))
	q.add(Event{Type: "ssh-login-success"})
	q.add(Event{Type: "ssh-forward", SSH: &sshd.Event{Type: sshd.EventForward, Allowed: false}})
	for range 2 * eventQueueSize {
		q.add(Event{Type: "ssh-forward", SSH: &sshd.Event{Type: sshd.EventForward, Allowed: true}})
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if got := q.queue[0].e.Type + "," + q.queue[1].e.Type; got != "ssh-login-success,ssh-forward" || q.queue[1].e.SSH.Allowed {
		t.Errorf("the queue starts %s (allowed %v); want the login and the refused forward kept", got, q.queue[1].e.SSH.Allowed)
	}
}

// The first event published after a gap counts the events lost in it, dropped
// by a full queue or refused by the broker: they went to the log only, and a
// consumer saw a stream-end without its start and could not tell.
func TestEventQueueCountsLostEventsOnTheNext(t *testing.T) {
	var mu sync.Mutex
	var got []Event
	away := true
	publish := func(_ context.Context, b []byte) error {
		var e Event
		json.Unmarshal(b, &e)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case away:
			return errors.New("not connected")
		case e.Type == "refused":
			return fmt.Errorf("notify: publishing to t: %w", notify.ErrRefused)
		}
		got = append(got, e)
		return nil
	}
	q := newEventQueue(publish, slog.New(slog.DiscardHandler))
	q.retry = 5 * time.Millisecond
	for range eventQueueSize + 10 {
		q.add(Event{Type: "stream-start"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	time.Sleep(50 * time.Millisecond) // a few failed attempts
	mu.Lock()
	away = false
	mu.Unlock()
	waitN := func(n int) []Event {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			mu.Lock()
			g := append([]Event(nil), got...)
			mu.Unlock()
			if len(g) >= n || time.Now().After(deadline) {
				return g
			}
		}
	}
	g := waitN(eventQueueSize)
	var counts []int
	for _, e := range g {
		if e.Dropped != 0 {
			counts = append(counts, e.Dropped)
		}
	}
	if len(g) != eventQueueSize || len(counts) != 1 || g[0].Dropped != 10 {
		t.Fatalf("after an outage that dropped 10: %d published, lost counts %v, the first's %d; want %d, one count of 10 on the first",
			len(g), counts, g[0].Dropped, eventQueueSize)
	}
	q.add(Event{Type: "refused"})
	q.add(Event{Type: "after"})
	if g := waitN(eventQueueSize + 1); len(g) != eventQueueSize+1 || g[eventQueueSize].Type != "after" || g[eventQueueSize].Dropped != 1 {
		t.Fatalf("the event after a refused one: %+v, want it to count 1 lost", g[len(g)-1])
	}
}

// A dial the tunnel gave up (the peer reset or superseded its stream, or the
// session ended) is not a refusal: a peer that starts and resets streams to a
// slow target would otherwise turn each into a published event. A target that
// refuses is one.
func TestStreamRefusedOnlyWhenTheTargetRefuses(t *testing.T) {
	a := &Agent{cfg: &Config{ThingName: "dev-1"}, events: newEventQueue(func(context.Context, []byte) error { return nil }, slog.New(slog.DiscardHandler))}
	d := a.countStreams(&session{fp: "fp"}, tunnel.DialerFunc(func(ctx context.Context, _ string) (net.Conn, error) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errors.New("connection refused")
	}), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d.DialService(ctx, "SSH")
	d.DialService(context.Background(), "SSH")
	a.events.mu.Lock()
	defer a.events.mu.Unlock()
	if len(a.events.queue) != 1 || a.events.queue[0].e.Reason != "connection refused" {
		t.Errorf("queued events %+v, want one stream-refused for the refusing target", a.events.queue)
	}
}

// A target that does not answer within the tunnel's dial timeout (10 s: a
// host that is off, a firewall that drops) refuses the stream as one that
// resets it does: the tunnel resets the stream and logs the failure. Its
// dial's context has ended by then, its deadline passed, and the event was
// left out with the dials the tunnel gave up.
func TestStreamRefusedWhenTheTargetDoesNotAnswer(t *testing.T) {
	a := &Agent{cfg: &Config{ThingName: "dev-1"}, events: newEventQueue(func(context.Context, []byte) error { return nil }, slog.New(slog.DiscardHandler))}
	d := a.countStreams(&session{fp: "fp"}, tunnel.DialerFunc(func(ctx context.Context, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, errors.New("dial tcp 192.0.2.1:80: i/o timeout")
	}), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithDeadline(context.Background(), time.Now()) // the dial timeout, passed
	defer cancel()
	d.DialService(ctx, "SSH")
	a.events.mu.Lock()
	defer a.events.mu.Unlock()
	if len(a.events.queue) != 1 || a.events.queue[0].e.Type != "stream-refused" || !strings.Contains(a.events.queue[0].e.Reason, "i/o timeout") {
		t.Errorf("queued events %+v, want one stream-refused for the target that did not answer", a.events.queue)
	}
}

// A stream the target refuses is a stream event as stream-start and stream-end
// are: anyone holding the source token can open thousands to a service whose
// target is down (or not mapped), each a stream-refused. While the broker is
// away they must not push the logins and tunnel events out of a full queue.
func TestEventQueueKeepsAuditEventsOverStreamRefusals(t *testing.T) {
	a := &Agent{cfg: &Config{ThingName: "dev-1"}, events: newEventQueue(func(context.Context, []byte) error { return nil }, slog.New(slog.DiscardHandler))}
	a.emit(&Event{Type: "tunnel-connected"})
	a.emit(&Event{Type: "ssh-login-success"})
	d := a.countStreams(&session{fp: "fp"}, tunnel.DialerFunc(func(context.Context, string) (net.Conn, error) {
		return nil, errors.New("connection refused")
	}), slog.New(slog.DiscardHandler))
	for range 2 * eventQueueSize {
		d.DialService(context.Background(), "HTTP")
	}
	a.events.mu.Lock()
	defer a.events.mu.Unlock()
	var kept []string
	for _, qe := range a.events.queue {
		if !strings.HasPrefix(qe.e.Type, "stream-") {
			kept = append(kept, qe.e.Type)
		}
	}
	if strings.Join(kept, ",") != "tunnel-connected,ssh-login-success" {
		t.Errorf("after %d refused streams the queue holds %q besides stream events; want the tunnel and login events", 2*eventQueueSize, kept)
	}
}

// Every event the broker refuses is counted in a warning: after the first, at
// most one line a minute says how many since, and those refused in the last
// minute before the agent stops are in the warning of the stop, as unsent and
// dropped ones are, instead of lost without a trace.
func TestEventQueueReportsRefusedEventsAtStop(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	q := newEventQueue(func(context.Context, []byte) error {
		return fmt.Errorf("notify: publishing to t: %w, reason 0x87 (not authorized)", notify.ErrRefused)
	}, slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)))
	for range 3 {
		q.add(Event{Type: "ssh-login-success"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.run(ctx); q.finish(time.Second); close(done) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		q.mu.Lock()
		n := len(q.queue)
		q.mu.Unlock()
		if n == 0 || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	counted := 0
	for _, l := range strings.Split(logs.String(), "\n") {
		if i := strings.Index(l, " refused="); i >= 0 {
			var n int
			fmt.Sscanf(l[i+len(" refused="):], "%d", &n)
			counted += n
		}
	}
	if counted != 3 {
		t.Errorf("3 events refused by the broker, the warnings count %d:\n%s", counted, logs.String())
	}
}

// A slow broker (a PUBACK outstanding while the queue fills) must not make the
// queue drop the event it is publishing: delivered, it was counted as dropped
// all the same, and refused, counted twice.
func TestEventQueueInFlightEventNotCountedDropped(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error // what the slow publish returns
	}{
		{"delivered", nil},
		{"refused", notify.ErrRefused},
		{"retried", errors.New("not connected")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls, delivered atomic.Int32
			inFlight, release := make(chan struct{}), make(chan struct{})
			var logs bytes.Buffer
			var mu sync.Mutex
			q := newEventQueue(func(context.Context, []byte) error {
				if calls.Add(1) == 1 {
					close(inFlight)
					<-release
					if tc.err != nil {
						return tc.err
					}
				}
				delivered.Add(1)
				return nil
			}, slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)))
			stop := runFastQueue(q)
			q.add(Event{Type: "stream-start"})
			<-inFlight
			for range eventQueueSize { // one more than fits
				q.add(Event{Type: "ssh-login-failure"})
			}
			close(release)
			waitQueueEmpty(q)
			stop()
			mu.Lock()
			defer mu.Unlock()
			counted := loggedCount(logs.String(), "dropped") + loggedCount(logs.String(), "refused")
			if lost := eventQueueSize + 1 - int(delivered.Load()); counted != lost {
				t.Errorf("%d of %d events lost, the warnings count %d:\n%s", lost, eventQueueSize+1, counted, logs.String())
			}
		})
	}
}

// While the broker is away, a full queue that keeps dropping events (a busy
// service behind a tunnel makes two stream events per connection) is reported
// as refused events are, at most once a minute, not at every retry of its head;
// the rest when the queue has caught up.
func TestEventQueueDropWarningsDuringOutage(t *testing.T) {
	var away atomic.Bool
	away.Store(true)
	var logs bytes.Buffer
	var mu sync.Mutex
	q := newEventQueue(func(context.Context, []byte) error {
		if away.Load() {
			return errors.New("notify: not connected: cannot publish")
		}
		return nil
	}, slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)))
	stop := runFastQueue(q)
	for range 20 { // many retries, dropping events between them
		for range eventQueueSize / 8 {
			q.add(Event{Type: "stream-start"})
			q.add(Event{Type: "stream-end"})
		}
		time.Sleep(5 * time.Millisecond)
	}
	const msg, want = "events dropped while the broker was unreachable or slow", 20*eventQueueSize/4 - eventQueueSize
	mu.Lock()
	during := strings.Count(logs.String(), msg)
	mu.Unlock()
	away.Store(false)
	waitQueueEmpty(q)
	stop()
	mu.Lock()
	defer mu.Unlock()
	if during != 1 {
		t.Errorf("%d warnings about dropped events during the outage, want one (then at most one a minute):\n%s", during, logs.String())
	}
	if n, dropped := strings.Count(logs.String(), msg), loggedCount(logs.String(), "dropped"); n != 2 || dropped != want {
		t.Errorf("%d warnings count %d dropped events, want 2 (the first, the rest once caught up) counting %d:\n%s", n, dropped, want, logs.String())
	}
}

// loggedCount sums the values of key in a text handler's lines.
func loggedCount(logs, key string) int {
	sum := 0
	for _, l := range strings.Split(logs, "\n") {
		if i := strings.Index(l, " "+key+"="); i >= 0 {
			var n int
			fmt.Sscanf(l[i+len(key)+2:], "%d", &n)
			sum += n
		}
	}
	return sum
}

// waitQueueEmpty waits up to 5 s for q to have published everything.
func waitQueueEmpty(q *eventQueue) {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		q.mu.Lock()
		n := len(q.queue)
		q.mu.Unlock()
		if n == 0 || time.Now().After(deadline) {
			return
		}
	}
}

// runFastQueue runs q, retrying a failed publish after 1 ms, until the
// returned stop is called (which waits for it to end).
func runFastQueue(q *eventQueue) (stop func()) {
	q.retry = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.run(ctx); q.finish(time.Second); close(done) }()
	return func() { cancel(); <-done }
}
