package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// TestClockIn1970 feeds the session's state callback the error a TLS handshake
// gives when the device's clock is in 1970 (every certificate "expired" or not
// yet valid): the log says the clock is behind, once the clock is set the same
// error is an ordinary network failure again.
func TestClockIn1970(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	now := time.Unix(0, 0)
	a := &Agent{cfg: &Config{}, log: log, now: func() time.Time { return now }}
	onState := a.onState(&session{fp: "abcd"}, log)
	certErr := fmt.Errorf("tunnel: connecting: tls: failed to verify certificate: %w",
		x509.CertificateInvalidError{Reason: x509.Expired, Detail: "current time 1970-01-01T00:00:00Z is before 2026-01-01T00:00:00Z"})

	onState(false, certErr)
	if got := buf.String(); !strings.Contains(got, "the clock is before this binary was built") || !strings.Contains(got, "clock=1970-01-01") {
		t.Fatalf("with the clock in 1970 the log says:\n%s", got)
	}
	buf.Reset()
	now = BuildTime().Add(time.Hour) // NTP set the clock
	onState(false, certErr)
	onState(true, nil)
	if got := buf.String(); strings.Contains(got, "clock") {
		t.Fatalf("with the clock set the log still blames it:\n%s", got)
	}
}

// TestClockIn1970Tunnel runs a real destination against a TLS data plane whose
// certificate is not yet valid, which is what a device whose clock is in 1970
// sees of every certificate. That failure does not end the tunnel: the
// destination keeps retrying and the log says that the clock is behind. Once the
// clock is set (the agent's clock moves on and the certificate becomes valid, as
// it would for a device whose clock jumped forward), it connects.
func TestClockIn1970Tunnel(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	keyPair := func(certFile, keyFile string) *tls.Certificate {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return &kp
	}
	notYet := keyPair(pki.ServerAt(t, "tunnel-not-yet-valid", time.Now().Add(24*time.Hour)))
	valid := keyPair(pki.Server(t, "tunnel-valid"))
	var cert atomic.Pointer[tls.Certificate]
	cert.Store(notYet)

	fake := tunneltest.NewServer(t)
	tun := fake.OpenTunnel("SSH")
	hs := httptest.NewUnstartedServer(fake.Handler())
	hs.Config.ConnContext = fake.Handler().ConnContext
	hs.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused TLS handshakes
	hs.Listener = tls.NewListener(hs.Listener, &tls.Config{MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert.Load(), nil }})
	hs.Start()
	t.Cleanup(hs.Close)

	var logged testlog.Lines
	log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var clockSet atomic.Bool
	a := &Agent{cfg: &Config{}, log: log, now: func() time.Time {
		if clockSet.Load() {
			return time.Now()
		}
		return time.Unix(0, 0)
	}}
	onState := a.onState(&session{fp: "abcd"}, log)
	const hint = "the clock is before this binary was built"
	var certFailures, otherFailures, hintsWithClockSet atomic.Int32
	access, err := tunnel.NewAccessToken(tun.DestinationToken)
	if err != nil {
		t.Fatal(err)
	}
	d := &tunnel.Destination{Config: tunnel.Config{
		Endpoint: "wss://" + hs.Listener.Addr().String(), CAFile: pki.CAFile, AccessToken: access,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, Logger: log,
		OnState: func(connected bool, err error) {
			var ce x509.CertificateInvalidError
			switch {
			case connected || errors.Is(err, context.Canceled):
			case tunnel.IsCertificateError(err) && errors.As(err, &ce) && ce.Reason == x509.Expired:
				certFailures.Add(1)
			default:
				otherFailures.Add(1)
			}
			if !clockSet.Load() {
				onState(connected, err)
				return
			}
			before := logged.Count(hint) // Run is the only one to log
			onState(connected, err)
			if logged.Count(hint) != before {
				hintsWithClockSet.Add(1)
			}
		},
	}, Dialer: tunnel.Targets{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !t.Failed() {
			t.Errorf("Run = %v after cancel", err)
		}
	})
	wait := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			select {
			case err := <-done:
				done <- err
				t.Fatalf("waiting for %s: Run returned %v\n%s", what, err, logged.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 5 s\n%s", what, logged.String())
			}
		}
	}

	// It retries (OnState hears of each failure before the retry line), and says
	// why it fails.
	wait("third retry", func() bool { return logged.Count("cannot connect to the tunnel, retrying") >= 3 })
	if c, o := certFailures.Load(), otherFailures.Load(); c < 3 || o != 0 {
		t.Errorf("%d failures on the certificate's dates and %d others, want 3 or more and none", c, o)
	}
	if c := logged.Count(hint); c < 1 || !strings.Contains(logged.String(), "clock=1970-01-01") {
		t.Errorf("with the clock in 1970 the log says:\n%s", logged.String())
	}
	// Said once, as is the failure (the others at debug level, quiet.Every):
	// its error names the time, which differs at each attempt.
	for _, line := range []string{`level=WARN msg="` + hint, `level=WARN msg="cannot connect to the tunnel, retrying"`} {
		if c := logged.Count(line); c != 1 {
			t.Errorf("%d lines %s... for %d attempts, want 1:\n%s", c, line, certFailures.Load(), logged.String())
		}
	}
	if n := tun.Connects(tunneltest.Destination); n != 0 {
		t.Fatalf("%d connects with a certificate that is not yet valid", n)
	}

	// NTP sets the clock: the certificate is valid now, and the next attempt connects.
	clockSet.Store(true)
	cert.Store(valid)
	wait("connection once the clock is set", func() bool { return tun.Connected(tunneltest.Destination) })
	if n := hintsWithClockSet.Load(); n != 0 {
		t.Errorf("with the clock set the log still blamed it %d times:\n%s", n, logged.String())
	}
}

