package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
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
	hostenv.NeedRoot(t, "the test gives the config to another user (chown)")
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

// sessionsAgent is an agent with max_tunnels maxTunnels and no session running,
// and mk, which adds an idle session named fp (its token too) that runs nothing.
func sessionsAgent(t *testing.T, maxTunnels int) (a *Agent, mk func(fp string) *session) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a = &Agent{cfg: &Config{Tunnel: TunnelConfig{MaxTunnels: maxTunnels}}, log: slog.New(slog.DiscardHandler), sessions: map[string]*session{},
		store: stateStore{dir: t.TempDir()}, ctx: ctx}
	return a, func(fp string) *session {
		_, scancel := context.WithCancel(ctx)
		s := &session{fp: fp, token: fp, cancel: scancel}
		s.lastUsed.Store(monoNow())
		a.sessions[fp] = s
		return s
	}
}

// Past max_tunnels, the session that yields to a new tunnel that has connected
// is one whose own connection is down before one that is connected: a rotated
// destination token's notification starts the new session while the service
// cuts the old one (its reconnects, with the revoked token, are refused a
// little later), and the older of the idle sessions was chosen, ending another
// tunnel that worked, while the doomed one ended anyway.
func TestYieldingPrefersASessionThatIsDown(t *testing.T) {
	a, mk := sessionsAgent(t, 2)
	working := mk("working") // the older, connected and idle
	time.Sleep(time.Millisecond)
	rotated := mk("rotated") // cut by the service: its token was rotated
	a.onState(working, a.log)(true, nil)
	a.onState(rotated, a.log)(true, nil)
	a.onState(rotated, a.log)(false, errors.New("tunnel: connection lost: EOF"))
	candidate := mk("new")
	candidate.candidate = true
	a.onState(candidate, a.log)(true, nil) // admit
	if _, ok := a.sessions["working"]; !ok {
		t.Errorf("the connected session yielded to the new one; the one whose connection is down is still there: %v", a.sessions)
	}
	if _, ok := a.sessions["rotated"]; ok {
		t.Errorf("the session whose connection is down did not yield")
	}
}

