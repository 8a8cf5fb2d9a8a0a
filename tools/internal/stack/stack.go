// Package stack runs the whole porthole path on loopback for host-side tests and
// benchmarks: Mosquitto with mutual TLS (agent/notify/mqtttest), tunneld in
// process, the built `porthole agent` binary (with its SSH server also listening on
// a loopback port, so the same server can be reached directly), and
// `porthole connect` binaries as the source side. It is the harness of tools/e2e,
// shared; it is not a lab for people (that is tools/lab).
package stack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// Thing is the device's thing name.
const Thing = "stack-device"

// Region is tunneld's, in the notifications the agent gets. Its endpoint,
// data.tunneling.iot.x-.amazonaws.com, is one Go's resolver refuses without
// asking DNS (a label ending in -): an agent that lost tunnel.endpoint, which
// points it at this tunneld on 127.0.0.1, dials nothing beyond this machine.
const Region = "x-"

// NeedProgram is testenv.NeedProgram.
func NeedProgram(tb testing.TB, name string) string {
	tb.Helper()
	return testenv.NeedProgram(tb, name)
}

// Options shape a Stack; the zero value is a device with the SSH service only.
type Options struct {
	// Services are extra [services] lines, e.g. `WEB = "127.0.0.1:80"`.
	Services []string
	// SSH are extra [ssh] lines.
	SSH []string
	// Tunnel are extra [tunnel] lines.
	Tunnel []string
	// MQTT are extra [mqtt] lines, e.g. an event_topic.
	MQTT []string
	// Env is added to the agent's environment.
	Env []string
	// TunneldLog receives tunneld's records; nil discards.
	TunneldLog *slog.Logger
	// PlainWebSocket serves the data plane as ws:// (no TLS) to the agent and to
	// porthole connect: benchmarks use it to tell the cost of the two extra TLS
	// hops from that of the tunnel itself.
	PlainWebSocket bool
	// LogLevel is the agent's [log] level, and porthole connect runs with -v when
	// it is "debug". Empty means "debug": CheckNoSecrets then also reads what the
	// debug lines say. Benchmarks set "info" (a debug line per frame costs CPU).
	LogLevel string
	// AgentPipe, if set, is the size of the pipe the agent writes its output
	// into (F_SETPIPE_SZ, at least a page): a test that stalls AgentLog then
	// blocks the agent's writes after that much instead of the default 64 KiB.
	// The Log then gets the agent's last lines a moment after it exits: wait
	// for a line rather than read AgentLog right after StopAgent.
	AgentPipe int
}

// Stack is one running path. Its fields are read-only after Start.
type Stack struct {
	TB       testing.TB
	Bin      string // the porthole binary
	Dir      string
	Broker   *mqtttest.Broker
	Key      string // operator private key file
	Config   string // the agent's config file
	DataDir  string // the agent's data_dir
	SSHAddr  string // the agent's sshd on loopback: direct SSH to the same server
	TDAddr   string
	AgentLog *Log
	Agent    *exec.Cmd

	opt      Options
	notifier *tunneld.MQTTNotifier
	tdDir    string
	mu       sync.Mutex
	td       *tunneld.Server
	tdServed chan struct{}
	logs     []*Log   // every log the stack captured, for secret checks
	secrets  []string // access tokens handed out through the stack
	connects []*exec.Cmd
}

// ConnectPIDs are the process ids of the porthole connect processes started.
func (s *Stack) ConnectPIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pids []int
	for _, c := range s.connects {
		pids = append(pids, c.Process.Pid)
	}
	return pids
}

var buildOnce struct {
	sync.Mutex
	path string
	dir  string // the temporary directory Build made, removed by Tests' Run
	main bool   // the package's TestMain runs Tests
}

// Tests wraps a package's testing.M so that, once its tests have run, the
// binary Build made (12 MB, one per test process) is removed from the
// temporary directory. A package whose tests use Build runs its tests through
// it: goleak.VerifyTestMain(stack.Tests(m)). Run as root, the tests run in
// a mount namespace where root's home is an empty directory of their own
// (testenv.InOwnHome): the agents they start log in root with no dotfiles.
// They run without the machine's proxy settings and umask (hostenv.Clear).
func Tests(m interface{ Run() int }) interface{ Run() int } { return tests{m} }