// A tunnel saved with the clock right, resumed by an agent that starts with the
// clock behind (the router rebooted: 1970, or OpenWrt's sysfixtime), and
// stopped after NTP has set the clock: the state it leaves says when the
// tunnel was received, not a time in the future. The start took the negative
// age (the clock behind the saved time) as the tunnel's age, and the stop's
// restamp moved Received ahead by as much as the clock had been behind: the
// next starts kept the tunnel that long past its 12 h (56 years from 1970),
// dialling a dead tunnel on each. A stop before NTP leaves it as saved too.
func TestResumeWithClockBehindThenStop(t *testing.T) {
	for _, ntp := range []bool{true, false} {
		t.Run(map[bool]string{true: "stopped after NTP", false: "stopped before NTP"}[ntp], func(t *testing.T) {
			testResumeWithClockBehind(t, ntp)
		})
	}
}

func testResumeWithClockBehind(t *testing.T, ntp bool) {
	e := newAgentEnv(t)
	tun := e.fake.OpenTunnel("SSH")
	received := time.Now().Add(-time.Hour).UTC()
	store := stateStore{dir: e.dataDir + "/tunnels"}
	if err := store.save(savedTunnel{AccessToken: tun.DestinationToken, ClientToken: tunnel.GenerateClientToken().Reveal(),
		Region: testRegion, Services: []string{"SSH"}, Received: received}); err != nil {
		t.Fatal(err)
	}
	a, ntpNow, stop := runBehind(t, e)
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	// Not stopped while its MQTT connection is being made: the test broker
	// (mochi) has a race between Close and a connection it is establishing.
	if err := a.mqtt.AwaitConnection(ctxWithTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ntp {
		ntpNow()
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(store.path(tokenKey(tun.DestinationToken)))
	if err != nil {
		t.Fatalf("the state of the open tunnel is gone: %v", err)
	}
	var st savedTunnel
	if err := st.decode(b); err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); st.Received.After(now) || st.Received.Before(received.Add(-time.Minute)) {
		t.Fatalf("saved received = %s, want between %s (when it was received) and now (%s)",
			st.Received.Format(time.RFC3339), received.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
}

// A tunnel notified while the clock was behind (OpenWrt's sysfixtime) and
// still open when NTP sets it is resumed by a start after the agent died
// without a stop (power cut, watchdog, OOM killer): its state says when it was
// received in the clock's new reckoning. Only a stop rewrote it, and the state
// a dead agent left said 48 h ago: the next start removed the open tunnel.
func TestClockStepForwardThenCrash(t *testing.T) {
	defer func(d time.Duration) { clockCheckInterval = d }(clockCheckInterval)
	clockCheckInterval = 20 * time.Millisecond
	e := newAgentEnv(t)
	a, ntp, _ := runBehind(t, e)
	tun := notifyTunnel(t, e, a)
	ntp()
	store := stateStore{dir: e.dataDir + "/tunnels"}
	var left []byte // what the agent leaves if it dies now
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if left, err = os.ReadFile(store.path(tokenKey(tun.DestinationToken))); err != nil {
			t.Fatal(err)
		}
		var st savedTunnel
		if st.decode(left) == nil && time.Since(st.Received) < time.Hour {
			break
		}
	}
	crashed := stateStore{dir: t.TempDir()}
	if err := os.WriteFile(crashed.path(tokenKey(tun.DestinationToken)), left, 0o600); err != nil {
		t.Fatal(err)
	}
	if saved, _, errs := crashed.load(time.Now()); len(saved) != 1 {
		t.Fatalf("a start after the agent died would not resume the open tunnel: %v", errs)
	}
}

// runBehind runs an agent of e whose clock is 48 h behind (a router after a
// reboot, before NTP) until ntp sets it; stop ends the agent (also when the
// test ends) and returns Run's error.
func runBehind(t *testing.T, e *agentEnv) (a *Agent, ntp func(), stop func() error) {
	t.Helper()
	a = e.newAgent(t, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	var behind atomic.Int64
	behind.Store(int64(48 * time.Hour))
	a.now = func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { stop() })
	return a, func() { behind.Store(0) }, stop
}

// notifyTunnel opens a tunnel on e's fake service, notifies agent a of it
// once its MQTT session is up, and waits for its destination to connect.
func notifyTunnel(t *testing.T, e *agentEnv, a *Agent) *tunneltest.Tunnel {
	t.Helper()
	if err := a.mqtt.AwaitConnection(ctxWithTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	return tun
}
