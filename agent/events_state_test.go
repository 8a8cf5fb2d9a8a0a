package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// takeForTest returns the queued events and empties the queue.
func (q *eventQueue) takeForTest() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Event
	for _, qe := range q.queue {
		out = append(out, qe.e)
	}
	q.queue = nil
	return out
}

func eventTypes(es []Event) string {
	var s []string
	for _, e := range es {
		s = append(s, fmt.Sprintf("%s(%s,%d,%s)", e.Type, e.Reason, e.Attempts, e.Duration))
	}
	return strings.Join(s, " ")
}

// A tunnel's events say what changed, not what was retried: a tunnel that cannot
// connect is reported once and then summed up at growing intervals, never as
// "disconnected"; a lost connection is one tunnel-disconnected; an error that ends
// the tunnel is left to tunnel-ended.
func TestTunnelEventsDescribeStateChanges(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 45, 38, 0, time.UTC)
	log := slog.New(slog.DiscardHandler)
	a := &Agent{cfg: &Config{ThingName: "dev"}, log: log, now: func() time.Time { return now },
		events: newEventQueue(nil, log)}
	onState := a.onState(&session{fp: "9ee74176"}, log)
	network := errors.New("dial tcp 127.0.0.1:18443: connect: connection refused")
	step := func(name string, d time.Duration, connected bool, err error, want string) {
		t.Helper()
		now = now.Add(d)
		onState(connected, err)
		if got := eventTypes(a.events.takeForTest()); got != want {
			t.Errorf("%s: events %q, want %q", name, got, want)
		}
	}

	step("first failure", 0, false, network, "tunnel-connect-failed(network,1,)")
	for i := range 7 { // the backoff of the first retries: 0.25 s to 16 s
		step(fmt.Sprintf("retry %d", i+2), time.Duration(1<<i)*250*time.Millisecond, false, network, "")
	}
	step("after a minute", 30*time.Second, false, network, "tunnel-connect-failed(network,9,1m2s)")
	step("a minute later", time.Minute, false, network, "") // the next summary waits 2 min
	step("two minutes later", time.Minute, false, network, "tunnel-connect-failed(network,11,3m2s)")
	for range 30 { // an hour of retries every 2 min (the backoff's cap): summaries after 4, 8, 16, 32 min
		now = now.Add(2 * time.Minute)
		onState(false, network)
	}
	if got := eventTypes(a.events.takeForTest()); strings.Count(got, "tunnel-connect-failed") != 4 {
		t.Errorf("an hour of retries: events %q, want 4 summaries", got)
	}
	step("connected", time.Second, true, nil, "tunnel-connected(,41,)")
	step("connection lost", time.Minute, false, network, "tunnel-disconnected(network,0,)")
	step("reconnect fails", time.Second, false, network, "")
	step("reconnect fails again", 2*time.Second, false, network, "")
	step("reconnected", time.Second, true, nil, "tunnel-connected(,2,)")
	step("closed by the service", time.Minute, false, tunnel.ErrClosedByService, "") // runSession: tunnel-ended

	// A tunnel whose token the service refuses at once: only its tunnel-ended.
	onState = a.onState(&session{fp: "abcd"}, log)
	step("refused token", 0, false, &tunnel.HandshakeError{StatusCode: 400, Body: "Invalid access token"}, "")
	// A temporary refusal is retried, and reported as a failure.
	step("503", 0, false, &tunnel.HandshakeError{StatusCode: 503, Body: "busy"}, "tunnel-connect-failed(handshake refused: 503 busy,1,)")
	step("agent stops", 0, false, context.Canceled, "")
}

// A tunnel that cannot connect because the agent is out of file descriptors
// (a low ulimit -n on a router) is no network failure: the event must not send
// the operator to look at the network.
func TestConnectFailureOutOfDescriptors(t *testing.T) {
	a := &Agent{cfg: &Config{}, log: slog.New(slog.DiscardHandler)}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE} {
		err := fmt.Errorf("tunnel: connecting to example.com: %w",
			&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", errno)})
		if got := a.failureReason(err); got == "network" || !strings.Contains(got, "file descriptors") {
			t.Errorf("failureReason(%v) = %q, want it to say the agent is out of file descriptors", err, got)
		}
	}
}