type tests struct{ m interface{ Run() int } }

func (t tests) Run() int {
	hostenv.Clear()
	if code, ran := testenv.InOwnHome(); ran {
		return code
	}
	// What the tests start (porthole connect, the lab's) keeps its client
	// tokens in the user's cache directory: a run's own one, not the home of
	// whoever runs the tests. It is below the user's, whose parents others
	// cannot write, for SafeDir. The caches worth keeping stay where they
	// are, named before XDG_CACHE_HOME changes: Go's build cache (the go
	// builds of the tests and the lab's would start cold: tools/lab's tests
	// took twice as long, its board test 86 s instead of 10) and the boards'
	// Debian packages (board/fetch.sh takes PORTHOLE_CACHE first).
	keepCaches()
	cache, err := safeTemp("cache")
	if err != nil {
		fmt.Fprintf(os.Stderr, "stack: %v\n", err)
		return 1
	}
	defer os.RemoveAll(cache)
	os.Setenv("XDG_CACHE_HOME", cache)
	buildOnce.Lock()
	buildOnce.main = true
	buildOnce.Unlock()
	code := t.m.Run()
	buildOnce.Lock()
	defer buildOnce.Unlock()
	if buildOnce.dir != "" {
		os.RemoveAll(buildOnce.dir)
		buildOnce.dir, buildOnce.path = "", ""
	}
	return code
}

// Build builds the porthole binary once per test process; PORTHOLE_STACK_BIN
// names a prebuilt one instead (a stripped device build, or one with profiling).
func Build(tb testing.TB) string {
	buildOnce.Lock()
	defer buildOnce.Unlock()
	if buildOnce.path != "" {
		return buildOnce.path
	}
	if p := os.Getenv("PORTHOLE_STACK_BIN"); p != "" {
		buildOnce.path = p
		return p
	}
	if !buildOnce.main {
		tb.Fatal("stack.Build: the package's TestMain must run its tests through stack.Tests, which removes the binary afterwards")
	}
	dir, err := os.MkdirTemp("", "porthole-stack-bin")
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+"/", "github.com/porthole-iot/porthole/agent/cmd/porthole")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	buildOnce.dir = dir
	buildOnce.path = filepath.Join(dir, "porthole")
	return buildOnce.path
}

// keepCaches sets GOCACHE and PORTHOLE_CACHE, those not set, to where they
// are now, so that a change of XDG_CACHE_HOME does not move them.
func keepCaches() {
	if os.Getenv("GOCACHE") == "" {
		if out, err := exec.Command("go", "env", "GOCACHE").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
			os.Setenv("GOCACHE", string(bytes.TrimSpace(out)))
		}
	}
	if os.Getenv("PORTHOLE_CACHE") == "" {
		if user, err := os.UserCacheDir(); err == nil {
			os.Setenv("PORTHOLE_CACHE", filepath.Join(user, "porthole"))
		}
	}
}

// SafeDir is a temporary directory whose parents nobody else can write: sshd
// refuses authorized_keys files anywhere else (like OpenSSH's StrictModes).
func SafeDir(tb testing.TB) string {
	d, err := safeTemp("stack")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// safeTemp makes a new directory named from prefix below the user's cache
// directory, whose parents nobody else can write.
func safeTemp(prefix string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	base = filepath.Join(base, "porthole-test")
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", err
	}
	return os.MkdirTemp(base, prefix)
}

