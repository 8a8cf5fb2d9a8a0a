package sshd

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	gossh "golang.org/x/crypto/ssh"
)

func TestMain(m *testing.M) {
	// A hangup ignored by go test (nohup, a CI job in the background) would
	// be inherited by every session's program, and the hangup tests fail
	// (the program "ignored the hangup and is left running"). The agent
	// that serves sessions handles SIGHUP (reload), so its programs start
	// with the default; handled here too, as there.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	if os.Getenv("PORTHOLE_SSHD_TEST_PROBE") != "" {
		os.Exit(0) // TestSignalSentWithUsersPrivileges asks whether the binary runs natively
	}
	if uid := os.Getenv("PORTHOLE_SSHD_TEST_BECOME"); uid != "" {
		becomeAndReportSignal(uid)
	}
	if os.Getuid() != os.Geteuid() {
		os.Exit(2) // a setuid copy (TestSignalSentWithUsersPrivileges) does nothing else
	}
	// No DNS query leaves these tests, even with the code under test broken: a
	// name meant for a test's own s.lookup (nowhere.example) fails here instead
	// (as hostenv.NoDNS does for the agent's tests; /etc/hosts still answers).
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("sshd tests: no DNS query leaves this machine")
	}}
	removeTemp := sharedTempDir()
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeTemp()
		os.Exit(code)
	}))
}

// sharedTempDir points TMPDIR at a new directory below /tmp that every user
// may enter, when the TMPDIR given is one only its owner may enter
// (pam_tmpdir's /tmp/user/0, mode 0700): the homes, keys and sockets the tests
// make below t.TempDir() for other users would be out of their reach. It
// returns what removes that directory. (A copy of hostenv.SharedTempDir, which
// sshd's tests may not import: sshd and agent/tunnel import neither the other.)
func sharedTempDir() (remove func()) {
	for d := os.TempDir(); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return func() {}
		}
		if fi.Mode().Perm()&0o001 == 0 {
			break
		}
		if d == filepath.Dir(d) {
			return func() {} // every user may enter it
		}
	}
	d, err := os.MkdirTemp("/tmp", "ph") // short: sockets are made below it (108 bytes)
	if err != nil {
		return func() {}
	}
	if err := os.Chmod(d, 0o755); err != nil {
		os.Remove(d)
		return func() {}
	}
	os.Setenv("TMPDIR", d)
	return func() { os.RemoveAll(d) }
}

// becomeAndReportSignal is the helper of TestSignalSentWithUsersPrivileges, run
// from a setuid-root copy of the test binary: it becomes uid (real, effective
// and saved, as "su" does), writes its pid, and then the name of the first
// signal it gets (TERM or USR1), and exits.
func becomeAndReportSignal(uid string) {
	n, err := strconv.Atoi(uid)
	if err == nil {
		err = syscall.Setresuid(n, n, n)
	}
	if err != nil {
		fmt.Println("become:", err)
		os.Exit(1)
	}
	got := make(chan os.Signal, 1)
	signal.Notify(got, syscall.SIGTERM, syscall.SIGUSR1)
	fmt.Println(os.Getpid())
	select {
	case sig := <-got:
		fmt.Println(map[os.Signal]string{syscall.SIGTERM: "TERM", syscall.SIGUSR1: "USR1"}[sig])
	case <-time.After(30 * time.Second):
		fmt.Println("no signal")
	}
	os.Exit(0)
}

// testLogWriter sends log lines to t.Log until the test ends, and keeps
// them for the test to look at.
type testLogWriter struct {
	mu    sync.Mutex
	t     testing.TB
	done  bool
	lines []string
}

func (w *testLogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	line := strings.TrimRight(string(b), "\n")
	w.lines = append(w.lines, line)
	if !w.done {
		w.t.Log(line)
	}
	return len(b), nil
}