// A certificate the service's or the proxy's chain does not verify (a device
// without a CA bundle) and a proxy refusing tunnel.https_proxy's credentials
// are no network failures either: the event names them, as porthole connect
// does. A service certificate out of date by a clock after the build (days
// behind or ahead, not a 1970 one) is said to be so, with the clock, as the
// MQTT side says it: tunnel.ca_file, which it was called, has nothing to do
// with it; nor with a certificate of a trusted CA for another host name.
func TestConnectFailureCertificateAndProxy(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	c, tlsErr := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{ServerName: "example.com"})
	if tlsErr == nil {
		c.Close()
		t.Fatal("a self-signed server's certificate verified")
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c, nameErr := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{ServerName: "data.tunneling.iot.example", RootCAs: roots})
	if nameErr == nil {
		c.Close()
		t.Fatal("a certificate for example.com verified for another name")
	}
	now := BuildTime().Add(30 * 24 * time.Hour)
	a := &Agent{cfg: &Config{Tunnel: TunnelConfig{Endpoint: "data.tunneling.iot.example"}}, log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}
	expired := &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired, Detail: "current time ... is after ..."}}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("tunnel: connecting to data.tunneling.iot.eu-west-1.amazonaws.com:443: %w", tlsErr), "certificate check of the service failed (tunnel.ca_file)"},
		{fmt.Errorf("tunnel: connecting to data.tunneling.iot.example:443: %w", nameErr), "certificate is for another host name: check tunnel.endpoint"},
		{fmt.Errorf("tunnel: connecting to data.tunneling.iot.eu-west-1.amazonaws.com:443: %w", expired),
			"the service's TLS certificate has expired or is not yet valid (the clock says " + now.UTC().Format(time.RFC3339) + ")"},
		{&tunnel.ProxyError{Err: fmt.Errorf("TLS to the proxy: %w", tlsErr)}, "certificate check of the HTTPS proxy"},
		{&tunnel.ProxyError{Err: errors.New("proxy refused CONNECT: 407 Proxy Authentication Required"), Status: 407}, "credentials it was not given or refused (407): tunnel.https_proxy, or https_proxy"},
		{&tunnel.ProxyError{Err: errors.New("proxy refused CONNECT: 403 Forbidden"), Status: 403}, "HTTPS proxy refused to connect to the service (403)"},
	} {
		if got := a.failureReason(tc.err); !strings.Contains(got, tc.want) {
			t.Errorf("failureReason(%v) = %q, want it to say %q", tc.err, got, tc.want)
		}
	}
	// Without tunnel.endpoint the host is the region's, for which AWS's
	// certificate is: another name comes from something in between.
	a.cfg.Tunnel.Endpoint = ""
	if got, want := a.failureReason(nameErr), "a proxy or firewall intercepts TLS"; !strings.Contains(got, want) {
		t.Errorf("failureReason(%v) without tunnel.endpoint = %q, want it to say %q", nameErr, got, want)
	}
}

// A tunnel.ca_file that can no longer be read (removed, or made unreadable, or
// rewritten without a PEM certificate, after the start checked it) fails each
// attempt before anything is dialled, for as long as the tunnel lives: the
// event must name the file, not send the operator to look at the network.
func TestConnectFailureCAFileGone(t *testing.T) {
	tok, err := tunnel.NewAccessToken("destination-access-token")
	if err != nil {
		t.Fatal(err)
	}
	direct := func(*url.URL) (*url.URL, error) { return nil, nil }
	_, err = tunnel.Dial(context.Background(), &tunnel.Config{Endpoint: "127.0.0.1:1", CAFile: filepath.Join(t.TempDir(), "ca.pem"),
		AccessToken: tok, Proxy: direct}, tunnel.ModeDestination)
	if !errors.Is(err, tunnel.ErrCAFile) {
		t.Fatalf("Dial with the CA file gone: %v, want an error wrapping tunnel.ErrCAFile", err)
	}
	log := slog.New(slog.DiscardHandler)
	a := &Agent{cfg: &Config{ThingName: "dev"}, log: log, events: newEventQueue(nil, log)}
	a.onState(&session{fp: "9ee74176"}, log)(false, err)
	es := a.events.takeForTest()
	if len(es) != 1 || es[0].Type != "tunnel-connect-failed" || !strings.Contains(es[0].Reason, "CA file") || !strings.Contains(es[0].Reason, "ca.pem") {
		t.Errorf("events %q, want one tunnel-connect-failed whose reason names the CA file", eventTypes(es))
	}
}