// A session whose tunnel has started a stream that is still dialling its
// target (a TCP target slow to answer: the tunnel's dial waits up to 10 s) is
// busy: the operator's connection is on its way through it. Counted only once
// the dial had returned, the session looked idle meanwhile, and a new tunnel
// that connected then ended it, and the connection with it.
func TestSessionDiallingAStreamIsBusy(t *testing.T) {
	a, mk := sessionsAgent(t, 1)
	dialling := mk("dialling")
	a.onState(dialling, a.log)(true, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	target := tunnel.DialerFunc(func(context.Context, string) (net.Conn, error) {
		close(entered)
		<-release
		return nil, errors.New("connection refused")
	})
	dialled := make(chan struct{})
	go func() {
		defer close(dialled)
		a.countStreams(dialling, target, a.log).DialService(context.Background(), "SSH")
	}()
	<-entered
	candidate := mk("new")
	candidate.candidate = true
	a.onState(candidate, a.log)(true, nil) // admit, while the stream dials
	close(release)
	<-dialled
	a.mu.Lock()
	_, kept := a.sessions["dialling"]
	_, joined := a.sessions["new"]
	a.mu.Unlock()
	if !kept || joined {
		t.Errorf("a new tunnel connected while a stream dialled its target: the dialling session kept %v, the new one running %v; want true, false", kept, joined)
	}
	if n := dialling.streams.Load(); n != 0 {
		t.Errorf("after the dial failed the session counts %d open streams, want 0", n)
	}
}

// A candidate that connects after another session has ended meanwhile is
// admitted with no session yielding: the agent is at max_tunnels, not past it.
func TestAdmitAfterASessionEndedEndsNone(t *testing.T) {
	a, mk := sessionsAgent(t, 2)
	a.onState(mk("ended"), a.log)(true, nil)
	a.onState(mk("idle"), a.log)(true, nil)
	candidate := mk("new")
	candidate.candidate = true
	delete(a.sessions, "ended")            // its tunnel closed while the new one connected
	a.onState(candidate, a.log)(true, nil) // admit
	if _, ok := a.sessions["idle"]; !ok || candidate.candidate {
		t.Errorf("at max_tunnels (2) with the new tunnel: the idle session kept %v, the new one admitted %v; want both", ok, !candidate.candidate)
	}
}

// At max_tunnels, a notification that comes while every session is busy is
// not refused at once: the busy session may be the tunnel whose destination
// token was just rotated, cut by the service, its streams still ending. The
// new tunnel joins in its place once it has connected, if that session is
// idle by then (it was refused, and the device was in no tunnel).
func TestNotificationWhileAllBusyTakesThePlaceFreedMeanwhile(t *testing.T) {
	a := dialOnlyAgent(t, nil)
	a.cfg.Tunnel.MaxTunnels = 1
	_, bcancel := context.WithCancel(a.ctx)
	busy := &session{fp: "busy", token: "busy", cancel: bcancel}
	busy.streams.Store(1)
	busy.up.Store(true)
	a.sessions[busy.token] = busy
	st := savedTunnel{AccessToken: "AQGAAXrotated-token", ClientToken: tunnel.GenerateClientToken().Reveal(), Region: testRegion,
		Services: []string{"SSH"}, Received: time.Now().UTC()}
	a.start(st, true)
	a.mu.Lock()
	s := a.sessions[st.AccessToken]
	a.mu.Unlock()
	if s == nil {
		t.Fatalf("the notification was refused while the session was busy; events %s", eventTypes(a.events.takeForTest()))
	}
	busy.streams.Store(0) // the cut session's streams have ended
	busy.up.Store(false)
	a.onState(s, a.log)(true, nil) // connected: admit
	a.mu.Lock()
	_, kept := a.sessions[busy.token]
	_, joined := a.sessions[st.AccessToken]
	a.mu.Unlock()
	if kept || !joined {
		t.Errorf("after the new tunnel connected: the cut session kept %v, the new one running %v; want false, true", kept, joined)
	}
}

// Past max_tunnels the newer tunnel takes the older idle one's place once it
// connects. A stop while the newer one is still connecting (its state is saved
// before it connects) must not turn that round at the next start: there the
// saved tunnels were resumed in the order of their file names (a hash of the
// token), so the older tunnel could become the candidate and end the newer one
// — with a tunnel-ended saying it was "ended for a newer tunnel".
func TestRestartKeepsTheNewerTunnelPastMaxTunnels(t *testing.T) {
	e := newAgentEnv(t)
	e.cfg.Tunnel.MaxTunnels = 1
	_, stop := e.start(t)
	older := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", older.DestinationToken, "SSH")
	if err := older.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	// The newer tunnel: one whose state file sorts before the older one's.
	newer := e.fake.OpenTunnel("SSH")
	for tokenKey(newer.DestinationToken) > tokenKey(older.DestinationToken) {
		newer = e.fake.OpenTunnel("SSH")
	}
	e.fake.FailHandshakes(1000, 503, "busy") // the newer one cannot connect yet
	e.broker.notify(t, "dev-1", newer.DestinationToken, "SSH")
	newFP, oldFP := fingerprint(newer.DestinationToken), fingerprint(older.DestinationToken)
	e.broker.waitEvent(t, "tunnel-connect-failed", func(ev Event) bool { return ev.Tunnel == newFP })
	stop()
	e.fake.FailHandshakes(0, 0, "")

	e.start(t) // a restart: both are resumed
	ev := e.broker.waitEvent(t, "tunnel-ended", func(ev Event) bool {
		return (ev.Tunnel == newFP || ev.Tunnel == oldFP) && strings.Contains(ev.Reason, "max_tunnels")
	})
	if ev.Tunnel == newFP {
		t.Errorf("after the restart the newer tunnel was ended for the older one: %q", ev.Reason)
	}
}

// Two tunnels whose access tokens share a fingerprint (the 8 hex digits that
// logs and events name a tunnel by: 32 bits, which a fleet's notifications
// will meet) are two tunnels. The sessions were kept by fingerprint, and the
// second notification was taken for one of a tunnel already joined: dropped
// with a debug line, its state not saved, its tunnel never joined.
func TestTokensSharingAFingerprintAreTwoTunnels(t *testing.T) {
	a := dialOnlyAgent(t, nil)
	// Found by a birthday search over AQGAAXfingerprint-pair-N.
	toks := []string{"AQGAAXfingerprint-pair-52365", "AQGAAXfingerprint-pair-141537"}
	if fingerprint(toks[0]) != fingerprint(toks[1]) {
		t.Fatalf("fingerprints %s and %s differ", fingerprint(toks[0]), fingerprint(toks[1]))
	}
	for _, tok := range toks {
		a.start(savedTunnel{AccessToken: tok, ClientToken: tunnel.GenerateClientToken().Reveal(), Region: testRegion,
			Services: []string{"SSH"}, Received: time.Now().UTC()}, true)
	}
	a.mu.Lock()
	running := len(a.sessions)
	a.mu.Unlock()
	for _, tok := range toks {
		if _, err := os.Stat(a.store.path(tokenKey(tok))); err != nil {
			t.Errorf("tunnel %s: state not saved: %v", tok, err)
		}
	}
	if running != 2 {
		t.Errorf("%d sessions running for two tunnels whose tokens share the fingerprint %s, want 2", running, fingerprint(toks[0]))
	}
}

// A session that ends by itself (its tunnel closed, its token refused, a
// region no endpoint can be made of, as here) lets its context go. It was
// left to its 12-hour deadline: a timer and the context, about 320 bytes,
// held for 12 h per ended session, on devices whose Go heap is held to a few
// MiB (500 token rotations are 500 such sessions).
func TestEndedSessionsReleaseTheirContext(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{ThingName: "dev-1", DataDir: dir, Services: map[string]string{"SSH": BuiltinSSH},
		Tunnel: TunnelConfig{MaxTunnels: 64}} // no endpoint: the region makes it
	a := &Agent{cfg: cfg, log: slog.New(slog.DiscardHandler), store: stateStore{dir: filepath.Join(dir, "tunnels")}, sessions: map[string]*session{}}
	svc := cfg.Services
	a.svc.Store(&svc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.ctx = ctx
	heap := func() int64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	const n = 4000
	before := heap()
	for i := range n {
		// A region with a dot is a notification's, not one a URL is made of:
		// the session ends at once.
		a.start(savedTunnel{AccessToken: "AQGAAXended-" + strconv.Itoa(i), ClientToken: tunnel.GenerateClientToken().Reveal(),
			Region: "x.", Services: []string{"SSH"}, Received: time.Now().UTC()}, false)
		if i%64 == 63 {
			a.wg.Wait()
		}
	}
	a.wg.Wait()
	if a.mu.Lock(); len(a.sessions) != 0 {
		t.Fatalf("%d sessions still running", len(a.sessions))
	}
	a.mu.Unlock()
	if held := heap() - before; held > n*64 {
		t.Errorf("%d sessions that ended hold %d bytes (%d each), want them released", n, held, held/n)
	}
}

// A tunnel lives at most maxTunnelLifetime (12 h, spec §7): a start drops the
// saved state of an older one without dialling it. A session that is still
// trying to connect when its tunnel passes that age (the network, the
// service's endpoint or an HTTPS proxy away) must give up likewise, instead of
// dialling a dead tunnel every 2 minutes, publishing its failures and holding
// a max_tunnels place and its state file until the agent restarts.
func TestSessionGivesUpPastTunnelLifetime(t *testing.T) {
	a := dialOnlyAgent(t, nil)
	st := savedTunnel{AccessToken: "AQGAAXold-tunnel-token", ClientToken: tunnel.GenerateClientToken().Reveal(), Region: testRegion,
		Services: []string{"SSH"}, Received: time.Now().Add(-maxTunnelLifetime + 2*time.Second).UTC()}
	if err := a.store.save(st); err != nil {
		t.Fatal(err)
	}
	a.start(st, false) // resumed at start, 2 s before its tunnel's end at the latest
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		a.mu.Lock()
		running := len(a.sessions)
		a.mu.Unlock()
		_, err := os.Stat(a.store.path(tokenKey(st.AccessToken)))
		if running == 0 && err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("13 s after its tunnel's 12 h were over: %d session(s) still dialling it, state file kept %v; events %s",
				running, err == nil, eventTypes(a.events.takeForTest()))
		}
	}
	wantLifetimeOver(t, a)
}