// logged returns the lines logged so far that contain all of subs.
func (w *testLogWriter) logged(subs ...string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
next:
	for _, l := range w.lines {
		for _, sub := range subs {
			if !strings.Contains(l, sub) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// childEnv marks the test binary's run as the child of runChild.
const childEnv = "PORTHOLE_SSHD_TEST_CHILD"

// inChild reports whether this run of the test binary is runChild's child.
func inChild() bool { return os.Getenv(childEnv) == "1" }

// runChild runs the test t again in a child process of the test binary (which
// takes its inChild branch), set up by attr and with its standard input from
// stdin (nil: none), and returns its output. The test fails if the child
// does, and is skipped where the binary cannot run itself (go test -exec
// qemu-ARCH-static without binfmt_misc: the native run covers it).
func runChild(t *testing.T, attr *syscall.SysProcAttr, stdin *os.File) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = &out, &out, attr
	if stdin != nil {
		cmd.Stdin = stdin
	}
	err := cmd.Run()
	if errors.Is(err, syscall.ENOEXEC) {
		t.Skipf("the test binary cannot re-exec itself here (qemu-user without binfmt_misc): %v", err)
	}
	t.Logf("child:\n%s", out.String())
	if errors.Is(err, syscall.EPERM) && attr != nil && attr.Unshareflags|attr.Cloneflags != 0 {
		t.Fatalf("child: %v: making its namespaces needs CAP_SYS_ADMIN, which this root lacks (a container's default)", err)
	}
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+t.Name()) {
		t.Fatal("the child did not run the test to its end")
	}
	return out.String()
}

// newTestLogger logs at debug level to t.Log and to the returned writer.
func newTestLogger(t testing.TB) (*slog.Logger, *testLogWriter) {
	lw := &testLogWriter{t: t}
	t.Cleanup(func() {
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelDebug})), lw
}

// mkfifo makes a named pipe at path (replacing what is there) and returns a
// func that reports whether anything opened it for reading: the server must
// refuse a FIFO without opening it. A reader blocked in open(2) is let go at
// once, so a server that would block on the FIFO fails the test instead of
// hanging it (and leaking a thread).
func mkfifo(t testing.TB, path string) (opened func() bool) {
	t.Helper()
	os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	var seen atomic.Bool
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			// Opening for writing without blocking succeeds only while a
			// reader has the FIFO open or waits in open(2) for a writer.
			if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				seen.Store(true)
				f.Close()
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return seen.Load
}

// testEnv is a server on loopback with users root, alice (uid 1000) and bob
// (uid 1001, whose shell does not exist), each with a home under dir.
type testEnv struct {
	t      testing.TB
	srv    *Server
	addr   string
	dir    string
	key    gossh.Signer // root's and alice's authorized key
	hostFP string
	logs   *testLogWriter

	mu     sync.Mutex
	events []Event
}

func chmodWalkUp(t testing.TB, dir string) {
	// Homes must be reachable by uid 1000 and 1001 through t.TempDir's 0700
	// parents.
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()+"/") {
			os.Chmod(d, 0o755)
		}
	}
}

// testRootUID is the uid of the test user "root": 0 when the tests run as
// root (as in CI), else the tests' own uid, since a server that is not root
// only logs in its own user.
func testRootUID() int {
	if os.Geteuid() == 0 {
		return 0
	}
	return os.Geteuid()
}

// needRoot skips tests that switch to other users, or fails them under
// CI=true, which runs as root.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (sessions of other users); CI runs as root")
		}
		t.Skip("needs root: sessions of other users")
	}
}

