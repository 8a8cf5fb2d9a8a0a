package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/tools/internal/mqtttest"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const thing = "e2e-device"

func needProgram(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required (make test installs it): %v", name, err)
		}
		t.Skipf("%s not installed; `make test` installs it", name)
	}
	return p
}

// safeDir is a temporary directory whose parents nobody else can write: sshd
// refuses authorized_keys files anywhere else (like OpenSSH's StrictModes).
func safeDir(t *testing.T) string {
	base, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	base = filepath.Join(base, "porthole-test")
	if err := os.MkdirAll(base, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := os.MkdirTemp(base, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// logFile collects a process's output and lets a test wait for a line.
type logFile struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	cond chan struct{}
}

func newLog() *logFile { return &logFile{cond: make(chan struct{}, 1)} }

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	select {
	case l.cond <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (l *logFile) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// wait returns the first match of re after offset from, waiting up to d.
func (l *logFile) wait(t *testing.T, re *regexp.Regexp, from int, d time.Duration) []string {
	t.Helper()
	deadline := time.After(d)
	for {
		s := l.String()
		if from < len(s) {
			if m := re.FindStringSubmatch(s[from:]); m != nil {
				return m
			}
		}
		select {
		case <-l.cond:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no line matching %q within %v; log:\n%s", re, d, s)
		}
	}
}

func (l *logFile) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

type env struct {
	t        *testing.T
	bin      string
	dir      string
	broker   *mqtttest.Broker
	td       *tunneld.Server
	tdAddr   string
	key      string // operator private key file
	agentLog *logFile
	agent    *exec.Cmd

	evMu   sync.Mutex
	events []string // every event the agent published, in order
}

func buildPorthole(t *testing.T) string {
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "github.com/porthole-iot/porthole/agent/cmd/porthole")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(bin, "porthole")
}

func newEnv(t *testing.T) *env {
	for _, p := range []string{"ssh", "sftp", "scp"} {
		needProgram(t, p)
	}
	if os.Geteuid() != 0 {
		t.Skip("the agent logs operators in as root here; run as root (CI does)")
	}
	e := &env{t: t, bin: buildPorthole(t), dir: safeDir(t), broker: mqtttest.StartMosquitto(t)}
	pki := e.broker.PKI
	pubCert, pubKey := pki.Client(t, mqtttest.PublisherCN)
	notifier, err := tunneld.NewMQTTNotifier(tunneld.MQTTConfig{Broker: e.broker.Addr, CAFile: pki.CAFile, CertFile: pubCert, KeyFile: pubKey})
	if err != nil {
		t.Fatal(err)
	}
	e.td, err = tunneld.New(tunneld.Config{TLS: pki.ServerTLS(t, "tunneld"), Notifier: notifier, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.tdAddr = ln.Addr().String()
	served := make(chan struct{})
	go func() { defer close(served); e.td.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.td.Shutdown(ctx)
		notifier.Close(ctx)
		<-served
	})

	// The operator's key, authorized on the device.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := gossh.MarshalPrivateKey(priv, "e2e operator")
	e.key = filepath.Join(e.dir, "id_ed25519")
	writeFile(t, e.key, pem.EncodeToMemory(block), 0o600)
	signer, _ := gossh.NewSignerFromKey(priv)
	writeFile(t, filepath.Join(e.dir, "authorized_keys"), gossh.MarshalAuthorizedKey(signer.PublicKey()), 0o600)

	devCert, devKey := pki.Client(t, thing)
	cfg := fmt.Sprintf(`thing_name = %q
data_dir = %q
[mqtt]
endpoint = %q
ca_file = %q
cert_file = %q
key_file = %q
event_topic = "$aws/things/%s/events"
keepalive = "5s"
[tunnel]
endpoint = %q
ca_file = %q
[ssh]
authorized_keys = [%q]
`, thing, filepath.Join(e.dir, "data"), e.broker.Addr, pki.CAFile, devCert, devKey, thing, e.tdAddr, pki.CAFile, filepath.Join(e.dir, "authorized_keys"))
	writeFile(t, filepath.Join(e.dir, "porthole.toml"), []byte(cfg), 0o600)
	evs := e.broker.Subscribe(t, thing, "$aws/things/"+thing+"/events")
	stop := make(chan struct{})
	collected := make(chan struct{})
	go func() { // drain at once: the subscription's buffer is small
		defer close(collected)
		for {
			select {
			case b := <-evs:
				e.evMu.Lock()
				e.events = append(e.events, string(b))
				e.evMu.Unlock()
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-collected })
	e.startAgent()
	return e
}

func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) {
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

var subscribedRE = regexp.MustCompile(`notify subscription granted`)

func (e *env) startAgent() {
	t := e.t
	e.agentLog = newLog()
	e.agent = exec.Command(e.bin, "agent", "-c", filepath.Join(e.dir, "porthole.toml"))
	e.agent.Stdout, e.agent.Stderr = e.agentLog, e.agentLog
	if err := e.agent.Start(); err != nil {
		t.Fatal(err)
	}
	agent := e.agent
	t.Cleanup(func() {
		if agent.ProcessState == nil {
			agent.Process.Kill()
			agent.Wait()
		}
	})
	e.agentLog.wait(t, subscribedRE, 0, 30*time.Second)
}

// stopAgent sends SIGTERM and checks the agent exits 0 within 5 s.
func (e *env) stopAgent() {
	t := e.t
	e.agent.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- e.agent.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v\n%s", err, e.agentLog.String())
		}
	case <-time.After(6 * time.Second):
		t.Fatalf("agent did not stop within 5 s of SIGTERM")
	}
}

func (e *env) openTunnel(services ...string) *tunneld.OpenTunnelOutput {
	t := e.t
	out, err := e.td.OpenTunnel(context.Background(), &tunneld.OpenTunnelInput{
		DestinationConfig: &tunneld.DestinationConfig{ThingName: thing, Services: services}})
	if err != nil {
		t.Fatal(err)
	}
	e.waitDestination(out.TunnelID, 30*time.Second)
	return out
}

func (e *env) waitDestination(id string, d time.Duration) {
	t := e.t
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		out, err := e.td.DescribeTunnel(context.Background(), &tunneld.DescribeTunnelInput{TunnelID: id})
		if err != nil {
			t.Fatal(err)
		}
		if s := out.Tunnel.DestinationConnectionState; s != nil && s.Status == "CONNECTED" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the agent did not connect tunnel %s within %v; agent log:\n%s", id, d, e.agentLog.String())
}

var listeningRE = regexp.MustCompile(`msg=listening .*service=SSH addr=(127\.0\.0\.1:\d+)`)

// connect runs `porthole connect -L SSH=0` for a tunnel and returns the local port.
func (e *env) connect(out *tunneld.OpenTunnelOutput) (port string, log *logFile, stop func()) {
	t := e.t
	tok := filepath.Join(e.dir, out.TunnelID+".token")
	writeFile(t, tok, []byte(out.SourceAccessToken+"\n"), 0o600)
	log = newLog()
	cmd := exec.Command(e.bin, "connect", "--endpoint", e.tdAddr, "--ca-file", e.broker.PKI.CAFile, "--token-file", tok, "-L", "SSH=0")
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(e.dir, "cache"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGINT)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("porthole connect after SIGINT: %v\n%s", err, log.String())
				}
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Errorf("porthole connect did not stop")
			}
		})
	}
	t.Cleanup(stop)
	m := log.wait(t, listeningRE, 0, 30*time.Second)
	_, port, _ = net.SplitHostPort(m[1])
	return port, log, stop
}