// dialOnlyAgent is an agent with no MQTT whose tunnels' endpoint refuses
// every dial, and whose clock is now (nil: time.Now); its sessions are
// stopped at the test's end.
func dialOnlyAgent(t *testing.T, now func() time.Time) *Agent {
	dir := t.TempDir()
	cfg := &Config{ThingName: "dev-1", DataDir: dir, Services: map[string]string{"SSH": BuiltinSSH},
		Tunnel: TunnelConfig{MaxTunnels: 4, Endpoint: "ws://127.0.0.1:1", AllowInsecureWebSocket: true}}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	a := &Agent{cfg: cfg, log: log, store: stateStore{dir: filepath.Join(dir, "tunnels")}, sessions: map[string]*session{},
		events: newEventQueue(nil, log), now: now}
	svc := cfg.Services
	a.svc.Store(&svc)
	ctx, cancel := context.WithCancel(context.Background())
	a.ctx = ctx
	t.Cleanup(func() {
		a.mu.Lock()
		cancel()
		a.mu.Unlock()
		a.wg.Wait()
	})
	return a
}

// wantLifetimeOver checks that a's one tunnel ended with errLifetimeOver.
func wantLifetimeOver(t *testing.T, a *Agent) {
	t.Helper()
	var ended []Event
	for _, ev := range a.events.takeForTest() {
		if ev.Type == "tunnel-ended" {
			ended = append(ended, ev)
		}
	}
	if len(ended) != 1 || ended[0].Reason != errLifetimeOver.Error() {
		t.Errorf("tunnel-ended events %+v, want one: %s", ended, errLifetimeOver)
	}
}