// systemKnowsAlice makes the test user alice (uid 1000) known to the system's
// own /etc/passwd, for a test whose server runs one of OpenSSH's programs as
// her: scp and sftp-server look their user up with getpwuid(3) and exit at
// once when it is not there ("unknown user 1000"), since the test's passwd
// file is the server's alone. Where the system has uid 1000 (often the
// machine's first user) it does nothing and reports true. Elsewhere, as on a
// fresh Debian, it runs the test again in a child with a mount namespace of
// its own (runChild) and reports false, and the caller returns; in that child
// it bind-mounts over /etc/passwd a copy that adds her, and reports true.
func systemKnowsAlice(t *testing.T) bool {
	t.Helper()
	if _, err := user.LookupId("1000"); err == nil {
		return true
	}
	if !inChild() {
		runChild(t, &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}, nil)
		return false
	}
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	passwd := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(passwd, append(b, "alice:x:1000:1000:alice:/:/bin/sh\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	// Only in a mount namespace other than its parent's: a run with childEnv
	// set by hand would otherwise leave the system's /etc/passwd covered.
	self, _ := os.Readlink("/proc/self/ns/mnt")
	parent, _ := os.Readlink("/proc/" + strconv.Itoa(os.Getppid()) + "/ns/mnt")
	if self == "" || self == parent {
		t.Fatalf("not in a mount namespace of its own (%q, the parent's %q): /etc/passwd left as it is", self, parent)
	}
	if err := syscall.Mount(passwd, "/etc/passwd", "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("adding alice to /etc/passwd in the child's mount namespace: %v", err)
	}
	return true
}

func newSigner(t testing.TB) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newEnv makes the users and keys; configure may change the Server before
// it starts.
func newEnv(t testing.TB, configure func(e *testEnv, s *Server)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	chmodWalkUp(t, dir)
	e := &testEnv{t: t, dir: dir, key: newSigner(t)}
	passwd := ""
	for _, u := range []struct {
		name     string
		uid      int
		shell    string
		writeKey bool
	}{
		{"root", testRootUID(), "/bin/sh", true},
		{"alice", 1000, "/bin/sh", true},
		{"bob", 1001, "/bin/nonexistent-shell", true},
		{"carol", 1002, "/bin/sh", false},
	} {
		home := filepath.Join(dir, "home", u.name)
		if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o755); err != nil {
			t.Fatal(err)
		}
		// Whatever the umask (TestSessionUmask): the server reads a
		// user's authorized_keys as the user.
		chmodWalkUp(t, filepath.Join(home, ".ssh"))
		os.Chown(home, u.uid, u.uid)
		if u.writeKey {
			e.writeAuthorizedKeys(u.name, string(gossh.MarshalAuthorizedKey(e.key.PublicKey())))
		}
		passwd += fmt.Sprintf("%s:x:%d:%d:%s:%s:%s\n", u.name, u.uid, u.uid, u.name, home, u.shell)
	}
	writeFile(t, filepath.Join(dir, "passwd"), passwd)
	writeFile(t, filepath.Join(dir, "group"), "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\nbob:x:1001:\n")
	logger, lw := newTestLogger(t)
	e.logs = lw
	e.srv = &Server{
		DataDir:             filepath.Join(dir, "data"),
		AuthorizedKeysFiles: []string{"%h/.ssh/authorized_keys"},
		PasswdFile:          filepath.Join(dir, "passwd"),
		GroupFile:           filepath.Join(dir, "group"),
		Logger:              logger,
		Audit: func(ev Event) {
			e.mu.Lock()
			e.events = append(e.events, ev)
			e.mu.Unlock()
		},
		// Forwards dial loopback only: tests name outside addresses to be
		// refused (192.0.2.1, TEST-NET-1, is a real gateway on some CI
		// machines), and a bug must not reach them.
		dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if ap, err := netip.ParseAddrPort(addr); err != nil || !ap.Addr().IsLoopback() {
				t.Errorf("a forward dialled %s, beyond loopback", addr)
				return nil, syscall.EHOSTUNREACH
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	if configure != nil {
		configure(e, e.srv)
	}
	keys, err := e.srv.PublicKeys()
	if err != nil {
		t.Fatal(err)
	}
	e.hostFP = gossh.FingerprintSHA256(keys[0])
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(l) }()
	t.Cleanup(func() {
		e.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	})
	return e
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) home(user string) string { return filepath.Join(e.dir, "home", user) }

func (e *testEnv) writeAuthorizedKeys(user, data string) {
	p := filepath.Join(e.home(user), ".ssh", "authorized_keys")
	writeFile(e.t, p, data)
	os.Chmod(p, 0o644) // whatever the umask: the user reads it
}

// clientConfig checks the host key against the server's.
func (e *testEnv) clientConfig(user string, auth ...gossh.AuthMethod) *gossh.ClientConfig {
	return &gossh.ClientConfig{
		User: user,
		Auth: auth,
		HostKeyCallback: func(_ string, _ net.Addr, key gossh.PublicKey) error {
			if fp := gossh.FingerprintSHA256(key); fp != e.hostFP {
				return fmt.Errorf("host key %s, want %s", fp, e.hostFP)
			}
			return nil
		},
		// The TCP connect only (x/crypto's Dial). To the test's own loopback
		// listener it takes no time; a 10 s one ran out twice in CI under
		// qemu-user, cause not found (see tunneltest.StartPair's waits).
		Timeout: 30 * time.Second,
	}
}

func (e *testEnv) dial(user string, auth ...gossh.AuthMethod) (*gossh.Client, error) {
	return gossh.Dial("tcp", e.addr, e.clientConfig(user, auth...))
}

// refuse dials as user with auth and fails the test unless the server
// refuses the login (checkRefused).
func (e *testEnv) refuse(user string, auth ...gossh.AuthMethod) {
	e.t.Helper()
	if err := e.checkRefused(user, auth...); err != nil {
		e.t.Fatal(err)
	}
}

// checkRefused dials as user with auth and returns an error unless the server
// refuses the login: x/crypto's client says "unable to authenticate" once the
// server has refused every method it tried. A login let in is closed; a dial
// that failed for another cause (a TCP connect time-out under qemu-user, a
// reset) is no refusal either. It reports to no t, so that a subtest, a
// goroutine or a check that goes on after a failure can use it.
func (e *testEnv) checkRefused(user string, auth ...gossh.AuthMethod) error {
	return e.checkLoginFails(user, auth, "refused ("+refusedText+")", isRefusal)
}

// refusedText is in x/crypto's client error once the server has refused every
// method the client tried.
const refusedText = "unable to authenticate"

// isRefusal reports whether a dial's err is the server refusing the login.
func isRefusal(err error) bool { return strings.Contains(err.Error(), refusedText) }

// checkClosed is checkRefused for a login the server cuts short by closing
// the connection (a blocked source, the login grace time, a signature
// x/crypto's server rejects): the client reads EOF, or a reset where the
// server closed with the client's bytes unread.
func (e *testEnv) checkClosed(user string, auth ...gossh.AuthMethod) error {
	return e.checkLoginFails(user, auth, "closed by the server (EOF or a reset)", isClosedByServer)
}

// isClosedByServer reports whether a dial's err is the server closing the
// connection: EOF, or a reset where it closed with the client's bytes unread.
func isClosedByServer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// checkLoginFails dials as user with auth and returns an error unless the
// dial fails as failedAsWanted says; want names that failure. The user is
// clipped in the message: TestHugeUserNameClipped's is 200 KiB.
func (e *testEnv) checkLoginFails(user string, auth []gossh.AuthMethod, want string, failedAsWanted func(error) bool) error {
	c, err := e.dial(user, auth...)
	if err == nil {
		c.Close()
		return fmt.Errorf("login as %.64s let in, want it %s", user, want)
	}
	if !failedAsWanted(err) {
		return fmt.Errorf("login as %.64s: %v, want it %s", user, err, want)
	}
	return nil
}

// login dials as user with the test key and fails the test on error.
func (e *testEnv) login(user string) *gossh.Client {
	e.t.Helper()
	c, err := e.dial(user, gossh.PublicKeys(e.key))
	if err != nil {
		e.t.Fatalf("login as %s: %v", user, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// openSession opens a session on c, closed when the test ends.
func openSession(t testing.TB, c *gossh.Client) *gossh.Session {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// run executes cmd in a new session and returns stdout, stderr and the
// exit status (-1 for no status).
func run(t testing.TB, c *gossh.Client, cmd string, stdin string) (string, string, int) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	defer s.Close()
	var out, errb strings.Builder
	s.Stdout, s.Stderr = &out, &errb
	if stdin != "" {
		s.Stdin = strings.NewReader(stdin)
	}
	err = s.Run(cmd)
	code := 0
	var ee *gossh.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitStatus()
	case err != nil:
		var missing *gossh.ExitMissingError
		if errors.As(err, &missing) {
			code = -1
		} else {
			t.Fatalf("Run(%q): %v", cmd, err)
		}
	}
	return out.String(), errb.String(), code
}

// eventsOf returns the recorded events of type typ.
func (e *testEnv) eventsOf(typ EventType) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.events {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor polls cond for up to 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawSession is a session channel whose requests the test sees, to check
// that exit-status arrives before the channel closes.
type rawSession struct {
	ch     gossh.Channel
	status chan string
}

func openRaw(t testing.TB, c *gossh.Client) *rawSession {
	t.Helper()
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	rs := &rawSession{ch: ch, status: make(chan string, 1)}
	go func() {
		got := "closed without exit status"
		for req := range reqs {
			switch req.Type {
			case "exit-status":
				var st struct{ Status uint32 }
				gossh.Unmarshal(req.Payload, &st)
				got = fmt.Sprintf("exit-status %d", st.Status)
			case "exit-signal":
				var sig struct{ Signal string }
				gossh.Unmarshal(req.Payload, &sig)
				got = "exit-signal " + sig.Signal
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
		rs.status <- got
	}()
	return rs
}

// wait returns how the session ended once the server closed the channel.
func (rs *rawSession) wait(t testing.TB) string {
	t.Helper()
	rs.ch.CloseWrite()
	go io.Copy(io.Discard, rs.ch)
	select {
	case s := <-rs.status:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for the session to end")
		return ""
	}
}