// Start runs the broker, tunneld and the agent, and waits for the agent's MQTT
// subscription.
func Start(tb testing.TB, opt Options) *Stack {
	for _, p := range []string{"ssh", "sftp", "scp"} {
		NeedProgram(tb, p)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			tb.Fatal("the agent logs operators in as root here: CI must run the tests as root")
		}
		tb.Skip("the agent logs operators in as root here; run as root (CI does)")
	}
	if opt.LogLevel == "" {
		opt.LogLevel = "debug"
	}
	s := &Stack{TB: tb, Bin: Build(tb), Dir: SafeDir(tb), Broker: mqtttest.StartMosquitto(tb), opt: opt}
	s.tdDir = filepath.Join(s.Dir, "tunneld")
	if s.opt.TunneldLog == nil {
		s.opt.TunneldLog = slog.New(slog.NewTextHandler(s.NewLog(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// Registered first, so it runs last: after the agent and every porthole connect
	// have stopped and their logs are complete.
	tb.Cleanup(func() {
		if !tb.Failed() {
			s.CheckNoSecrets()
			return
		}
		// What the agent said went wrong, for the failure's report (its
		// debug lines, one per frame, would drown it).
		var lines []string
		for _, l := range strings.Split(s.AgentLog.String(), "\n") {
			if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "msg=session-end") {
				lines = append(lines, l)
			}
		}
		tb.Logf("agent log, warnings, errors and session ends:\n%s", strings.Join(lines, "\n"))
	})
	pki := s.Broker.PKI
	pubCert, pubKey := pki.Client(tb, mqtttest.PublisherCN)
	var err error
	s.notifier, err = tunneld.NewMQTTNotifier(tunneld.MQTTConfig{Broker: s.Broker.Addr, CAFile: pki.CAFile, CertFile: pubCert, KeyFile: pubKey})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.StopTunneld()
		s.notifier.Close(ctx)
	})
	s.StartTunneld("127.0.0.1:0")

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := gossh.MarshalPrivateKey(priv, "stack operator")
	s.Key = filepath.Join(s.Dir, "id_ed25519")
	s.write(s.Key, pem.EncodeToMemory(block))
	signer, _ := gossh.NewSignerFromKey(priv)
	s.write(filepath.Join(s.Dir, "authorized_keys"), gossh.MarshalAuthorizedKey(signer.PublicKey()))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.SSHAddr = ln.Addr().String()
	ln.Close()
	s.DataDir = filepath.Join(s.Dir, "data")
	// The agent removes a tunnel's file, and with it the client token, when
	// the tunnel ends; tunneld's state drops a closed tunnel's tokens.
	s.watchTokens(filepath.Join(s.DataDir, "tunnels"), s.tdDir)
	devCert, devKey := pki.Client(tb, Thing)
	tunnelLines := opt.Tunnel
	if opt.PlainWebSocket {
		tunnelLines = append([]string{"allow_insecure_websocket = true"}, tunnelLines...)
	}
	cfg := fmt.Sprintf(`thing_name = %q
data_dir = %q
[mqtt]
endpoint = %q
ca_file = %q
cert_file = %q
key_file = %q
keepalive = "5s"
%s
[tunnel]
endpoint = %q
ca_file = %q
%s
[services]
SSH = "builtin"
%s
[ssh]
listen = %q
authorized_keys = [%q]
%s
[log]
level = %q
`, Thing, s.DataDir, s.Broker.Addr, pki.CAFile, devCert, devKey, strings.Join(opt.MQTT, "\n"), s.tunnelEndpoint(), pki.CAFile, strings.Join(tunnelLines, "\n"),
		strings.Join(opt.Services, "\n"), s.SSHAddr, filepath.Join(s.Dir, "authorized_keys"), strings.Join(opt.SSH, "\n"), opt.LogLevel)
	s.Config = filepath.Join(s.Dir, "porthole.toml")
	s.write(s.Config, []byte(cfg))
	s.StartAgent()
	return s
}

func (s *Stack) write(path string, b []byte) {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		s.TB.Fatal(err)
	}
}

// TD is the running tunneld.
func (s *Stack) TD() *tunneld.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.td
}

// StartTunneld starts tunneld on addr with its state in the stack's directory.
func (s *Stack) StartTunneld(addr string) {
	tb := s.TB
	log := s.opt.TunneldLog
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := tunneld.Config{Region: Region, Notifier: s.notifier, DataDir: s.tdDir, Logger: log}
	if !s.opt.PlainWebSocket {
		cfg.TLS = s.Broker.PKI.ServerTLS(tb, "tunneld")
	}
	td, err := tunneld.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	var ln net.Listener
	for i := 0; ; i++ { // a restarted tunneld takes its old port back
		ln, err = net.Listen("tcp", addr)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); td.Serve(ln) }()
	s.mu.Lock()
	s.td, s.tdServed, s.TDAddr = td, served, ln.Addr().String()
	s.mu.Unlock()
}

