package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// waitTimeout bounds every wait in the broker tests.
const waitTimeout = 15 * time.Second

// logRecorder is a slog destination that copies each line to t.Log and
// keeps it for assertions. Lines written after the test ended are dropped
// (paho may report a lost connection from a goroutine of its own).
type logRecorder struct {
	t       testing.TB
	mu      sync.Mutex
	done    bool
	lines   []string
	changed chan struct{} // closed and replaced at each new line
}

func newLogRecorder(t testing.TB) (*slog.Logger, *logRecorder) {
	r := &logRecorder{t: t, changed: make(chan struct{})}
	t.Cleanup(func() {
		r.mu.Lock()
		r.done = true
		r.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug})), r
}

func (r *logRecorder) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return len(p), nil
	}
	r.t.Log(line)
	r.lines = append(r.lines, line)
	close(r.changed)
	r.changed = make(chan struct{})
	return len(p), nil
}

func matchAll(line string, subs []string) bool {
	for _, s := range subs {
		if !strings.Contains(line, s) {
			return false
		}
	}
	return true
}

// hasHint reports whether the log line carries the hint attribute as want
// says: none for "", else exactly one, which contains want. A line with two
// hints (one appended twice) is as wrong as one with the wrong hint.
func hasHint(line, want string) bool {
	n := strings.Count(line, "hint=")
	if want == "" {
		return n == 0
	}
	return n == 1 && strings.Contains(line, want)
}

// count returns how many lines contain all of subs.
func (r *logRecorder) count(subs ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if matchAll(l, subs) {
			n++
		}
	}
	return n
}

// waitCount waits until at least n lines contain all of subs and returns
// the last of them.
func (r *logRecorder) waitCount(n int, subs ...string) string {
	r.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		var found []string
		for _, l := range r.lines {
			if matchAll(l, subs) {
				found = append(found, l)
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if len(found) >= n {
			return found[n-1]
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.t.Fatalf("no %d log lines with %q after %v (found %d)", n, subs, waitTimeout, len(found))
		}
	}
}

func (r *logRecorder) waitFor(subs ...string) string {
	r.t.Helper()
	return r.waitCount(1, subs...)
}

// assertNoSecret fails if any line holds secret.
func (r *logRecorder) assertNoSecret(secret string) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.Contains(l, secret) {
			r.t.Errorf("log line holds a secret: %s", l)
		}
	}
}

// runListener runs l until the test ends or the returned stop is called;
// stop waits for Run to return and checks it returned the context error.
func runListener(t testing.TB, l *Listener) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run = %v, want context.Canceled", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("Run did not return %v after its context ended", waitTimeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func awaitConnection(t testing.TB, l *Listener) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := l.AwaitConnection(ctx); err != nil {
		t.Fatalf("AwaitConnection: %v", err)
	}
}

// notificationSink collects what a listener hands to OnNotification.
type notificationSink struct {
	t  testing.TB
	ch chan Notification
}

func newSink(t testing.TB) *notificationSink {
	return &notificationSink{t: t, ch: make(chan Notification, 32)}
}

func (s *notificationSink) callback(n Notification) {
	select {
	case s.ch <- n:
	default:
		s.t.Errorf("notification sink full, dropped %v", n)
	}
}

func (s *notificationSink) next() Notification {
	s.t.Helper()
	select {
	case n := <-s.ch:
		return n
	case <-time.After(waitTimeout):
		s.t.Fatalf("no notification after %v", waitTimeout)
		return Notification{}
	}
}

// none checks that nothing arrives for d.
func (s *notificationSink) none(d time.Duration) {
	s.t.Helper()
	select {
	case n := <-s.ch:
		s.t.Fatalf("got %v, want no notification", n)
	case <-time.After(d):
	}
}

func notifyPayload(token string, services ...string) []byte {
	if len(services) == 0 {
		services = []string{"SSH"}
	}
	return []byte(`{"clientAccessToken":"` + token + `","clientMode":"destination","region":"us-east-1","services":["` +
		strings.Join(services, `","`) + `"]}`)
}

// testClient is a plain paho MQTT v5 client with a certificate, standing
// in for AWS IoT's publisher and for event consumers.
type testClient struct {
	t   testing.TB
	cli *paho.Client
	got chan *paho.Publish
}

func dialTestClient(t testing.TB, addr string, tc *tls.Config, clientID string) *testClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := (&tls.Dialer{Config: tc}).DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("test client %s: %v", clientID, err)
	}
	c := &testClient{t: t, got: make(chan *paho.Publish, 32)}
	c.cli = paho.NewClient(paho.ClientConfig{
		ClientID: clientID,
		Conn:     packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.got <- pr.Packet:
			default:
			}
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	if _, err := c.cli.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("test client %s: connect: %v", clientID, err)
	}
	t.Cleanup(func() { _ = c.cli.Disconnect(&paho.Disconnect{}) })
	return c
}

func (c *testClient) publish(topic string, payload []byte) {
	c.t.Helper()
	c.publishRetained(topic, payload, false)
}

func (c *testClient) publishRetained(topic string, payload []byte, retain bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.cli.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload, Retain: retain}); err != nil {
		c.t.Fatalf("publishing to %s: %v", topic, err)
	}
}

func (c *testClient) subscribe(topic string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		c.t.Fatalf("subscribing to %s: %v", topic, err)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// testConfig is a listener configuration for thing against the broker at
// addr, with fast retries.
func testConfig(t testing.TB, p *testPKI, addr, thing string, log *slog.Logger) Config {
	certFile, keyFile := p.Client(t, thing)
	return Config{
		ThingName:        thing,
		Broker:           addr,
		CAFile:           p.CAFile,
		CertFile:         certFile,
		KeyFile:          keyFile,
		KeepAlive:        10 * time.Second,
		SessionExpiry:    10 * time.Minute,
		ConnectRetryMin:  20 * time.Millisecond,
		ConnectRetryMax:  250 * time.Millisecond,
		ConnectTimeout:   5 * time.Second,
		OperationTimeout: 5 * time.Second,
		Logger:           log,
	}
}

func newListener(t testing.TB, cfg Config) *Listener {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}