// A saved tunnel resumed while the clock is behind (a router without an RTC,
// before NTP) has an age that is not known; it was received before now, so it
// still gives up once a tunnel's lifetime has passed since its start, instead
// of being dialled for as long as the agent runs.
func TestSessionOfUnknownAgeGivesUp(t *testing.T) {
	defer func(d time.Duration) { sessionLifetime = d }(sessionLifetime)
	sessionLifetime = 2 * time.Second
	a := dialOnlyAgent(t, func() time.Time { return time.Now().Add(-48 * time.Hour) })
	st := savedTunnel{AccessToken: "AQGAAXunknown-age-token", ClientToken: tunnel.GenerateClientToken().Reveal(), Region: testRegion,
		Services: []string{"SSH"}, Received: time.Now().Add(-time.Minute).UTC()} // a day ahead of the clock
	if err := a.store.save(st); err != nil {
		t.Fatal(err)
	}
	a.start(st, false)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		a.mu.Lock()
		running := len(a.sessions)
		a.mu.Unlock()
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("15 s after a start with a lifetime of %v: the session of a tunnel of unknown age still dials it; events %s",
				sessionLifetime, eventTypes(a.events.takeForTest()))
		}
	}
	wantLifetimeOver(t, a)
}

// A saved tunnel that a start finds older than a tunnel lives is over as much
// as one the service refuses at the start: both are forgotten, and the trail
// the tunnel left on the event topic (its tunnel-connected before the stop)
// must end with a tunnel-ended in both cases, not only in the log.
func TestExpiredSavedTunnelPublishesTunnelEnded(t *testing.T) {
	e := newAgentEnv(t)
	store := stateStore{dir: filepath.Join(e.dataDir, "tunnels")}
	tok := "AQGAAXexpired-tunnel-token"
	if err := store.save(savedTunnel{AccessToken: tok, ClientToken: tunnel.GenerateClientToken().Reveal(), Region: testRegion,
		Services: []string{"SSH"}, Received: time.Now().Add(-13 * time.Hour).UTC()}); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	e.broker.waitEvent(t, "tunnel-ended", func(ev Event) bool { return ev.Tunnel == fingerprint(tok) })
}