// tunnelEndpoint is tunneld's data plane as the agent and porthole connect are
// given it.
func (s *Stack) tunnelEndpoint() string {
	if s.opt.PlainWebSocket {
		return "ws://" + s.TDAddr
	}
	return s.TDAddr
}

// StopTunneld shuts tunneld down (its state stays on disk).
func (s *Stack) StopTunneld() {
	s.mu.Lock()
	td, served := s.td, s.tdServed
	s.td = nil
	s.mu.Unlock()
	if td == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	td.Shutdown(ctx)
	td.Close()
	<-served
}

var subscribedRE = regexp.MustCompile(`notify subscription granted`)

// SubscribedRE matches the agent's line once its MQTT subscription is up.
func SubscribedRE() *regexp.Regexp { return subscribedRE }

// StartAgent starts the agent binary and waits for its subscription.
func (s *Stack) StartAgent() {
	tb := s.TB
	s.AgentLog = s.NewLog()
	cmd := exec.Command(s.Bin, "agent", "-c", s.Config)
	cmd.Env = append(os.Environ(), s.opt.Env...)
	cmd.SysProcAttr = orphanKill()
	cmd.Stdout, cmd.Stderr = s.AgentLog, s.AgentLog
	var r, w *os.File
	if s.opt.AgentPipe > 0 {
		var err error
		if r, w, err = os.Pipe(); err != nil {
			tb.Fatal(err)
		}
		if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, s.opt.AgentPipe); err != nil {
			tb.Fatalf("F_SETPIPE_SZ %d: %v", s.opt.AgentPipe, err)
		}
		cmd.Stdout, cmd.Stderr = w, w
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	if w != nil {
		w.Close() // the agent holds it; r ends when the agent does
		go func() {
			io.Copy(s.AgentLog, r)
			r.Close()
		}()
	}
	s.Agent = cmd
	tb.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	s.AgentLog.Wait(tb, subscribedRE, 0, 30*time.Second)
}

// StopAgent sends SIGTERM and fails unless the agent exits 0 within 6 s.
func (s *Stack) StopAgent() {
	tb := s.TB
	s.Agent.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.Agent.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			tb.Fatalf("agent exit after SIGTERM: %v\n%s", err, s.AgentLog)
		}
	case <-time.After(6 * time.Second):
		s.Agent.Process.Kill()
		tb.Fatalf("agent did not stop within 6 s of SIGTERM")
	}
}

// KillAgent SIGKILLs the agent and reaps it.
func (s *Stack) KillAgent() {
	s.Agent.Process.Kill()
	s.Agent.Wait()
}

// OpenTunnel opens a tunnel to the device and waits until the agent is connected.
func (s *Stack) OpenTunnel(services ...string) *tunneld.OpenTunnelOutput {
	out, err := s.TD().OpenTunnel(context.Background(), &tunneld.OpenTunnelInput{
		DestinationConfig: &tunneld.DestinationConfig{ThingName: Thing, Services: services}})
	if err != nil {
		s.TB.Fatal(err)
	}
	s.AddSecret(out.SourceAccessToken, out.DestinationAccessToken)
	s.WaitDestination(out.TunnelID, 30*time.Second)
	return out
}

// DestinationConnected reports whether tunneld sees the agent on tunnel id.
func (s *Stack) DestinationConnected(id string) bool {
	out, err := s.TD().DescribeTunnel(context.Background(), &tunneld.DescribeTunnelInput{TunnelID: id})
	if err != nil {
		s.TB.Fatal(err)
	}
	st := out.Tunnel.DestinationConnectionState
	return st != nil && st.Status == "CONNECTED"
}

// WaitDestination waits until the agent is connected to tunnel id.
func (s *Stack) WaitDestination(id string, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if s.DestinationConnected(id) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.TB.Fatalf("the agent did not connect tunnel %s within %v; agent log:\n%s", id, d, s.AgentLog)
}

