package console

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/sshd"
	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// testLab is the console's world in one process: tunneld (plain WebSocket), devices
// (an sshd each, reached by a tunnel.Destination started when tunneld notifies the
// thing, as the agent does), and the console with the operator's key.
type testLab struct {
	t       *testing.T
	dir     string
	td      *tunneld.Server
	tdAddr  string
	user    string
	keyPath string
	console *Server
	url     string // as printed, with the access token
	base    string // http://host:port
	logs    *syncBuffer

	mu      sync.Mutex
	devices map[string]*testDevice

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type testDevice struct {
	srv  *sshd.Server // nil for a fake (slowDevice)
	addr string
}

const testPassword = "correct horse battery staple"

// syncBuffer collects log output for the token checks, and copies it to t.Log.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   *testing.T
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestLab(t *testing.T, cfg Config, things ...string) *testLab {
	t.Helper()
	l := &testLab{t: t, dir: stack.SafeDir(t), devices: map[string]*testDevice{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.logs = &syncBuffer{t: t}
	log := slog.New(slog.NewTextHandler(l.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	l.user = u.Username
	shell := "/bin/bash"
	if _, err := os.Stat(shell); err != nil {
		shell = "/bin/sh"
	}
	home := filepath.Join(l.dir, "home")
	os.MkdirAll(home, 0o700)
	writeTestFile(t, filepath.Join(l.dir, "passwd"), fmt.Sprintf("%s:x:%s:%s::%s:%s\n", u.Username, u.Uid, u.Gid, home, shell))
	writeTestFile(t, filepath.Join(l.dir, "group"), fmt.Sprintf("%s:x:%s:\n", u.Username, u.Gid))
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	l.keyPath = filepath.Join(l.dir, "id_ed25519")
	writeTestFile(t, l.keyPath, string(pem.EncodeToMemory(block)))
	writeTestFile(t, filepath.Join(l.dir, "authorized_keys"), string(ssh.MarshalAuthorizedKey(signer.PublicKey())))

	for _, thing := range things {
		l.addDevice(thing)
	}

	l.td, err = tunneld.New(tunneld.Config{AllowUnsigned: true, Notifier: l, Logger: log.With("component", "tunneld")})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.tdAddr = ln.Addr().String()
	tdDone := make(chan struct{})
	go func() { defer close(tdDone); l.td.Serve(ln) }()

	cfg.ControlPlane = TunneldServer(l.td)
	cfg.Endpoint = "ws://" + l.tdAddr
	cfg.AllowInsecureWebSocket = true
	cfg.User = l.user
	if cfg.Keys == nil {
		cfg.Keys = []Key{{Name: "operator key", Path: l.keyPath}}
	}
	if cfg.HostKeys == nil {
		cfg.HostKeys = &HostKeys{Path: filepath.Join(l.dir, "console_host_keys.json")}
	}
	if cfg.Vendor == nil {
		cfg.Vendor = standInVendor()
	}
	cfg.Logger = log.With("component", "console")
	l.console, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.url = l.console.URL(cl.Addr())
	l.base = "http://" + cl.Addr().String()
	consoleDone := make(chan struct{})
	go func() { defer close(consoleDone); l.console.Serve(cl) }()

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l.console.Shutdown(ctx)
		<-consoleDone
		l.cancel()
		l.mu.Lock()
		for _, d := range l.devices {
			if d.srv != nil {
				d.srv.Close()
			}
		}
		l.mu.Unlock()
		l.wg.Wait()
		l.td.Shutdown(ctx)
		<-tdDone
	})
	return l
}

// addDevice starts a device's SSH server (a fresh host key each time).
func (l *testLab) addDevice(thing string) {
	l.t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		l.t.Fatal(err)
	}
	srv := &sshd.Server{
		DataDir:             filepath.Join(l.dir, "devices", thing, fmt.Sprint(time.Now().UnixNano())),
		AuthorizedKeysFiles: []string{filepath.Join(l.dir, "authorized_keys")},
		PasswordHashes:      map[string]string{l.user: string(hash)},
		PasswdFile:          filepath.Join(l.dir, "passwd"),
		GroupFile:           filepath.Join(l.dir, "group"),
		MaxAuthFailures:     -1,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		l.t.Fatal(err)
	}
	l.wg.Add(1)
	go func() { defer l.wg.Done(); srv.Serve(ln) }()
	l.mu.Lock()
	if old := l.devices[thing]; old != nil {
		old.srv.Close()
	}
	l.devices[thing] = &testDevice{srv: srv, addr: ln.Addr().String()}
	l.mu.Unlock()
}

// Notify implements tunneld.Notifier: the device of the thing connects its side.
func (l *testLab) Notify(ctx context.Context, n tunneld.Notification) error {
	l.mu.Lock()
	d := l.devices[n.ThingName]
	l.mu.Unlock()
	if d == nil {
		return nil // an unknown thing: nobody listens, as with MQTT
	}
	tok, err := tunnel.NewAccessToken(n.ClientAccessToken)
	if err != nil {
		return err
	}
	dst := &tunnel.Destination{
		Config: tunnel.Config{Endpoint: "ws://" + l.tdAddr, AccessToken: tok, AllowInsecureWebSocket: true,
			RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond},
		Dialer: tunnel.Targets{"SSH": d.addr},
	}
	l.wg.Add(1)
	go func() { defer l.wg.Done(); dst.Run(l.ctx) }()
	return nil
}

// client is an HTTP client that has loaded the console's page, as a browser does
// first; l.api adds the access token to each call, as the page's script does.
func (l *testLab) client() *http.Client {
	l.t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(l.url) // the fragment stays here
	if err != nil {
		l.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		l.t.Fatalf("GET the console URL: %s", resp.Status)
	}
	if len(resp.Header.Values("Set-Cookie")) != 0 {
		l.t.Fatalf("GET the console URL set a cookie: %q", resp.Header.Values("Set-Cookie"))
	}
	return c
}

func writeTestFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// keyTerminal opens a tunnel to thing, whose agent hands its SSH streams to a
// fake device's server at addr, and a terminal logging in with the operator key.
func (l *testLab) keyTerminal(thing, addr string) *wsTerm {
	l.t.Helper()
	l.mu.Lock()
	l.devices[thing] = &testDevice{addr: addr}
	l.mu.Unlock()
	tv := l.openTunnel(l.client(), thing)
	return l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
}
