package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/notify/mqtttest/noquota"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
	gossh "golang.org/x/crypto/ssh"
)

// broker is an in-process MQTT v5 broker with mutual TLS, and a record of the
// events the agent publishes.
type broker struct {
	srv  *mqtt.Server
	addr string

	mu     sync.Mutex
	events []Event
}

// acl decides who may connect, publish and subscribe.
func startBroker(t *testing.T, pki *mqtttest.PKI, eventTopic string, acl mqtt.Hook) *broker {
	t.Helper()
	certFile, keyFile := pki.Server(t, "broker")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := pki.Pool()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(acl, nil); err != nil {
		t.Fatal(err)
	}
	// mochi's send quota leaks under bursts of notifications and events (see
	// noquota): TestAgentRotationsLeaveNoGoroutine lost its last notification.
	if err := srv.AddHook(new(noquota.Hook), nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{Type: "tcp", ID: "tls", Address: "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}})
	if err := srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &broker{srv: srv, addr: ln.Address()}
	t.Cleanup(func() { srv.Close() })
	if eventTopic != "" {
		srv.Subscribe(eventTopic, 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
			var e Event
			if err := json.Unmarshal(pk.Payload, &e); err != nil {
				t.Errorf("event is not JSON: %s", pk.Payload)
				return
			}
			b.mu.Lock()
			b.events = append(b.events, e)
			b.mu.Unlock()
		})
	}
	return b
}

func (b *broker) notify(t *testing.T, thing, token string, services ...string) {
	t.Helper()
	p, _ := json.Marshal(map[string]any{"clientAccessToken": token, "clientMode": "destination", "region": testRegion, "services": services})
	if err := b.srv.Publish("$aws/things/"+thing+"/tunnels/notify", p, false, 1); err != nil {
		t.Fatal(err)
	}
}

// down takes the broker away: its listener closed, its clients cut.
func (b *broker) down() {
	b.srv.Listeners.Close("tls", func(id string) {
		for _, cl := range b.srv.Clients.GetByListener(id) {
			cl.Stop(errors.New("broker down"))
		}
	})
}

// waitEvent waits for an event of typ matching ok.
func (b *broker) waitEvent(t *testing.T, typ string, ok func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b.mu.Lock()
		for _, e := range b.events {
			if e.Type == typ && (ok == nil || ok(e)) {
				b.mu.Unlock()
				return e
			}
		}
		b.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t.Fatalf("no %s event; got %+v", typ, b.events)
	return Event{}
}

type agentEnv struct {
	pki       *mqtttest.PKI
	broker    *broker
	fake      *tunneltest.Server
	cfg       *Config
	signer    gossh.Signer
	dataDir   string
	srcClient tunnel.Token
	passwd    string // a passwd file: root, with home, for the agent's logins (newAgent)
	home      string // an empty directory
}

func newAgentEnv(t *testing.T) *agentEnv {
	t.Helper()
	return newAgentEnvACL(t, new(auth.AllowHook))
}

// newAgentEnvACL is newAgentEnv with a broker whose acl hook decides who may
// connect, publish and subscribe.
func newAgentEnvACL(t *testing.T, acl mqtt.Hook) *agentEnv {
	t.Helper()
	hostenv.NeedRoot(t, "the agent's SSH sessions need root to run as the login user")
	e := &agentEnv{pki: mqtttest.NewPKI(t), fake: tunneltest.NewServer(t), dataDir: t.TempDir(), srcClient: tunnel.GenerateClientToken()}
	e.fake.Logf = t.Logf
	e.broker = startBroker(t, e.pki, "porthole/events/dev-1", acl)
	devCert, devKey := e.pki.Client(t, "dev-1")
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	e.signer, _ = gossh.NewSignerFromKey(priv)
	ak := filepath.Join(safeTempDir(t), "authorized_keys")
	os.WriteFile(ak, gossh.MarshalAuthorizedKey(e.signer.PublicKey()), 0o600)
	cfgText := fmt.Sprintf(`
thing_name = "dev-1"
data_dir = %q
[mqtt]
endpoint = %q
ca_file = %q
cert_file = %q
key_file = %q
event_topic = "porthole/events/dev-1"
[tunnel]
endpoint = %q
allow_insecure_websocket = true
[services]
SSH = "builtin"
[ssh]
authorized_keys = [%q]
`, e.dataDir, e.broker.addr, e.pki.CAFile, devCert, devKey, e.fake.URL, ak)
	cfg, err := ParseConfig([]byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	e.passwd, e.home = ownHomePasswd(t)
	return e
}

// ownHomePasswd writes a passwd file whose one user, root, has an empty home
// of the test's own and bash (else sh) for a shell. The agent's sessions log
// in root with its login shell, and bash runs ~/.bashrc even for a command
// over SSH: with /etc/passwd's home, the tests would run the machine's
// dotfiles (a CI machine's pyenv waits 60 s on a lock file a hung-up session
// left behind, and prints to the command's output).
func ownHomePasswd(t *testing.T) (passwd, home string) {
	t.Helper()
	dir := safeTempDir(t)
	home = filepath.Join(dir, "home")
	shell := "/bin/bash"
	if _, err := os.Stat(shell); err != nil {
		shell = "/bin/sh"
	}
	passwd = filepath.Join(dir, "passwd")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwd, []byte("root:x:0:0:root:"+home+":"+shell+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return passwd, home
}

// newAgent is New for e's config, its SSH server reading e's passwd file.
func (e *agentEnv) newAgent(t *testing.T, log *slog.Logger) *Agent {
	t.Helper()
	a, err := New(e.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	a.ssh.PasswdFile = e.passwd
	return a
}

// start runs an agent until the returned stop is called.
func (e *agentEnv) start(t *testing.T) (*Agent, func()) {
	t.Helper()
	return e.startLogging(t, testWriter{t})
}

// startLogging is start with the agent's log (debug and up) written to w.
func (e *agentEnv) startLogging(t *testing.T, w io.Writer) (*Agent, func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := e.newAgent(t, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	if err := a.mqtt.AwaitConnection(ctxWithTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("agent did not connect to the broker: %v", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("agent did not stop within 10s")
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func ctxWithTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// sshClient opens the tunnel's source side and logs in as root over SSH through
// it; stopSource ends the source side (close the client first).
func (e *agentEnv) sshClient(t *testing.T, tun *tunneltest.Tunnel) (client *gossh.Client, stopSource func()) {
	t.Helper()
	client, stopSource, err := e.sshLogin(t, tun, e.signer)
	if err != nil {
		t.Fatalf("ssh through the tunnel: %v", err)
	}
	return client, stopSource
}

// sshLogin is sshClient with signer's key, returning the login's error.
func (e *agentEnv) sshLogin(t *testing.T, tun *tunneltest.Tunnel, signer gossh.Signer) (client *gossh.Client, stopSource func(), err error) {
	t.Helper()
	tok, _ := tunnel.NewAccessToken(tun.SourceToken)
	ready := make(chan string, 1)
	// One client token per test: the source token may then be used again.
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: e.fake.URL, AllowInsecureWebSocket: true, AccessToken: tok, ClientToken: e.srcClient},
		Listen: map[string]string{"SSH": "127.0.0.1:0"}, OnListen: func(service string, a net.Addr) {
			if service == "SSH" { // a tunnel's other services get ports too
				ready <- a.String()
			}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	stopSource = func() { cancel(); <-done }
	var addr string
	select {
	case addr = <-ready:
	case <-time.After(10 * time.Second):
		stopSource()
		t.Fatal("source did not listen")
	}
	client, err = gossh.Dial("tcp", addr, &gossh.ClientConfig{User: "root", Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
	if err != nil {
		stopSource()
		return nil, nil, err
	}
	return client, stopSource, nil
}

// sshThrough opens the tunnel's source side and runs cmd over SSH as root; after
// the SSH connection is closed and before the source stops, it calls after (if set).
func (e *agentEnv) sshThrough(t *testing.T, tun *tunneltest.Tunnel, cmd string, after func()) string {
	t.Helper()
	client, stopSource := e.sshClient(t, tun)
	defer stopSource()
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sess.Stdout = &out
	if err := sess.Run(cmd); err != nil {
		t.Fatalf("ssh %q: %v (output %q)", cmd, err, out.String())
	}
	client.Close()
	if after != nil {
		after()
	}
	return out.String()
}

func TestAgentNotificationToSSHLogin(t *testing.T) {
	e := newAgentEnv(t)
	_, stop := e.start(t)
	tun := e.fake.OpenTunnel("SSH", "WEB")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH", "WEB")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatalf("agent did not open the tunnel: %v", err)
	}
	streamEnded := func() {
		e.broker.waitEvent(t, "stream-end", func(ev Event) bool { return ev.Service == "SSH" && ev.BytesIn > 0 && ev.BytesOut > 0 })
	}
	if out := e.sshThrough(t, tun, "echo hello from $(id -un)", streamEnded); out != "hello from root\n" {
		t.Fatalf("ssh output %q", out)
	}
	e.broker.waitEvent(t, "service-unmapped", func(ev Event) bool { return len(ev.Services) == 1 && ev.Services[0] == "WEB" })
	e.broker.waitEvent(t, "tunnel-connected", nil)
	e.broker.waitEvent(t, "ssh-login-success", nil)

	// The live tunnel is saved, without the token in its name.
	files, _ := filepath.Glob(filepath.Join(e.dataDir, "tunnels", "*.json"))
	if len(files) != 1 || strings.Contains(files[0], tun.DestinationToken) {
		t.Fatalf("saved tunnel state %v", files)
	}
	if fi, _ := os.Stat(files[0]); fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode())
	}

	// A restarted agent reconnects to the open tunnel with the saved client token.
	stop()
	e.start(t)
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 2); err != nil {
		t.Fatalf("restarted agent did not resume the tunnel: %v", err)
	}
	// The login's home is the test's own, with nothing in it (newAgent).
	if out := e.sshThrough(t, tun, `echo again in "$HOME"; ls -A`, nil); out != "again in "+e.home+"\n" {
		t.Fatalf("after restart: %q, want again in %s and nothing there", out, e.home)
	}

	// Closing the tunnel ends the session and forgets its state.
	tun.Close()
	e.broker.waitEvent(t, "tunnel-ended", func(ev Event) bool { return strings.HasPrefix(ev.Reason, "closed by the service (status 1000 ") })
	deadline := time.Now().Add(5 * time.Second)
	for {
		files, _ = filepath.Glob(filepath.Join(e.dataDir, "tunnels", "*.json"))
		if len(files) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state not removed after the tunnel closed: %v", files)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// No event or log carries a token.
	e.broker.mu.Lock()
	defer e.broker.mu.Unlock()
	b, _ := json.Marshal(e.broker.events)
	if bytes.Contains(b, []byte(tun.DestinationToken)) || bytes.Contains(b, []byte(tun.SourceToken)) {
		t.Fatal("an event carries an access token")
	}
}

func TestAgentRejectsBadNotification(t *testing.T) {
	e := newAgentEnv(t)
	e.start(t)
	tun := e.fake.OpenTunnel("SSH")
	p := []byte(`{"clientAccessToken":"` + tun.DestinationToken + `","clientMode":"source","region":"` + testRegion + `","services":["SSH"]}`)
	if err := e.broker.srv.Publish("$aws/things/dev-1/tunnels/notify", p, false, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if tun.Connected(tunneltest.Destination) {
		t.Fatal("agent connected for a source-mode notification")
	}
}

// oneTunnelAgent starts an agent with max_tunnels 1 and a tunnel it has joined.
func oneTunnelAgent(t *testing.T) (*agentEnv, *tunneltest.Tunnel) {
	t.Helper()
	e := newAgentEnv(t)
	e.cfg.Tunnel.MaxTunnels = 1
	e.start(t)
	first := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", first.DestinationToken, "SSH")
	if err := first.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	return e, first
}

func TestAgentMaxTunnelsYieldsOldestIdle(t *testing.T) {
	e, first := oneTunnelAgent(t)
	second := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", second.DestinationToken, "SSH")
	if err := second.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for first.Connected(tunneltest.Destination) {
		if time.Now().After(deadline) {
			t.Fatal("the idle first session did not yield")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The yielded tunnel's state is gone; the running one's stays.
	saved, _ := filepath.Glob(filepath.Join(e.cfg.DataDir, "tunnels", "*.json"))
	if len(saved) != 1 || filepath.Base(saved[0]) != tokenKey(second.DestinationToken)+".json" {
		t.Fatalf("saved tunnel state after yielding: %v, want only the second tunnel's", saved)
	}
}

// At max_tunnels a notification the service then refuses (a closed tunnel's token
// replayed from the broker's session, a forged one) must not end the working
// session: the new one takes an idle session's place only once it has connected.
func TestAgentMaxTunnelsKeepsSessionForRefusedToken(t *testing.T) {
	e, first := oneTunnelAgent(t)
	closed := e.fake.OpenTunnel("SSH")
	closed.Close()
	for _, token := range []string{closed.DestinationToken, "AQGAAbogus-token-xyz"} {
		e.broker.notify(t, "dev-1", token, "SSH")
		fp := fingerprint(token)
		e.broker.waitEvent(t, "tunnel-ended", func(ev Event) bool { return ev.Tunnel == fp })
	}
	if !first.Connected(tunneltest.Destination) || first.Connects(tunneltest.Destination) != 1 {
		t.Fatalf("the working session was disturbed by refused tokens (connected %v, connects %d)",
			first.Connected(tunneltest.Destination), first.Connects(tunneltest.Destination))
	}
	saved, _ := filepath.Glob(filepath.Join(e.cfg.DataDir, "tunnels", "*.json"))
	if len(saved) != 1 || filepath.Base(saved[0]) != tokenKey(first.DestinationToken)+".json" {
		t.Fatalf("saved tunnel state: %v, want only the working tunnel's", saved)
	}
}

// At max_tunnels with every session busy (an operator logged in), a new
// tunnel is refused with an event once it has connected, and the agent goes
// on: it once deadlocked there, refusing under the lock its refusal took
// again, and hung every later notification and its own stop.
func TestAgentMaxTunnelsAllBusyRefusesTheNew(t *testing.T) {
	e, first := oneTunnelAgent(t)
	if err := first.Send(tunneltest.Destination, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1}); err != nil {
		t.Fatal(err)
	}
	e.broker.waitEvent(t, "stream-start", func(ev Event) bool { return ev.Tunnel == fingerprint(first.DestinationToken) })
	second := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", second.DestinationToken, "SSH")
	e.broker.waitEvent(t, "notification-rejected", func(ev Event) bool {
		return ev.Tunnel == fingerprint(second.DestinationToken) && strings.Contains(ev.Reason, "max_tunnels (1) sessions busy")
	})
	// Later notifications are still handled.
	other := e.fake.OpenTunnel("VNC")
	e.broker.notify(t, "dev-1", other.DestinationToken, "VNC")
	e.broker.waitEvent(t, "notification-rejected", func(ev Event) bool { return ev.Tunnel == fingerprint(other.DestinationToken) })
	waitDisconnected(t, second)
	if !first.Connected(tunneltest.Destination) || first.Connects(tunneltest.Destination) != 1 {
		t.Fatalf("the busy first session: connected %v, %d connects; want it kept", first.Connected(tunneltest.Destination), first.Connects(tunneltest.Destination))
	}
	if saved, _ := filepath.Glob(filepath.Join(e.cfg.DataDir, "tunnels", "*.json")); len(saved) != 1 {
		t.Fatalf("saved tunnel state: %v, want only the busy tunnel's", saved)
	}
}

// waitDisconnected waits until the agent has left tun's destination side.
func waitDisconnected(t *testing.T, tun *tunneltest.Tunnel) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for tun.Connected(tunneltest.Destination) {
		if time.Now().After(deadline) {
			t.Fatal("the agent did not leave the tunnel")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// At max_tunnels, notifications that come together (queued in the broker's
// session while the device was offline, a script opening several tunnels)
// each take an idle session's place: with one candidate at a time, each
// replaced the one before it, and only the last tunnel was joined.
func TestAgentMaxTunnelsTakesAsManyAsAreIdle(t *testing.T) {
	e := newAgentEnv(t)
	e.cfg.Tunnel.MaxTunnels = 2
	e.start(t)
	var tuns []*tunneltest.Tunnel
	for range 4 {
		tuns = append(tuns, e.fake.OpenTunnel("SSH"))
	}
	for _, tun := range tuns[:2] {
		e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
		if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Neither new one connects before both are in.
	e.fake.FailHandshakes(1000, 503, "busy")
	for _, tun := range tuns[2:] {
		e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
		fp := fingerprint(tun.DestinationToken)
		e.broker.waitEvent(t, "tunnel-connect-failed", func(ev Event) bool { return ev.Tunnel == fp })
	}
	e.fake.FailHandshakes(0, 0, "")
	for _, tun := range tuns[2:] {
		if err := tun.WaitConnects(ctxWithTimeout(t, 20*time.Second), tunneltest.Destination, 1); err != nil {
			e.broker.mu.Lock()
			defer e.broker.mu.Unlock()
			t.Fatalf("a new tunnel did not connect: %v; events %s", err, eventTypes(e.broker.events))
		}
	}
	waitDisconnected(t, tuns[0])
	waitDisconnected(t, tuns[1])
	if !tuns[2].Connected(tunneltest.Destination) || !tuns[3].Connected(tunneltest.Destination) {
		t.Fatalf("the two new tunnels: connected %v and %v, want both", tuns[2].Connected(tunneltest.Destination), tuns[3].Connected(tunneltest.Destination))
	}
}

// At max_tunnels with as many candidates still connecting as idle sessions
// (one each, here), a newer notification replaces the oldest candidate:
// the newer one takes the idle session's place once it connects, and the
// replaced one is ended, its reason said, not left connecting to take a
// place that is no longer there.
func TestAgentNewerCandidateReplacesOneAtTheBoundary(t *testing.T) {
	e := newAgentEnv(t)
	e.cfg.Tunnel.MaxTunnels = 1
	e.start(t)
	idle, first, newer := e.fake.OpenTunnel("SSH"), e.fake.OpenTunnel("SSH"), e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", idle.DestinationToken, "SSH")
	if err := idle.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	e.fake.FailHandshakes(1000, 503, "busy") // neither candidate connects yet
	e.broker.notify(t, "dev-1", first.DestinationToken, "SSH")
	fp := fingerprint(first.DestinationToken)
	e.broker.waitEvent(t, "tunnel-connect-failed", func(ev Event) bool { return ev.Tunnel == fp })
	e.broker.notify(t, "dev-1", newer.DestinationToken, "SSH")
	ev := e.broker.waitEvent(t, "tunnel-ended", func(ev Event) bool { return ev.Tunnel == fp })
	if !strings.Contains(ev.Reason, "replaced by a newer tunnel before it connected") {
		t.Errorf("the first candidate ended with %q, want it replaced by the newer one", ev.Reason)
	}
	e.fake.FailHandshakes(0, 0, "")
	if err := newer.WaitConnects(ctxWithTimeout(t, 20*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	waitDisconnected(t, idle)
	if n := first.Connects(tunneltest.Destination); n != 0 {
		t.Errorf("the replaced candidate connected %d times", n)
	}
}

// A tunnel none of whose services this device serves is not joined.
func TestAgentIgnoresTunnelWithoutServedService(t *testing.T) {
	e := newAgentEnv(t)
	e.start(t)
	tun := e.fake.OpenTunnel("VNC")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "VNC")
	fp := fingerprint(tun.DestinationToken)
	e.broker.waitEvent(t, "notification-rejected", func(ev Event) bool { return ev.Tunnel == fp })
	if tun.Connects(tunneltest.Destination) != 0 {
		t.Fatal("the agent joined a tunnel it serves no service of")
	}
	if saved, _ := filepath.Glob(filepath.Join(e.cfg.DataDir, "tunnels", "*.json")); len(saved) != 0 {
		t.Fatalf("saved tunnel state %v for a tunnel not joined", saved)
	}
}

// safeTempDir is a temporary directory that sshd accepts authorized_keys files from:
// no directory above it may be writable by others (like OpenSSH's StrictModes), which
// rules out anything under /tmp.
func safeTempDir(t *testing.T) string {
	t.Helper()
	base, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	base = filepath.Join(base, "porthole-test")
	if err := os.MkdirAll(base, 0o700); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, "keys")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// A service with no target is refused with its name cut: the tunnel logs the
// refusal, and the service's SERVICE_IDS may name one of 64 KiB.
func TestUnknownServiceRefusalCutsTheName(t *testing.T) {
	var svc atomic.Pointer[map[string]string]
	svc.Store(&map[string]string{"SSH": BuiltinSSH})
	d := &serviceDialer{services: &svc}
	_, err := d.DialService(context.Background(), strings.Repeat("L", 20000))
	if !errors.Is(err, tunnel.ErrUnknownService) || len(err.Error()) > 300 {
		t.Fatalf("DialService(20000 characters) = %.300s (%d bytes), want ErrUnknownService with the name cut", err, len(fmt.Sprint(err)))
	}
}

// SIGHUP's Reload swaps the service map for live sessions and names what needs a
// restart.
func TestReloadSwapsServiceMap(t *testing.T) {
	e := newAgentEnv(t)
	a, _ := e.start(t)
	d := &serviceDialer{services: &a.svc, label: "x", ssh: func(c net.Conn) { c.Close() }}
	if _, err := d.DialService(context.Background(), "WEB"); err == nil {
		t.Fatal("WEB reachable before it was configured")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	next := *e.cfg
	next.Services = map[string]string{"SSH": BuiltinSSH, "WEB": ln.Addr().String()}
	next.ThingName = "other-thing"
	restart := a.Reload(&next)
	c, err := d.DialService(context.Background(), "WEB")
	if err != nil {
		t.Fatalf("WEB after reload: %v", err)
	}
	c.Close()
	if len(restart) != 1 || restart[0] != "thing_name" {
		t.Fatalf("Reload reported %q, want thing_name only", restart)
	}
	next.Log.Format = "json"
	next.Log.Level = "debug" // applied by the command on SIGHUP, no restart
	if restart := a.Reload(&next); strings.Join(restart, ",") != "log.format,thing_name" {
		t.Fatalf("Reload reported %q, want log.format and thing_name", restart)
	}
}

// TestReloadAppliesLogins: SIGHUP applies who may log in, as OpenSSH's sshd
// does: an authorized_keys file dropped from the config after a revocation
// (the documented edit and reload) let its keys log in as root until a
// restart, with only a "needs a restart: ssh" line.
func TestReloadAppliesLogins(t *testing.T) {
	e := newAgentEnv(t)
	a, _ := e.start(t)
	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	login := func(signer gossh.Signer) error {
		client, stop, err := e.sshLogin(t, tun, signer)
		if err == nil {
			client.Close()
			stop()
		}
		return err
	}
	if err := login(e.signer); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := gossh.NewSignerFromKey(priv)
	otherFile := filepath.Join(safeTempDir(t), "authorized_keys")
	os.WriteFile(otherFile, gossh.MarshalAuthorizedKey(other.PublicKey()), 0o600)
	next := *e.cfg
	next.SSH.AuthorizedKeys = []string{otherFile}
	if restart := a.Reload(&next); len(restart) != 0 {
		t.Errorf("Reload of authorized_keys reported %q to restart", restart)
	}
	if err := login(e.signer); err == nil {
		t.Error("after a reload that dropped its authorized_keys file, the key still logs in as root")
	}
	if err := login(other); err != nil {
		t.Errorf("the key of the new authorized_keys file: %v", err)
	}
	// Password login is offered or not from the start; other [ssh] keys need
	// a restart as before.
	next.SSH.PasswordHashes = map[string]string{"root": "$2a$04$abcdefghijklmnopqrstuuC6BhpMh3Vz6nMdSbiTTH1cfBM8o9DB."}
	next.SSH.MaxSessions = 3
	if restart := strings.Join(a.Reload(&next), ","); restart != "ssh,ssh.password_hashes (password login was off at start)" {
		t.Errorf("Reload reported %q", restart)
	}
}

// A notification that comes while the agent stops (MQTT is still up for the
// last events, and the message is acknowledged) is saved for the next start,
// which joins its tunnel; one whose tunnel is saved already keeps its file.
func TestNotificationWhileStoppingKept(t *testing.T) {
	a := stoppedAgent(t)
	n := notify.Notification{ClientAccessToken: "AQGAAXnew-token", ClientMode: "destination", Region: testRegion, Services: []string{"SSH"}}
	a.notified(n)
	saved, _, errs := a.store.load(time.Now())
	if len(errs) != 0 || len(saved) != 1 || saved[0].AccessToken != n.ClientAccessToken || saved[0].ClientToken == "" {
		t.Fatalf("after a notification while stopping: saved %d tunnels (%v), want its tunnel", len(saved), errs)
	}
	first := saved[0].ClientToken
	a.notified(n)
	if saved, _, _ := a.store.load(time.Now()); len(saved) != 1 || saved[0].ClientToken != first {
		t.Errorf("a second notification of a saved tunnel replaced its client token")
	}
}

// A notification acknowledged just as the agent stops is joined or saved for
// the next start, never dropped: Run cancels under a.mu, so the decision must
// be made under it (the broker will not deliver the message again).
func TestNotificationAtStopNeverDropped(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{ThingName: "dev-1", DataDir: dir, Services: map[string]string{"SSH": BuiltinSSH},
		Tunnel: TunnelConfig{MaxTunnels: 64, Endpoint: "ws://127.0.0.1:1", AllowInsecureWebSocket: true}}
	lost := 0
	const rounds = 1000
	for i := range rounds {
		a := &Agent{cfg: cfg, log: slog.New(slog.DiscardHandler), store: stateStore{dir: filepath.Join(dir, "tunnels")}, sessions: map[string]*session{}}
		svc := cfg.Services
		a.svc.Store(&svc)
		ctx, cancel := context.WithCancel(context.Background())
		a.ctx = ctx
		n := notify.Notification{ClientAccessToken: fmt.Sprintf("AQGAA-token-%d", i), ClientMode: "destination", Region: testRegion, Services: []string{"SSH"}}
		done := make(chan struct{})
		go func() { defer close(done); a.notified(n) }()
		runtime.Gosched()
		a.mu.Lock() // as Run stops
		cancel()
		a.mu.Unlock()
		<-done
		a.wg.Wait()
		if _, err := os.Stat(a.store.path(tokenKey(n.ClientAccessToken))); err != nil {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d notifications that came as the agent stopped were neither joined nor saved", lost, rounds)
	}
}

// Which idle session gives up its place past max_tunnels goes by the order the
// sessions were used in, not by wall-clock readings: a clock set back (NTP's
// first answer on a router, date -s) between two uses must not make the one
// used last look the oldest.
func TestLeastRecentlyUsedIgnoresClockSteps(t *testing.T) {
	wall := time.Now()
	a := &Agent{cfg: &Config{}, log: slog.New(slog.DiscardHandler), sessions: map[string]*session{},
		now: func() time.Time { return wall }}
	target := tunnel.DialerFunc(func(context.Context, string) (net.Conn, error) {
		c, peer := net.Pipe()
		peer.Close()
		return c, nil
	})
	use := func(s *session) {
		c, err := a.countStreams(s, target, a.log).DialService(context.Background(), "SSH")
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	first, second := &session{fp: "first"}, &session{fp: "second"}
	a.sessions["first"], a.sessions["second"] = first, second
	use(first)
	time.Sleep(time.Millisecond)
	wall = wall.Add(-3 * time.Hour) // the clock is set back
	use(second)
	if got := a.oldestIdleLocked(); got != first {
		t.Errorf("least recently used = %s, want first (second was used after it, the clock having been set back)", got.fp)
	}
}

// An https_proxy in the agent's environment that does not parse would fail
// every tunnel alike: the agent (and check-config, through Check) refuses it
// at start, naming the variable, as porthole connect does; tunnel.https_proxy
// in the config wins over it.
func TestEnvironmentProxyCheckedAtStart(t *testing.T) {
	e := newAgentEnv(t)
	t.Setenv("https_proxy", "socks5://127.0.0.1:1080")
	t.Setenv("no_proxy", "")
	t.Setenv("NO_PROXY", "")
	if _, err := New(e.cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "https_proxy") {
		t.Errorf("New with https_proxy=socks5://... = %v, want an error naming https_proxy", err)
	}
	e.cfg.Tunnel.HTTPSProxy = "http://proxy.example.com:3128"
	if _, err := New(e.cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("with tunnel.https_proxy set: %v", err)
	}
}

// Once the agent stops, rejected notifications are only logged: no event, and
// no window whose timer would outlive Run.
func TestRejectionsAfterStopArmNothing(t *testing.T) {
	a := stoppedAgent(t)
	for range rejectionBurst + 5 {
		a.rejected(notify.ErrInvalidNotification)
	}
	a.rejections.mu.Lock()
	defer a.rejections.mu.Unlock()
	if a.rejections.timer != nil || a.rejections.passed != 0 || a.rejections.suppressed != 0 {
		t.Errorf("after Run: rejections counted (%d passed, %d suppressed) or a timer armed (%v)", a.rejections.passed, a.rejections.suppressed, a.rejections.timer != nil)
	}
}

// stoppedAgent is an agent as Run leaves it once it stops: its context ended.
func stoppedAgent(t *testing.T) *Agent {
	e := newAgentEnv(t)
	a, err := New(e.cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a.ctx = ctx
	return a
}

// An agent whose logins cannot work says so once at start, with the config's
// key names; its SSH server, which would say it too, leaves it to the agent.
func TestNoLoginWarnedOnce(t *testing.T) {
	e := newAgentEnv(t)
	e.cfg.SSH.AuthorizedKeys = []string{"/nonexistent/authorized_keys"}
	var logs testlog.Lines
	_, stop := e.startLogging(t, io.MultiWriter(&logs, testWriter{t}))
	stop()
	if n := logs.Count("no login method can work"); n != 1 {
		t.Errorf("%d warnings that no login method can work, want 1:\n%s", n, logs.String())
	}
	if logs.Count("ssh.authorized_keys") == 0 {
		t.Errorf("the warning does not name the config key:\n%s", logs.String())
	}
}

// What the docs say of a reload of [services]: connections open then keep
// their target, each new one (here V3 connections of the stream that is open)
// uses the new map, and a service removed refuses its next connection.
func TestReloadKeepsOpenConnections(t *testing.T) {
	e := newAgentEnv(t)
	e.cfg.Services = map[string]string{"SSH": BuiltinSSH, "WEB": tunneltest.EchoServer(t, 0)}
	a, _ := e.start(t)
	tun := e.fake.OpenTunnel("WEB")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "WEB")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	tok, _ := tunnel.NewAccessToken(tun.SourceToken)
	ready := make(chan string, 1)
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: e.fake.URL, AllowInsecureWebSocket: true, AccessToken: tok, ClientToken: e.srcClient},
		Listen: map[string]string{"WEB": "127.0.0.1:0"}, OnListen: func(_ string, a net.Addr) { ready <- a.String() }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	defer func() { cancel(); <-done }()
	addr := <-ready
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// echo sends "ab" and returns what comes back ("" when the connection is reset).
	echo := func(c net.Conn) string {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("ab"))
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil {
			return ""
		}
		return string(b)
	}
	first := dial()
	if got := echo(first); got != "ab" {
		t.Fatalf("before reload: %q", got)
	}
	next := *e.cfg
	next.Services = map[string]string{"SSH": BuiltinSSH, "WEB": tunneltest.EchoServer(t, 0x20)} // upper case
	a.Reload(&next)
	if got := echo(first); got != "ab" {
		t.Errorf("open connection after re-targeting: %q, want its old target's \"ab\"", got)
	}
	if got := echo(dial()); got != "AB" {
		t.Errorf("new connection after re-targeting: %q, want the new target's \"AB\"", got)
	}
	next.Services = map[string]string{"SSH": BuiltinSSH}
	a.Reload(&next)
	if got := echo(first); got != "ab" {
		t.Errorf("open connection after its service was removed: %q, want it open", got)
	}
	if got := echo(dial()); got != "" {
		t.Errorf("new connection after its service was removed: %q, want it reset", got)
	}
}

// sessionExpirySeen allows every client and records the Session Expiry
// Interval of each CONNECT.
type sessionExpirySeen struct {
	auth.AllowHook
	seen chan uint32
}

func (h *sessionExpirySeen) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnConnect
}

func (h *sessionExpirySeen) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	select {
	case h.seen <- pk.Properties.SessionExpiryInterval:
	default:
	}
	return nil
}

// TestAgentAsksSessionExpiry: a tunnel lives up to 12 h and its notification
// is published once, when it opens; the agent asked every broker to keep its
// session 1 h (notify's default), with no key to change it, so a device
// offline longer never joined a tunnel still open, even on a broker that
// would keep the session longer (Mosquitto, an AWS account with a raised
// limit). mqtt.session_expiry is the Session Expiry Interval of its CONNECT.
func TestAgentAsksSessionExpiry(t *testing.T) {
	h := &sessionExpirySeen{seen: make(chan uint32, 4)}
	e := newAgentEnvACL(t, h)
	e.cfg.MQTT.SessionExpiry = SetDuration(12 * time.Hour)
	e.start(t)
	select {
	case got := <-h.seen:
		if got != 12*3600 {
			t.Errorf("CONNECT Session Expiry Interval %d s, want %d (mqtt.session_expiry = \"12h\")", got, 12*3600)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not connect")
	}
}

// An ssh.listen address that another daemon holds (the router's dropbear on
// :22) stopped the agent at start (exit 2, before it connected to the broker),
// and the init system's restarts with it: a reload to such an address, which
// says only "needs a restart", took the device off the network for good. The
// agent now connects and serves tunnels, says what it cannot listen on, and
// serves SSH there once the port is free.
func TestSSHListenTakenAtStart(t *testing.T) {
	first, most := sshListenRetryFirst, sshListenRetryMax
	sshListenRetryFirst, sshListenRetryMax = 10*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() { sshListenRetryFirst, sshListenRetryMax = first, most })
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	e := newAgentEnv(t)
	e.cfg.SSH.Listen = addr
	var logs testlog.Lines
	e.startLogging(t, io.MultiWriter(&logs, testWriter{t})) // connected to the broker
	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	if out := e.sshThrough(t, tun, "echo ok", nil); out != "ok\n" {
		t.Errorf("ssh through the tunnel while ssh.listen is taken: %q, want \"ok\\n\"", out)
	}
	for deadline := time.Now().Add(10 * time.Second); logs.Count("still cannot listen") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no retry of ssh.listen while the port is taken:\n%s", logs.String())
		}
	}
	// Said first, by the goroutine that then retries (it may come after
	// the notify subscription, which startLogging waits for).
	if logs.Count("level=ERROR") == 0 || !strings.Contains(logs.String(), "ssh.listen") || !strings.Contains(logs.String(), addr) {
		t.Errorf("the log does not say at ERROR that ssh.listen %s cannot listen:\n%s", addr, logs.String())
	}
	taken.Close()
	cfg := &gossh.ClientConfig{User: "root", Auth: []gossh.AuthMethod{gossh.PublicKeys(e.signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := gossh.Dial("tcp", addr, cfg)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh to ssh.listen %s after its port was freed: %v\n%s", addr, err, logs.String())
		}
	}
	if logs.Count("ssh.listen: listening now") != 1 {
		t.Errorf("the log does not say once that ssh.listen listens now:\n%s", logs.String())
	}
}

// TestPortHint: an agent that may not bind ssh.listen's port (below
// net.ipv4.ip_unprivileged_port_start, without root or CAP_NET_BIND_SERVICE)
// is told why, once; any other port, or one it may bind, says nothing.
func TestPortHint(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		start   int
		mayBind bool
		want    string
	}{
		{"127.0.0.1:22", 1024, false, "ports below 1024 need root or CAP_NET_BIND_SERVICE (net.ipv4.ip_unprivileged_port_start), which the agent (uid "},
		{"[::1]:1023", 1024, false, "ports below 1024 "},
		{":80", 443, false, "ports below 443 "},
		{"127.0.0.1:22", 1024, true, ""},
		{"127.0.0.1:1024", 1024, false, ""},
		{"127.0.0.1:22", 0, false, ""}, // sysctl net.ipv4.ip_unprivileged_port_start=0 (Docker's)
		{"127.0.0.1:0", 1024, false, ""},
		{"127.0.0.1:ssh", 1024, false, ""},
		{"", 1024, false, ""},
	} {
		got := portHint(tc.addr, tc.start, tc.mayBind)
		if tc.want == "" && got != "" || !strings.HasPrefix(got, tc.want) {
			t.Errorf("portHint(%q, %d, %v) = %q, want %q...", tc.addr, tc.start, tc.mayBind, got, tc.want)
		}
	}
	// mayBindLow says what the kernel does: a port below 1024 (where
	// ip_unprivileged_port_start is 1024, not Docker's 0) binds or not.
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); strings.TrimSpace(string(b)) == "1024" {
		ln, err := net.Listen("tcp", "127.0.0.1:1023")
		if err == nil {
			ln.Close()
		}
		if denied := errors.Is(err, os.ErrPermission); (err == nil || denied) && mayBindLow() == denied {
			t.Errorf("mayBindLow() = %v, but binding 127.0.0.1:1023: %v", !denied, err)
		}
	}
}

// An ssh.listen with a host name whose lookup never ends (no DNS at boot, a
// nameserver that drops queries) held the start, and with it MQTT and every
// saved tunnel, until the resolver gave up (40 s with OpenWrt's resolv.conf),
// and the agent's stop while a retry's lookup ran. The bind at start now gives
// the lookup sshListenLookup, and the retries end with the agent.
func TestSSHListenLookupHangs(t *testing.T) {
	first, most, lookup := sshListenRetryFirst, sshListenRetryMax, sshListenLookup
	sshListenRetryFirst, sshListenRetryMax, sshListenLookup = 10*time.Millisecond, 50*time.Millisecond, 100*time.Millisecond
	resolver := net.DefaultResolver
	var lookups atomic.Int64 // queries sent
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		lookups.Add(1)
		return &silentDNS{ctx: ctx}, nil
	}}
	t.Cleanup(func() {
		sshListenRetryFirst, sshListenRetryMax, sshListenLookup = first, most, lookup
		net.DefaultResolver = resolver
	})
	e := newAgentEnv(t)
	e.cfg.SSH.Listen = "sshhost.example:2222"
	var logs testlog.Lines
	_, stop := e.startLogging(t, io.MultiWriter(&logs, testWriter{t})) // connected to the broker
	for deadline := time.Now().Add(10 * time.Second); logs.Count("ssh.listen: cannot listen") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not say that ssh.listen cannot listen:\n%s", logs.String())
		}
	}
	// A retry's lookup is under way once more queries are sent.
	for n, deadline := lookups.Load(), time.Now().Add(10*time.Second); lookups.Load() == n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("ssh.listen is not tried again")
		}
	}
	// The lookup is the resolver's: a nameserver that never answers holds it
	// for attempts × servers × 5 s, which the agent's stop no longer waits
	// for.
	stopped := make(chan struct{})
	go func() { defer close(stopped); stop() }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		t.Fatal("the agent does not stop while a retry of ssh.listen waits for its lookup")
	}
}

// silentDNS is a nameserver connection that never answers, whatever deadline
// the resolver sets, until the lookup's context ends.
type silentDNS struct {
	net.Conn
	ctx context.Context
}

func (c *silentDNS) Read([]byte) (int, error) {
	<-c.ctx.Done()
	return 0, c.ctx.Err()
}
func (c *silentDNS) Write(b []byte) (int, error)      { return len(b), nil }
func (c *silentDNS) Close() error                     { return nil }
func (c *silentDNS) SetDeadline(time.Time) error      { return nil }
func (c *silentDNS) SetReadDeadline(time.Time) error  { return nil }
func (c *silentDNS) SetWriteDeadline(time.Time) error { return nil }
func (c *silentDNS) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (c *silentDNS) RemoteAddr() net.Addr             { return &net.UDPAddr{} }

// TestAgentJoinsATunnelWithMoreThanThreeServices: AWS's quota of 3 services per
// tunnel can be raised (spec §3.4). The agent joins such a tunnel (it refused
// every notification naming more than 3) and serves the services it has.
func TestAgentJoinsATunnelWithMoreThanThreeServices(t *testing.T) {
	e := newAgentEnv(t)
	e.start(t)
	services := []string{"SSH", "WEB", "VNC", "RDP", "MODBUS"}
	tun := e.fake.OpenTunnel(services...)
	e.broker.notify(t, "dev-1", tun.DestinationToken, services...)
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatalf("agent did not open the 5-service tunnel: %v", err)
	}
	if out := e.sshThrough(t, tun, "echo five", nil); out != "five\n" {
		t.Fatalf("ssh output %q", out)
	}
	e.broker.waitEvent(t, "service-unmapped", func(ev Event) bool { return len(ev.Services) == 4 })
}

// An agent whose password hashes cost much says so before it makes its own of
// that cost, which the start waits for (a minute at cost 14 on a slow router):
// its log was silent meanwhile.
func TestSlowPasswordHashSaidBeforeTheStart(t *testing.T) {
	e := newAgentEnv(t)
	e.cfg.SSH.PasswordHashes = map[string]string{"root": "$2a$13$abcdefghijklmnopqrstuuJ4zbq3eTo8Vq3I2tgu0UI2t7PvIVuLm"}
	var logs testlog.Lines
	a := e.newAgent(t, slog.New(slog.NewTextHandler(io.MultiWriter(&logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Not startLogging's 10 s: a hash of cost 13 under -race on a loaded
	// machine took longer (CI, once).
	for deadline := time.Now().Add(2 * time.Minute); logs.Count("porthole agent started") == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Error("the agent did not start within 2 minutes")
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("agent Run: %v", err)
	}
	out := logs.String()
	said, started := strings.Index(out, "making a password hash of the highest cost"), strings.Index(out, "porthole agent started")
	if said < 0 || started < 0 || said > started || !strings.Contains(out, "bcrypt_cost=13") {
		t.Errorf("the cost-13 hash is not said before the start:\n%s", out)
	}
}

// A tunnel whose services [services] names in another letter case ("ssh" for
// the console's "SSH") is not joined, and the warning says that the names
// match with their case.
func TestServiceNamesMatchWithTheirCase(t *testing.T) {
	e := newAgentEnv(t)
	e.cfg.Services = map[string]string{"ssh": BuiltinSSH}
	var logs testlog.Lines
	e.startLogging(t, io.MultiWriter(&logs, testWriter{t}))
	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	e.broker.waitEvent(t, "notification-rejected", func(ev Event) bool { return ev.Tunnel == fingerprint(tun.DestinationToken) })
	if logs.Count("letter case too") != 1 {
		t.Errorf("the warning does not say that service names match with their case:\n%s", logs.String())
	}
}