var listeningRE = regexp.MustCompile(`msg=listening .*service=(\S+) addr=(127\.0\.0\.1:\d+)`)

// Connect runs `porthole connect -L SSH=0` for a tunnel and returns its local
// port; stop ends it with SIGINT (it also ends with the test).
func (s *Stack) Connect(out *tunneld.OpenTunnelOutput) (port string, log *Log, stop func()) {
	ports, log, stop := s.ConnectServices(out, "SSH")
	return ports["SSH"], log, stop
}

// ConnectServices runs `porthole connect` with `-L SVC=0` for each service and
// returns the local port of each.
func (s *Stack) ConnectServices(out *tunneld.OpenTunnelOutput, services ...string) (ports map[string]string, log *Log, stop func()) {
	return s.ConnectServicesArgs(out, nil, services...)
}

// ConnectServicesArgs is ConnectServices with more arguments for porthole connect,
// such as --destination-client-type.
func (s *Stack) ConnectServicesArgs(out *tunneld.OpenTunnelOutput, extra []string, services ...string) (ports map[string]string, log *Log, stop func()) {
	tb := s.TB
	tok := filepath.Join(s.Dir, out.TunnelID+".token")
	s.write(tok, []byte(out.SourceAccessToken+"\n"))
	log = s.NewLog()
	args := []string{"connect", "--endpoint", s.tunnelEndpoint(), "--ca-file", s.Broker.PKI.CAFile, "--token-file", tok}
	if s.opt.PlainWebSocket {
		args = append(args, "--allow-insecure-websocket")
	}
	if s.opt.LogLevel == "debug" {
		args = append(args, "-v")
	}
	for _, svc := range services {
		args = append(args, "-L", svc+"=0")
	}
	args = append(args, extra...)
	cmd := exec.Command(s.Bin, args...)
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(s.Dir, "cache"))
	cmd.SysProcAttr = orphanKill()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s.mu.Lock()
	s.connects = append(s.connects, cmd)
	s.mu.Unlock()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGINT)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
				tb.Errorf("porthole connect did not stop")
			}
		})
	}
	tb.Cleanup(stop)
	ports = map[string]string{}
	from := 0
	for len(ports) < len(services) {
		m := log.Wait(tb, listeningRE, from, 30*time.Second)
		from = strings.Index(log.String(), m[0]) + len(m[0])
		_, ports[m[1]], _ = net.SplitHostPort(m[2])
	}
	return ports, log, stop
}

// AddSecret records tokens that no log may show.
func (s *Stack) AddSecret(secrets ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range secrets {
		if x != "" {
			s.secrets = append(s.secrets, x)
		}
	}
}

var (
	tokenFieldRE = regexp.MustCompile(`"(?:access_token|client_token|clientToken|token)"\s*:\s*"([^"]{16,})"`)
	// tunneld's state keeps a tunnel's tokens in arrays: "tokens": [src, dst].
	tokenListRE = regexp.MustCompile(`"(?:tokens|clientTokens)"\s*:\s*\[([^\]]*)\]`)
	quotedRE    = regexp.MustCompile(`"([^"]{16,})"`)
)

// tokensIn are the tokens a JSON file of the agent, porthole connect or
// tunneld holds.
func tokensIn(b []byte) []string {
	var out []string
	for _, m := range tokenFieldRE.FindAllSubmatch(b, -1) {
		out = append(out, string(m[1]))
	}
	for _, l := range tokenListRE.FindAllSubmatch(b, -1) {
		for _, m := range quotedRE.FindAllSubmatch(l[1], -1) {
			out = append(out, string(m[1]))
		}
	}
	return out
}

// pemSecrets are what a log could show of the private keys PEM-encoded in b:
// each line of a key's body as the file has it, and the whole body in one piece
// (the key's DER as a JSON log would print a []byte).
func pemSecrets(b []byte) []string {
	var out []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "-----BEGIN ") && strings.HasSuffix(line, "PRIVATE KEY-----"):
			in = true
		case strings.HasPrefix(line, "-----END "):
			in = false
		case in && !strings.Contains(line, ":"): // not a header line
			out = append(out, line)
		}
	}
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			out = append(out, base64.StdEncoding.EncodeToString(block.Bytes))
		}
	}
}

