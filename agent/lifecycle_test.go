package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// A stop (SIGTERM) while the agent waits for another one to leave its data
// directory ends the wait: the agent does not sit out the rest of lockWait
// (10 s) first, past what its command gives a stop (5 s), and does not report
// the stop as the configuration error "in use by another agent" (exit 1).
func TestStopWhileWaitingForTheDataDirLock(t *testing.T) {
	e := newAgentEnv(t)
	held, err := os.Open(e.cfg.DataDir) // another agent's lock, as it takes it
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	a, err := New(e.cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	time.Sleep(300 * time.Millisecond) // waiting for the lock
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if errors.Is(err, ErrUsage) || err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run stopped while waiting for the lock = %v, want nil or context.Canceled (exit 0)", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Run took %v to stop while waiting for the lock", d)
		}
	case <-time.After(3 * time.Second):
		t.Errorf("Run still waits for the data_dir lock 3 s after its stop")
		held.Close()
		<-done
	}
}

// A tunnel notified while the device's clock was behind (a router that boots
// with the time of its last saved file, as OpenWrt's sysfixtime sets it, and
// whose NTP answer comes after the broker's TLS handshake has passed) is still
// resumed by a restart after NTP has set the clock: its age is what the agent
// saw pass, not the step of the clock. It was deleted as older than 12 h,
// without a word, and the open tunnel was lost until its token was rotated.
func TestResumeAfterClockStepForward(t *testing.T) {
	e := newAgentEnv(t)
	a, ntp, stop := runBehind(t, e)
	tun := notifyTunnel(t, e, a)
	ntp()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.start(t) // a restart, with the clock right
	if err := tun.WaitConnects(ctxWithTimeout(t, 5*time.Second), tunneltest.Destination, 2); err != nil {
		t.Fatalf("the restarted agent did not resume the open tunnel notified before the clock was set: %v", err)
	}
}

// A config another local user owns is refused as one they may write is:
// its owner can change it (chmod is theirs), and it decides who logs in to an
// agent that runs as root. data_dir refuses such an owner; the config did not.
func TestConfigOwnedByAnotherUserRefused(t *testing.T) {
	needRoot(t, "the test gives the config to another user (chown)")
	p := filepath.Join(t.TempDir(), "porthole.toml")
	if err := os.WriteFile(p, []byte(minimalConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err != nil {
		t.Fatalf("root's config: %v", err)
	}
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "uid 65534") {
		t.Errorf("LoadConfig of a config uid 65534 owns = %v, want it refused, naming the owner", err)
	}
}

// Past max_tunnels, the session that yields to a new tunnel that has connected
// is one whose own connection is down before one that is connected: a rotated
// destination token's notification starts the new session while the service
// cuts the old one (its reconnects, with the revoked token, are refused a
// little later), and the older of the idle sessions was chosen, ending another
// tunnel that worked, while the doomed one ended anyway.
func TestYieldingPrefersASessionThatIsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &Agent{cfg: &Config{Tunnel: TunnelConfig{MaxTunnels: 2}}, log: slog.New(slog.DiscardHandler), sessions: map[string]*session{},
		store: stateStore{dir: t.TempDir()}, ctx: ctx}
	mk := func(fp string) *session {
		_, scancel := context.WithCancel(ctx)
		s := &session{fp: fp, token: fp, cancel: scancel}
		s.lastUsed.Store(monoNow())
		a.sessions[fp] = s
		return s
	}
	working := mk("working") // the older, connected and idle
	time.Sleep(time.Millisecond)
	rotated := mk("rotated") // cut by the service: its token was rotated
	a.onState(working, a.log)(true, nil)
	a.onState(rotated, a.log)(true, nil)
	a.onState(rotated, a.log)(false, errors.New("tunnel: connection lost: EOF"))
	candidate := mk("new")
	a.candidate = candidate
	a.onState(candidate, a.log)(true, nil) // admit
	if _, ok := a.sessions["working"]; !ok {
		t.Errorf("the connected session yielded to the new one; the one whose connection is down is still there: %v", a.sessions)
	}
	if _, ok := a.sessions["rotated"]; ok {
		t.Errorf("the session whose connection is down did not yield")
	}
}