func (e *env) sshOpts() []string {
	return []string{"-i", e.key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"}
}

func (e *env) ssh(port string, command string) string {
	t := e.t
	args := append(e.sshOpts(), "-p", port, "root@127.0.0.1", command)
	out, err := exec.Command("ssh", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh %q: %v\n%s\nagent log:\n%s", command, err, out, e.agentLog.String())
	}
	return string(out)
}

func hashFile(t *testing.T, p string) [32]byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// waitEvent waits for an event of typ whose JSON contains want.
func (e *env) waitEvent(typ, want string, d time.Duration) {
	t := e.t
	deadline := time.Now().Add(d)
	for {
		e.evMu.Lock()
		seen := append([]string(nil), e.events...)
		e.evMu.Unlock()
		for _, b := range seen {
			var ev struct{ Type string }
			json.Unmarshal([]byte(b), &ev)
			if ev.Type == typ && strings.Contains(b, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event containing %q within %v; got:\n%s", typ, want, d, strings.Join(seen, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAgentEndToEnd: tunneld publishes the notification on a real Mosquitto with
// mutual TLS, the built agent opens the tunnel, `porthole connect` serves the source
// side, and the OpenSSH client logs in and moves files both ways.
func TestAgentEndToEnd(t *testing.T) {
	e := newEnv(t)
	open := e.openTunnel("SSH")
	port, connectLog, stopConnect := e.connect(open)

	if got := e.ssh(port, "echo logged in as $(id -un)"); got != "logged in as root\n" {
		t.Fatalf("ssh: %q", got)
	}

	// 16 MiB both ways, with sftp and scp (SFTP protocol) and legacy scp -O.
	src := filepath.Join(e.dir, "random.bin")
	data := make([]byte, 16<<20)
	rand.Read(data)
	writeFile(t, src, data, 0o600)
	want := sha256.Sum256(data)
	remote := filepath.Join(e.dir, "remote.bin")
	back := filepath.Join(e.dir, "back.bin")
	batch := filepath.Join(e.dir, "sftp.batch")
	writeFile(t, batch, []byte(fmt.Sprintf("put %s %s\nget %s %s\n", src, remote, remote, back)), 0o600)
	sftpArgs := append(e.sshOpts(), "-P", port, "-b", batch, "root@127.0.0.1")
	if out, err := exec.Command("sftp", sftpArgs...).CombinedOutput(); err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	if hashFile(t, remote) != want || hashFile(t, back) != want {
		t.Fatal("sftp: file differs after the round trip")
	}
	for _, legacy := range []bool{false, true} {
		os.Remove(remote)
		os.Remove(back)
		opts := append(e.sshOpts(), "-P", port)
		if legacy {
			opts = append(opts, "-O")
		}
		if out, err := exec.Command("scp", append(opts, src, "root@127.0.0.1:"+remote)...).CombinedOutput(); err != nil {
			t.Fatalf("scp (legacy %v) upload: %v\n%s", legacy, err, out)
		}
		if out, err := exec.Command("scp", append(opts, "root@127.0.0.1:"+remote, back)...).CombinedOutput(); err != nil {
			t.Fatalf("scp (legacy %v) download: %v\n%s", legacy, err, out)
		}
		if hashFile(t, remote) != want || hashFile(t, back) != want {
			t.Fatalf("scp (legacy %v): file differs after the round trip", legacy)
		}
	}

	// The service drops the agent's WebSocket during an idle moment: the agent comes
	// back with its client token (same access token), and logins work again.
	dp := e.td.Dataplane(open.TunnelID)
	dp.Drop(dataplane.Destination)
	if err := dp.WaitConnects(ctxTimeout(t, 20*time.Second), dataplane.Destination, 2); err != nil {
		t.Fatalf("agent did not reconnect after its WebSocket was dropped: %v\n%s", err, e.agentLog.String())
	}
	if got := e.ssh(port, "echo back"); got != "back\n" {
		t.Fatalf("ssh after reconnect: %q", got)
	}
	stopConnect()
	if strings.Contains(connectLog.String(), open.SourceAccessToken) || strings.Contains(e.agentLog.String(), open.DestinationAccessToken) {
		t.Fatal("a log shows an access token")
	}

	// Mosquitto restarts: the agent reconnects and a new tunnel still reaches it.
	e.broker.Stop()
	e.broker.Start()
	from := e.agentLog.len()
	e.agentLog.wait(t, subscribedRE, from, 60*time.Second)
	open2 := e.openTunnel("SSH", "WEB")
	e.waitEvent("service-unmapped", `"WEB"`, 20*time.Second)
	port2, _, stop2 := e.connect(open2)
	if got := e.ssh(port2, "echo second tunnel"); got != "second tunnel\n" {
		t.Fatalf("ssh through the second tunnel: %q", got)
	}
	stop2()
	e.stopAgent()
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