// CheckNoSecrets fails the test if any captured log (agent, porthole connect,
// tunneld) shows an access token handed out through the stack, a client token
// the agent or porthole connect saved, or a private key the stack or its PKI
// wrote (operator key, the agent's host key, and the PKI's keys: the device's
// MQTT key, tunneld's and Mosquitto's server keys, the publisher's; the CA's key
// is never written to a file nor handed to any process). The agent runs at debug
// level and porthole connect with -v (Options.LogLevel), so debug lines are
// checked too. A key line shorter than 16 characters (a body's last) is not
// searched for: it could occur by chance.
func (s *Stack) CheckNoSecrets() {
	tb := s.TB
	secrets, keys := s.Secrets()
	n := 0
	for i, l := range s.Logs() {
		text := l.String()
		for _, x := range secrets {
			if len(x) >= 16 && strings.Contains(text, x) {
				tb.Errorf("log %d shows a secret (%d chars, starting %.4s…)", i, len(x), x)
			}
		}
		n++
	}
	tb.Logf("checked %d logs for %d secrets (%d private keys among them)", n, len(secrets), keys)
}

// Secrets are what CheckNoSecrets looks for, each once: the tokens AddSecret
// and watchTokens recorded, and those and the private keys in the stack's
// files now; keys counts the files of private keys.
func (s *Stack) Secrets() (secrets []string, keys int) {
	s.mu.Lock()
	secrets = append(secrets, s.secrets...)
	s.mu.Unlock()
	collect := func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) > 1<<20 {
			return nil
		}
		switch {
		case strings.HasSuffix(p, ".json") || strings.Contains(p, string(filepath.Separator)+"cache"+string(filepath.Separator)):
			secrets = append(secrets, tokensIn(b)...)
			if !bytes.ContainsAny(b, "{\"") { // a bare token file
				secrets = append(secrets, strings.TrimSpace(string(b)))
			}
		case bytes.Contains(b, []byte("PRIVATE KEY-----")):
			keys++
			secrets = append(secrets, pemSecrets(b)...)
		}
		return nil
	}
	filepath.WalkDir(s.Dir, collect)
	filepath.WalkDir(s.Broker.PKI.Dir, collect)
	slices.Sort(secrets)
	return slices.Compact(secrets), keys
}

// watchTokens records, as AddSecret does, the tokens of every JSON file
// written in dirs (made here if need be) while the stack runs, as soon as it
// is written: a file that is gone by the time CheckNoSecrets looks (a tunnel
// that ended) took its tokens with it.
func (s *Stack) watchTokens(dirs ...string) {
	tb := s.TB
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		tb.Fatal(err)
	}
	watched := map[int32]string{}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			tb.Fatal(err)
		}
		wd, err := unix.InotifyAddWatch(fd, d, unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO)
		if err != nil {
			tb.Fatal(err)
		}
		watched[int32(wd)] = d
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: Close ends a Read
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
				wd := int32(binary.NativeEndian.Uint32(b))
				size := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(b[12:]))
				name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:min(size, len(b))]), "\x00")
				b = b[min(size, len(b)):]
				if dir, ok := watched[wd]; ok && name != "" {
					if data, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
						s.AddSecret(tokensIn(data)...)
					}
				}
			}
		}
	}()
	tb.Cleanup(func() {
		f.Close()
		<-done
	})
}