// A saved tunnel none of whose services the restarted agent serves any more
// (the service removed from [services] before the restart) is not resumed,
// as a notification of such a tunnel is not joined: it would serve nothing,
// hold a max_tunnels place for up to 12 h, and past max_tunnels take a
// working tunnel's.
func TestRestoredTunnelWithoutServedServiceNotJoined(t *testing.T) {
	e := newAgentEnv(t) // [services] SSH only
	tun := e.fake.OpenTunnel("VNC")
	store := stateStore{dir: filepath.Join(e.dataDir, "tunnels")}
	if err := store.save(savedTunnel{AccessToken: tun.DestinationToken, ClientToken: tunnel.GenerateClientToken().Reveal(), Region: testRegion,
		Services: []string{"VNC"}, Received: time.Now().Add(-time.Hour).UTC()}); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	e.broker.waitEvent(t, "tunnel-ended", func(ev Event) bool {
		return ev.Tunnel == fingerprint(tun.DestinationToken) && strings.Contains(ev.Reason, "no service of the tunnel")
	})
	if _, err := os.Stat(store.path(tokenKey(tun.DestinationToken))); err == nil {
		t.Error("its state is kept")
	}
	if err := tun.WaitConnects(ctxWithTimeout(t, time.Second), tunneltest.Destination, 1); err == nil {
		t.Errorf("the restarted agent joined a tunnel whose only service (VNC) it no longer serves")
	}
}

// Many notifications at once past max_tunnels, then a stop: every tunnel ends
// up either ended (one tunnel-ended, no state file) or kept for the next
// start (a state file, no tunnel-ended), never both or neither.
func TestStressNotificationsPastMaxTunnels(t *testing.T) {
	for _, early := range []bool{false, true} {
		t.Run(map[bool]string{false: "stop after", true: "stop during"}[early], func(t *testing.T) { stressNotifications(t, early) })
	}
}

func stressNotifications(t *testing.T, stressEarlyStop bool) {
	fake := tunneltest.NewServer(t)
	dir := t.TempDir()
	cfg := &Config{ThingName: "dev-1", DataDir: dir, Services: map[string]string{"SSH": BuiltinSSH},
		Tunnel: TunnelConfig{MaxTunnels: 2, Endpoint: fake.URL, AllowInsecureWebSocket: true}}
	log := slog.New(slog.DiscardHandler)
	a := &Agent{cfg: cfg, log: log, store: stateStore{dir: filepath.Join(dir, "tunnels")}, sessions: map[string]*session{},
		events: newEventQueue(nil, log)}
	a.rejections.burst = 1000
	svc := cfg.Services
	a.svc.Store(&svc)
	ctx, cancel := context.WithCancel(context.Background())
	a.ctx = ctx
	var toks []string
	for range 12 {
		toks = append(toks, fake.OpenTunnel("SSH").DestinationToken)
	}
	var wg sync.WaitGroup
	for i, tok := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i%4) * 30 * time.Millisecond)
			a.notified(notify.Notification{ClientAccessToken: tok, ClientMode: "destination", Region: testRegion, Services: []string{"SSH"}})
		}()
	}
	if stressEarlyStop {
		time.Sleep(40 * time.Millisecond)
	} else {
		wg.Wait()
		time.Sleep(500 * time.Millisecond)
	}
	a.mu.Lock()
	cancel()
	a.mu.Unlock()
	wg.Wait()
	a.mu.Lock()
	//lint:ignore SA2001 a barrier: whoever held a.mu has let it go
	a.mu.Unlock()
	a.wg.Wait()
	evs := a.events.takeForTest()
	for _, tok := range toks {
		fp := fingerprint(tok)
		ended, rejected := 0, 0
		for _, ev := range evs {
			if ev.Tunnel == fp && ev.Type == "tunnel-ended" {
				ended++
			}
			if ev.Tunnel == fp && ev.Type == "notification-rejected" {
				rejected++
			}
		}
		_, err := os.Stat(a.store.path(tokenKey(tok)))
		saved := err == nil
		if ended > 1 || ended == 1 && saved || ended == 0 && rejected == 0 && !saved {
			t.Errorf("tunnel %s: %d tunnel-ended, %d rejected, state saved %v", fp, ended, rejected, saved)
		}
	}
	a.mu.Lock()
	if len(a.sessions) != 0 {
		t.Errorf("after the stop: %d sessions", len(a.sessions))
	}
	a.mu.Unlock()
}
