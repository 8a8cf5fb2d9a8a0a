package tunnel_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/quiet"
	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// TestRetryLogSaysLostOnce: once a connection is lost, the attempts that
// follow and fail to connect (the service is down: tunneld restarting, a lab
// stopped) are not each a lost connection. Every line said "tunnel connection
// lost, reconnecting" with "connection refused", for as long as it lasted,
// when nothing had connected since the first.
func TestRetryLogSaysLostOnce(t *testing.T) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	tok, _ := tunnel.NewAccessToken(tun.DestinationToken)
	var logged testlog.Lines
	d := &tunnel.Destination{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: tok,
		RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond, Logger: slogDebugTo(&logged, t)}, Dialer: tunnel.Targets{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	// Connected as the destination sees it: the service counts a connect
	// before the destination has read the upgrade's answer.
	for deadline := time.Now().Add(10 * time.Second); logged.Count("tunnel connected") < 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("destination did not connect")
		}
	}
	srv.Close() // the connection is lost, and the service stays down
	for deadline := time.Now().Add(10 * time.Second); logged.Count("retrying") < 5; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts in 10 s", logged.Count("retrying"))
		}
	}
	cancel()
	<-done
	stopped = true
	if n := logged.Count("tunnel connection lost"); n != 1 {
		t.Errorf("%d lines say the connection was lost, want 1 (one connection was lost)", n)
	}
	if n := logged.Count("cannot reconnect to the tunnel, retrying"); n < 3 {
		t.Errorf("%d lines say a reconnect failed, want one per failed attempt (at least 3)", n)
	}
	// The same failure again is at debug level (quiet.Every). The service
	// going down may first answer 503, then refuse: two causes, a WARN each.
	warned := map[string]bool{}
	for _, line := range strings.Split(logged.String(), "\n") {
		_, e, ok := strings.Cut(line, `level=WARN msg="cannot reconnect to the tunnel, retrying" mode=destination error=`)
		if !ok {
			continue
		}
		if e, _, _ = strings.Cut(e, " delay="); warned[quiet.Cause(errors.New(e))] {
			t.Errorf("a second WARN line for the same failure: %s", line)
		}
		warned[quiet.Cause(errors.New(e))] = true
	}
	if len(warned) == 0 {
		t.Error("no WARN line says a reconnect failed")
	}
}

// TestHandshakeTimeoutSaysSo: an endpoint that takes the TCP connection and
// never answers (a firewall's tarpit, a port that is not the service's) ended
// each attempt with a bare "context deadline exceeded".
func TestHandshakeTimeoutSaysSo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			held <- c // silent until the test ends
		}
	}()
	defer func() {
		select {
		case c := <-held:
			c.Close()
		default:
		}
	}()
	tok, _ := tunnel.NewAccessToken("t")
	cfg := tunnel.Config{Endpoint: "ws://" + ln.Addr().String(), AllowInsecureWebSocket: true, AccessToken: tok, HandshakeTimeout: 200 * time.Millisecond}
	_, err = tunnel.Dial(context.Background(), &cfg, tunnel.ModeSource)
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Fatalf("Dial = %v, want the endpoint named as not answering within 200ms", err)
	}
}

// A service that refuses each attempt alike for a while (503 in an outage,
// 429 when throttled) gives each refusal a channel-id of its own, as AWS does
// on many error responses: one cause all the same, where each channel-id was
// a new one and each attempt a WARN, for as long as the tunnel is retried.
func TestTemporaryRefusalsFailAlike(t *testing.T) {
	var n atomic.Int64
	logged, stop := retryAgainst(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("channel-id", fmt.Sprintf("0a1b2c3d-0000-0000-0000-%012d", n.Add(1)))
		http.Error(w, "Service Unavailable", http.StatusServiceUnavailable)
	}))
	waitLines(t, logged, "cannot connect to the tunnel, retrying", 8)
	stop()
	if w := logged.Count(`level=WARN msg="cannot connect to the tunnel, retrying"`); w != 1 {
		t.Errorf("%d WARN lines for %d attempts refused alike (503), want 1 (the others at debug level)", w, logged.Count("retrying"))
	}
}

// Another status is another cause, said at once: the service's 503 (an
// outage) turning into 429 (this device throttled) was taken for the same
// failure, and the 429 went to debug level for up to 15 minutes.
func TestAnotherRefusalIsNews(t *testing.T) {
	var status atomic.Int64
	status.Store(http.StatusServiceUnavailable)
	logged, stop := retryAgainst(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	waitLines(t, logged, "HTTP 503", 3)
	status.Store(http.StatusTooManyRequests)
	waitLines(t, logged, "HTTP 429", 3)
	stop()
	for _, s := range []string{"HTTP 503", "HTTP 429"} {
		if n := logged.Count(`level=WARN msg="cannot connect to the tunnel, retrying" mode=destination error="tunnel: handshake refused: ` + s); n != 1 {
			t.Errorf("%d WARN lines for the refusals with %s, want 1 each:\n%s", n, s, logged.String())
		}
	}
}

// retryAgainst runs a destination, retrying every few milliseconds and logging
// at debug level, against a service that answers each handshake with h, until
// stop is called.
func retryAgainst(t *testing.T, h http.Handler) (logged *testlog.Lines, stop func()) {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	logged = new(testlog.Lines)
	d := &tunnel.Destination{Config: tunnel.Config{Endpoint: "ws://" + srv.Listener.Addr().String(), AllowInsecureWebSocket: true,
		AccessToken: mustToken(t, "t"), RetryMin: 5 * time.Millisecond, RetryMax: 10 * time.Millisecond, Logger: slogDebugTo(logged, t)},
		Dialer: tunnel.Targets{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return logged, stop
}

// waitLines waits up to 10 s for n lines of logged that hold s.
func waitLines(t *testing.T, logged *testlog.Lines, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); logged.Count(s) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d lines with %q in 10 s, want %d", logged.Count(s), s, n)
		}
	}
}