// SSHOpts are the OpenSSH options for non-interactive logins with the operator key
// (only that key: a developer's ssh-agent keys would count against MaxAuthTries).
func (s *Stack) SSHOpts() []string {
	// No ssh_config (the machine's: Debian's sends LANG and LC_*, which the
	// agent accepts and a login's bash may warn of) and no ssh-agent.
	return []string{"-F", "/dev/null", "-o", "IdentityAgent=none", "-i", s.Key, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"}
}

// DirectPort is the port of the agent's sshd on loopback.
func (s *Stack) DirectPort() string {
	_, p, _ := net.SplitHostPort(s.SSHAddr)
	return p
}

// SSH runs `ssh -p port root@127.0.0.1 command` and returns its combined output.
func (s *Stack) SSH(port, command string) (string, error) {
	args := append(s.SSHOpts(), "-p", port, "root@127.0.0.1", command)
	out, err := exec.Command("ssh", args...).CombinedOutput()
	return string(out), err
}

// MustSSH is SSH that fails the test on error.
func (s *Stack) MustSSH(port, command string) string {
	out, err := s.SSH(port, command)
	if err != nil {
		s.TB.Fatalf("ssh %q: %v\n%s\nagent log:\n%s", command, err, out, s.AgentLog)
	}
	return out
}

// Logs are every log the stack captured (agent runs and connect processes).
func (s *Stack) Logs() []*Log {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Log(nil), s.logs...)
}

// NewLog makes a Log that Logs will return.
func (s *Stack) NewLog() *Log {
	l := NewLog()
	s.mu.Lock()
	s.logs = append(s.logs, l)
	s.mu.Unlock()
	return l
}

// Proc is what /proc says about a process.
type Proc struct {
	RSS, RSSAnon, RSSFile int64 // bytes
	Threads               int
	FDs                   int
	CPU                   time.Duration // user + system
}

// ReadProc reads /proc/pid/status, /proc/pid/stat and /proc/pid/fd.
func ReadProc(pid int) (Proc, error) {
	var p Proc
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			p.RSS = n << 10
		case "RssAnon":
			p.RSSAnon = n << 10
		case "RssFile":
			p.RSSFile = n << 10
		case "Threads":
			p.Threads = int(n)
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return p, err
	}
	p.FDs = len(ents)
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	// Fields after the command name (which may hold spaces): utime is the 14th field.
	if i := bytes.LastIndexByte(stat, ')'); i > 0 {
		fs := strings.Fields(string(stat[i+1:]))
		if len(fs) > 13 {
			ut, _ := strconv.ParseInt(fs[11], 10, 64)
			st, _ := strconv.ParseInt(fs[12], 10, 64)
			p.CPU = time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
		}
	}
	return p, nil
}

// AgentProc is ReadProc for the running agent.
func (s *Stack) AgentProc() Proc {
	p, err := ReadProc(s.Agent.Process.Pid)
	if err != nil {
		s.TB.Fatal(err)
	}
	return p
}

// MiB formats bytes as MiB.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// SocketsTo counts the TCP sockets that process pid holds (as FDs) whose peer
// is addr ("127.0.0.1:port" or "[::1]:port"), from /proc/net/tcp and tcp6 (an
// IPv4 peer also as an IPv4-mapped one there); -1 if /proc cannot tell.
func SocketsTo(pid int, addr string) int {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1
	}
	// /proc/net/tcp* print each 32-bit word of an address in host byte order.
	hex := func(a netip.Addr) string {
		b := a.AsSlice()
		var h string
		for i := 0; i < len(b); i += 4 {
			h += fmt.Sprintf("%08X", binary.NativeEndian.Uint32(b[i:i+4]))
		}
		return fmt.Sprintf("%s:%04X", h, ap.Port())
	}
	want := map[string]bool{hex(ap.Addr()): true}
	if ap.Addr().Is4() {
		want[hex(netip.AddrFrom16(ap.Addr().As16()))] = true
	}
	inodes := map[string]bool{} // of the sockets whose peer is addr
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(f, "6") {
			continue // no IPv6
		}
		if err != nil {
			return -1
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			cols := strings.Fields(line)
			if len(cols) > 9 && want[cols[2]] {
				inodes["socket:["+cols[9]+"]"] = true
			}
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && inodes[l] {
			n++
		}
	}
	return n
}

// AgentSocketsTo is SocketsTo for the running agent.
func (s *Stack) AgentSocketsTo(addr string) int {
	n := SocketsTo(s.Agent.Process.Pid, addr)
	if n < 0 {
		s.TB.Fatalf("cannot read the agent's sockets to %s from /proc", addr)
	}
	return n
}

// orphanKill has a child killed with the test process, also when that ends
// without its clean-ups (go test -timeout panics), so that no agent or
// porthole connect is left running, adopted by init.
func orphanKill() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
