package sshd

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

func TestExecExitStatus(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	for _, tc := range []struct {
		name, cmd, stdin string
		wantOut, wantErr string
		wantCode         int
	}{
		{name: "ok", cmd: "echo hello", wantOut: "hello\n"},
		{name: "exit code", cmd: "echo out; echo err >&2; exit 3", wantOut: "out\n", wantErr: "err\n", wantCode: 3},
		{name: "stdin to EOF", cmd: "cat; echo done", stdin: "line1\nline2", wantOut: "line1\nline2done\n"},
		{name: "wc", cmd: "wc -c", stdin: strings.Repeat("x", 100000), wantOut: "100000\n"},
		{name: "not found", cmd: "/nonexistent/cmd", wantCode: 127},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, c, tc.cmd, tc.stdin)
			if strings.TrimSpace(out) != strings.TrimSpace(tc.wantOut) || code != tc.wantCode {
				t.Errorf("Run(%q) = %q, %d, want %q, %d", tc.cmd, out, code, tc.wantOut, tc.wantCode)
			}
			if tc.wantErr != "" && errOut != tc.wantErr {
				t.Errorf("Run(%q) stderr = %q, want %q", tc.cmd, errOut, tc.wantErr)
			}
		})
	}
}

// A session's environment has the variables OpenSSH sets on Linux, and no TERM
// without a pty.
func TestSessionEnvironment(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	out, _, code := run(t, c, "env", "")
	if code != 0 {
		t.Fatalf("env exited %d", code)
	}
	env := strings.Split(strings.TrimSpace(out), "\n")
	for _, want := range []string{"HOME=/", "USER=root", "LOGNAME=root", "MAIL=/var/mail/root",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SHELL=/", "SSH_CLIENT=", "SSH_CONNECTION="} {
		if !slices.ContainsFunc(env, func(v string) bool { return strings.HasPrefix(v, want) }) {
			t.Errorf("no %s in the session's environment:\n%s", want, out)
		}
	}
	if slices.ContainsFunc(env, func(v string) bool { return strings.HasPrefix(v, "TERM=") }) {
		t.Errorf("TERM set without a pty:\n%s", out)
	}
}

func TestExitSignal(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	err := s.Run("kill -TERM $$")
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.Signal() != "TERM" {
		t.Fatalf("Run(kill -TERM $$) = %v, want exit signal TERM", err)
	}
	waitFor(t, "session end event", func() bool { return len(e.eventsOf(EventSessionEnd)) == 1 })
	if ev := e.eventsOf(EventSessionEnd)[0]; ev.ExitSignal != "TERM" || ev.ExitStatus != -1 {
		t.Errorf("session end event = %+v, want signal TERM and status -1", ev)
	}

	// A signal RFC 4254 does not name is an exit status, as a shell gives it.
	err = openSession(t, c).Run("kill -BUS $$")
	if want := 128 + int(syscall.SIGBUS); !errors.As(err, &ee) || ee.Signal() != "" || ee.ExitStatus() != want {
		t.Errorf("Run(kill -BUS $$) = %v, want exit status %d", err, want)
	}
}

func TestSignalRequest(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	out, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(`trap 'echo got; exit 7' USR1; echo ready; while :; do sleep 0.05; done`); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("read %q, %v; want ready", buf, err)
	}
	if err := s.Signal(gossh.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	err = s.Wait()
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 7 {
		t.Fatalf("Wait = %v, want exit status 7", err)
	}
}

func TestSessionAudit(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	run(t, c, "cat; exit 2", "12345")
	waitFor(t, "session end", func() bool { return len(e.eventsOf(EventSessionEnd)) == 1 })
	start, end := e.eventsOf(EventSessionStart)[0], e.eventsOf(EventSessionEnd)[0]
	if start.Command != "cat" || start.Kind != "exec" || start.User != "root" {
		t.Errorf("start event = %+v", start)
	}
	if end.BytesIn != 5 || end.BytesOut != 5 || end.ExitStatus != 2 || end.Method != "publickey" {
		t.Errorf("end event = %+v, want 5 bytes in and out, status 2, publickey", end)
	}
	if ok := e.eventsOf(EventLoginSuccess); len(ok) != 1 || ok[0].KeyFingerprint != gossh.FingerprintSHA256(e.key.PublicKey()) {
		t.Errorf("login events = %+v", ok)
	}
}

// TestRefusedSessionsAudited: a session refused has one session-refused event
// with the reason (Event.Reason: "why a login, session or forward was
// refused"), and no session-start or -end: past MaxSessions, and a shell, exec
// or subsystem request refused (an unknown subsystem, internal-sftp -R for
// another user, a start that failed). They had no event.
func TestRefusedSessionsAudited(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		maxSessions           int
		other                 bool // alice's session: needs root
		opts                  string
		refuse                func(t *testing.T, e *testEnv, c *gossh.Client) error
		kind, command, reason string
	}{
		{name: "too many sessions", maxSessions: 1, refuse: func(t *testing.T, _ *testEnv, c *gossh.Client) error {
			openRaw(t, c)
			ch, _, err := c.OpenChannel("session", nil)
			if err == nil {
				ch.Close()
			}
			return err
		}, reason: "too many sessions"},
		{name: "unknown subsystem", refuse: func(t *testing.T, _ *testEnv, c *gossh.Client) error {
			return openSession(t, c).RequestSubsystem("netconf")
		}, kind: "subsystem", command: "netconf", reason: `unknown subsystem "netconf"`},
		{name: "internal-sftp -R for another user", other: true, opts: `command="internal-sftp -R"`, refuse: func(t *testing.T, _ *testEnv, c *gossh.Client) error {
			return openSession(t, c).RequestSubsystem("sftp")
		}, kind: "subsystem", command: "sftp", reason: "internal-sftp -R serves only uid 0, not alice (uid 1000)"},
		{name: "start failed", refuse: func(t *testing.T, e *testEnv, c *gossh.Client) error {
			writeFile(t, e.srv.PasswdFile, "") // the user is gone since the login
			return openSession(t, c).Run("true")
		}, kind: "exec", command: "true", reason: `sshd: unknown user "root"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := "root"
			if tc.other {
				needRoot(t)
				user = "alice"
			}
			e := newEnv(t, func(_ *testEnv, s *Server) { s.MaxSessions = tc.maxSessions })
			e.writeAuthorizedKeys(user, authorizedLine(tc.opts, e.key.PublicKey()))
			if err := tc.refuse(t, e, e.login(user)); err == nil {
				t.Fatal("session granted")
			}
			evs := e.eventsOf(EventSessionRefused)
			if len(evs) != 1 {
				t.Fatalf("%d session-refused events, want 1", len(evs))
			}
			ev := evs[0]
			if ev.User != user || ev.SessionID == "" || ev.Method != "publickey" || ev.Kind != tc.kind || ev.Command != tc.command || ev.Reason != tc.reason {
				t.Errorf("session-refused event %+v; want %s's, kind %q, command %q, reason %q", ev, user, tc.kind, tc.command, tc.reason)
			}
			if n := len(e.eventsOf(EventSessionStart)) + len(e.eventsOf(EventSessionEnd)); n != 0 {
				t.Errorf("%d session-start and -end events for a session refused, want none", n)
			}
		})
	}
}

// TestRequestAfterRefusedStart: a start request refused leaves the channel
// open for another, as OpenSSH's sshd does: PuTTY's pscp asks for the sftp
// subsystem and, refused, for "scp -f" on the same channel (WinSCP for a
// shell). The channel was closed, so pscp failed for a user the in-process
// SFTP does not serve on a device without sftp-server.
func TestRequestAfterRefusedStart(t *testing.T) {
	for _, tc := range []struct {
		name, user, subsystem string
	}{
		{"unknown subsystem", "root", "netconf"},
		{"sftp for another user, no sftp-server", "alice", "sftp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.user != "root" {
				needRoot(t)
			}
			e := newEnv(t, func(_ *testEnv, s *Server) { s.sftpServerPaths = []string{} })
			e.writeAuthorizedKeys(tc.user, authorizedLine("", e.key.PublicKey()))
			s := openSession(t, e.login(tc.user))
			if err := s.RequestSubsystem(tc.subsystem); err == nil {
				t.Fatalf("subsystem %s granted", tc.subsystem)
			}
			out, err := s.Output("echo fallback")
			if err != nil || string(out) != "fallback\n" {
				t.Errorf("exec on the channel after the refusal: %q, %v; want \"fallback\\n\"", out, err)
			}
			if n, m := len(e.eventsOf(EventSessionRefused)), len(e.eventsOf(EventSessionStart)); n != 1 || m != 1 {
				t.Errorf("%d session-refused and %d session-start events, want 1 each", n, m)
			}
			if evs := e.eventsOf(EventSessionStart); len(evs) == 1 && (evs[0].Kind != "exec" || evs[0].Command != "echo") {
				t.Errorf("session-start event of kind %q, command %q; want the exec's", evs[0].Kind, evs[0].Command)
			}
		})
	}
}

// TestRefusedStartLeavesNoReason: a start refused after it had noted why the
// session would run in / (its home gone, then no descriptor for the pipes)
// left that reason to the start served next on the channel, whose end event
// then said so of an SFTP session that never hit it.
func TestRefusedStartLeavesNoReason(t *testing.T) {
	if !inChild() {
		runChild(t, nil, nil) // for its own RLIMIT_NOFILE
		return
	}
	e := newEnv(t, nil)
	rs := openRaw(t, e.login("root"))
	if err := os.RemoveAll(e.home("root")); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(len(fds) + 1) // not enough for the program's pipes
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	ok, err := rs.ch.SendRequest("exec", true, gossh.Marshal(struct{ V string }{"echo hi"}))
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	if err != nil || ok {
		t.Fatalf("exec with no descriptors to spare: %v, %v; want it refused", ok, err)
	}
	if ok, err := rs.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ V string }{"sftp"})); err != nil || !ok {
		t.Fatalf("sftp after the refused exec: %v, %v", ok, err)
	}
	cl, err := sftp.NewClientPipe(rs.ch, halfCloser{rs.ch})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Getwd(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	rs.wait(t)
	waitFor(t, "the session's end event", func() bool { return len(e.eventsOf(EventSessionEnd)) == 1 })
	evs := e.eventsOf(EventSessionEnd)
	if evs[0].Kind != "subsystem" || evs[0].Reason != "" {
		t.Errorf("the SFTP session's end: kind %q, reason %q; want the subsystem's, no reason", evs[0].Kind, evs[0].Reason)
	}
}

// TestAuditCommandLines: by default no event or log line has a command's
// arguments; with AuditCommandLines the session events and their log lines
// have the whole line the client sent (for a forced command, the one it asked
// for), cut at maxCommandLine bytes.
func TestAuditCommandLines(t *testing.T) {
	secret := "mysql -psecret-" + strings.Repeat("x", 8)
	e := newEnv(t, nil)
	run(t, e.login("root"), secret+" 2>/dev/null; true", "")
	waitFor(t, "session end", func() bool { return len(e.eventsOf(EventSessionEnd)) == 1 })
	for _, ev := range append(e.eventsOf(EventSessionStart), e.eventsOf(EventSessionEnd)...) {
		if ev.CommandLine != "" || ev.Command != "mysql" {
			t.Errorf("by default: %s event has command %q, command line %q", ev.Type, ev.Command, ev.CommandLine)
		}
	}
	if l := e.logs.logged("secret-"); len(l) != 0 {
		t.Errorf("by default the log has the arguments: %q", l)
	}

	e = newEnv(t, func(_ *testEnv, s *Server) { s.AuditCommandLines = true })
	line := secret + " 2>/dev/null; true"
	long := "true " + strings.Repeat("é", maxCommandLine) // 2-byte runes: the cut must not split one
	forced := `command="echo forced" ` + string(gossh.MarshalAuthorizedKey(e.key.PublicKey()))
	c := e.login("root")
	run(t, c, line, "")
	// The server audits a session's end after closing its channel, so the
	// client can be done with it first: the second starts only after that
	// event, or the ends could come in the other order (seen under qemu-arm).
	waitFor(t, "the first session end", func() bool { return len(e.eventsOf(EventSessionEnd)) == 1 })
	run(t, c, long, "")
	waitFor(t, "two session ends", func() bool { return len(e.eventsOf(EventSessionEnd)) == 2 })
	e.writeAuthorizedKeys("root", forced)
	run(t, e.login("root"), "echo asked", "")
	waitFor(t, "three session ends", func() bool { return len(e.eventsOf(EventSessionEnd)) == 3 })
	starts, ends := e.eventsOf(EventSessionStart), e.eventsOf(EventSessionEnd)
	for i, want := range []string{line, clipCommandLine(long), "echo asked"} {
		if starts[i].CommandLine != want || ends[i].CommandLine != want {
			t.Errorf("session %d: command line %q at start, %q at end; want %q", i, starts[i].CommandLine, ends[i].CommandLine, want)
		}
	}
	if got := clipCommandLine(long); len(got) > maxCommandLine || !utf8.ValidString(got) || !strings.HasSuffix(got, "é…") {
		t.Errorf("clipCommandLine(%d bytes) = %d bytes, valid UTF-8 %v, ends %q", len(long), len(got), utf8.ValidString(got), got[len(got)-8:])
	}
	if l := e.logs.logged("session-start", "secret-"); len(l) != 1 {
		t.Errorf("session-start log lines with the arguments: %q, want one", l)
	}
}

// TestServerWrittenSessionsAudited: a session the server ends with text of its
// own has, with AuditCommandLines, the command line asked for, that text in
// its bytes out, and at its end the reason: an exec refused under a forced
// internal-sftp ("This service allows sftp connections only.") or by
// /etc/nologin (its text) lost its command line, and those and the "Could not
// chdir" line before a program were not counted. Their session-end events had
// no reason.
func TestServerWrittenSessionsAudited(t *testing.T) {
	for _, tc := range []struct {
		name   string
		user   string
		opts   string                         // of the user's authorized_keys line
		before func(t *testing.T, e *testEnv) // after the login
		status int
		reason string // of the session-end event; the home's replaces HOME
	}{
		{name: "forced internal-sftp", user: "root", opts: `command="internal-sftp"`, status: 1, reason: "only sftp is allowed for this key"},
		{name: "nologin", user: "alice", before: func(t *testing.T, e *testEnv) {
			writeFile(t, e.srv.nologinFile, "maintenance\n")
		}, status: 254, reason: "nologin"},
		{name: "home gone", user: "root", before: func(t *testing.T, e *testEnv) {
			if err := os.RemoveAll(e.home("root")); err != nil {
				t.Fatal(err)
			}
		}, reason: "could not chdir to home directory HOME: No such file or directory; the session ran in /"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.user != "root" {
				needRoot(t)
			}
			e := newEnv(t, func(e *testEnv, s *Server) {
				s.AuditCommandLines = true
				s.nologinFile = filepath.Join(e.dir, "nologin")
			})
			e.writeAuthorizedKeys(tc.user, authorizedLine(tc.opts, e.key.PublicKey()))
			c := e.login(tc.user)
			if tc.before != nil {
				tc.before(t, e)
			}
			const line = "echo ran"
			out, errOut, code := run(t, c, line, "")
			if code != tc.status || out+errOut == "" {
				t.Fatalf("%s: out %q, stderr %q, exit %d; want the server's text, exit %d", line, out, errOut, code, tc.status)
			}
			waitFor(t, "the session end", func() bool { return len(e.eventsOf(EventSessionEnd)) == 1 })
			start, end := e.eventsOf(EventSessionStart)[0], e.eventsOf(EventSessionEnd)[0]
			if start.CommandLine != line || end.CommandLine != line {
				t.Errorf("command line %q at start, %q at end; want %q", start.CommandLine, end.CommandLine, line)
			}
			if want := int64(len(out) + len(errOut)); end.BytesOut != want {
				t.Errorf("bytes out %d, want the %d sent (%q, %q)", end.BytesOut, want, out, errOut)
			}
			if want := strings.Replace(tc.reason, "HOME", e.home(tc.user), 1); end.Reason != want || start.Reason != "" {
				t.Errorf("reason %q at start, %q at end; want none, %q", start.Reason, end.Reason, want)
			}
		})
	}
}

// TestShellWithoutPTY is "ssh host < script": a login shell reading
// commands from stdin, no terminal.
func TestShellWithoutPTY(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	var out strings.Builder
	s.Stdout = &out
	s.Stdin = strings.NewReader("echo $0; test -t 0 || echo no-tty; exit 4\n")
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	err := s.Wait()
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 4 {
		t.Errorf("Wait = %v, want exit 4", err)
	}
	if out.String() != "-sh\nno-tty\n" {
		t.Errorf("output = %q, want -sh and no-tty", out.String())
	}
}

// TestEndOfWrite: after "eow@openssh.com" the program's output is no longer
// read, so it dies of SIGPIPE, and that is reported, even though this client
// never reads the channel: the output the server holds cannot get through
// the full window and is dropped instead of keeping the session open.
func TestEndOfWrite(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	for _, tc := range []struct {
		name    string
		pty     bool
		wantSig string
	}{
		{name: "pipes", wantSig: "PIPE"},
		{name: "pty", pty: true, wantSig: "HUP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openRaw(t, c)
			if tc.pty {
				req := ptyRequest{Term: "xterm", Cols: 80, Rows: 24}
				if ok, err := s.ch.SendRequest("pty-req", true, gossh.Marshal(req)); !ok || err != nil {
					t.Fatalf("pty-req = %v, %v", ok, err)
				}
			}
			if ok, err := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Command string }{"exec yes"})); !ok || err != nil {
				t.Fatalf("exec = %v, %v", ok, err)
			}
			// The client's window (2 MiB) fills while the test does not read.
			time.Sleep(200 * time.Millisecond)
			if _, err := s.ch.SendRequest("eow@openssh.com", false, nil); err != nil {
				t.Fatal(err)
			}
			select {
			case st := <-s.status:
				if st != "exit-signal "+tc.wantSig {
					t.Errorf("after eow: %s, want exit-signal %s", st, tc.wantSig)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("session still open 5 s after eow@openssh.com")
			}
		})
	}
}

// TestFailedStartLogsNoArguments: a command that cannot start is logged by
// its program's name only, as the audit events have it, and so is the reason
// of its session-end event: its arguments can hold secrets. An argument over
// Linux's MAX_ARG_STRLEN (128 KiB) makes execve fail.
func TestFailedStartLogsNoArguments(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	cmd := "mysql --password=Hunter2 -e 'select 1' # " + strings.Repeat("x", 200<<10)
	if err := s.Run(cmd); err == nil {
		t.Fatal("a command line of 200 KiB ran; want it refused")
	}
	if len(e.logs.logged("did not start", "starting mysql: ")) == 0 {
		t.Error(`no "did not start" log line names the program, mysql`)
	}
	waitFor(t, "the session end", func() bool { return len(e.eventsOf(EventSessionEnd)) == 1 })
	if r := e.eventsOf(EventSessionEnd)[0].Reason; !strings.HasPrefix(r, "starting mysql: fork/exec ") || strings.Contains(r, "Hunter2") {
		t.Errorf("session-end reason %q, want the start's error, naming mysql only", r)
	}
	if l := e.logs.logged("Hunter2"); len(l) != 0 {
		t.Errorf("the command's arguments were logged: %.200q", l[0])
	}
}

// TestSignalSentWithUsersPrivileges: a "signal" request is sent as OpenSSH's
// session_signal_req sends it, with the user's effective uid: a program in
// the session's process group that became another user (real and saved uid
// 1003, as after "su") does not get it. Sent with root's privileges, alice
// could end it.
func TestSignalSentWithUsersPrivileges(t *testing.T) {
	needRoot(t)
	e := newEnv(t, nil)
	// A setuid-root copy of the test binary, which does nothing but become
	// uid 1003 (main_test.go's TestMain), reachable by alice only.
	dir := filepath.Join(e.dir, "suid")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 0, 1000); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "become")
	if err := os.WriteFile(helper, b, 0o755); err != nil {
		t.Fatal(err)
	}
	probe := exec.Command(helper)
	probe.Env = []string{"PORTHOLE_SSHD_TEST_PROBE=1"}
	if err := probe.Run(); errors.Is(err, syscall.ENOEXEC) {
		// qemu-user without binfmt_misc (tools/qemu-test.sh): TestKillpgAs
		// covers the system call there.
		t.Skip("the test binary is not native here, so no program can start it")
	} else if err != nil {
		t.Fatalf("the helper: %v", err)
	}
	if err := os.Chmod(helper, os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}

	s := openRaw(t, e.login("alice"))
	if ok, err := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Cmd string }{"PORTHOLE_SSHD_TEST_BECOME=1003 exec " + helper})); !ok || err != nil {
		t.Fatalf("exec = %v, %v", ok, err)
	}
	out := bufio.NewReader(s.ch)
	line, err := out.ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		t.Fatalf("the helper wrote %q, %v; want its pid", line, err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	for _, name := range []string{"TERM", "USR1"} {
		// The second request is answered only once the first one's signal
		// was sent: a session's requests are handled in order.
		if _, err := s.ch.SendRequest("signal", true, gossh.Marshal(struct{ Name string }{name})); err != nil {
			t.Fatal(err)
		}
	}
	syscall.Kill(pid, syscall.SIGUSR1) // from the test, as root
	if line, err := out.ReadString('\n'); strings.TrimSpace(line) != "USR1" {
		t.Errorf("the first signal uid 1003's program got: %q, %v; want the test's USR1, not one of alice's", line, err)
	}
}

// TestSignalReachesProcessGroup: a "signal" request reaches the command's
// process group, as OpenSSH's session_signal_req does (killpg): "sh -c 'sleep
// 30; echo done'" ends at once on TERM, instead of its shell dying alone and
// the sleep, holding the output open, keeping the session for 30 s. An unknown
// signal, a session where nothing runs yet and a forced command's session
// (OpenSSH refuses those) get a refusal.
func TestSignalReachesProcessGroup(t *testing.T) {
	e := newEnv(t, nil)
	signal := func(s *rawSession, name string) bool {
		t.Helper()
		ok, err := s.ch.SendRequest("signal", true, gossh.Marshal(struct{ Name string }{name}))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	start := func(c *gossh.Client) *rawSession {
		t.Helper()
		s := openRaw(t, c)
		if ok, err := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Cmd string }{"echo ready; sleep 30; echo done"})); !ok || err != nil {
			t.Fatalf("exec = %v, %v", ok, err)
		}
		buf := make([]byte, 6)
		if _, err := io.ReadFull(s.ch, buf); err != nil || string(buf) != "ready\n" {
			t.Fatalf("read %q, %v; want ready", buf, err)
		}
		time.Sleep(100 * time.Millisecond) // the sleep has started
		go io.Copy(io.Discard, s.ch)
		return s
	}
	status := func(s *rawSession, within time.Duration) string {
		select {
		case st := <-s.status:
			return st
		case <-time.After(within):
			return "still open"
		}
	}

	c := e.login("root")
	if signal(openRaw(t, c), "TERM") {
		t.Error("signal TERM accepted before anything runs")
	}
	s := start(c)
	if signal(s, "NOSUCH") {
		t.Error("signal NOSUCH accepted")
	}
	if !signal(s, "TERM") {
		t.Error("signal TERM refused")
	}
	if st := status(s, 5*time.Second); st != "exit-signal TERM" {
		t.Fatalf("after signal TERM: %s, want exit-signal TERM", st)
	}

	e.writeAuthorizedKeys("root", `command="echo ready; sleep 30; echo done" `+string(gossh.MarshalAuthorizedKey(e.key.PublicKey())))
	s = start(e.login("root"))
	if signal(s, "KILL") {
		t.Error("signal KILL to a forced command accepted")
	}
	if st := status(s, time.Second); st != "still open" {
		t.Errorf("forced command after a refused signal: %s", st)
	}
}

// An environment value with a NUL cannot reach execve: OpenSSH refuses
// such an env request (sshpkt_get_cstring) and the session goes on; it must
// not be accepted and then make the command fail to start.
func TestEnvValueWithNULRefused(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.AcceptEnv = []string{"LANG"} })
	c := e.login("root")
	s := openSession(t, c)
	ok, err := s.SendRequest("env", true, gossh.Marshal(struct{ Name, Value string }{"LANG", "C\x00x"}))
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Error("env LANG with a NUL in its value was accepted")
	}
	if out, err := s.Output("echo ran"); err != nil || string(out) != "ran\n" {
		t.Errorf("exec after env with NUL = %q, %v; want ran", out, err)
	}
}

// TestSessionRequestWithTrailingBytesRefused: an env or pty-req payload with a
// byte after its fields is refused, as gossh.Unmarshal refuses it for a
// struct without a Rest field (see ptyRequest); the same payload without the
// byte is accepted.
func TestSessionRequestWithTrailingBytesRefused(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.AcceptEnv = []string{"LANG"} })
	s := openSession(t, e.login("root"))
	for _, r := range []struct {
		typ     string
		payload []byte
	}{
		{"env", gossh.Marshal(struct{ Name, Value string }{"LANG", "C"})},
		{"pty-req", gossh.Marshal(ptyRequest{Term: "xterm", Cols: 80, Rows: 24})},
	} {
		longer := append(r.payload[:len(r.payload):len(r.payload)], 0)
		if ok, err := s.SendRequest(r.typ, true, longer); ok || err != nil {
			t.Errorf("%s with a byte after its fields = %v, %v; want refused", r.typ, ok, err)
		}
		if ok, err := s.SendRequest(r.typ, true, r.payload); !ok || err != nil {
			t.Errorf("%s = %v, %v; want accepted", r.typ, ok, err)
		}
	}
}

// A terminal type with a NUL likewise must not make the shell fail to start.
func TestPTYTermWithNULRefused(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	err := s.RequestPty("xterm\x00", 24, 80, nil)
	if err == nil {
		out, err := s.Output("echo ran")
		if err != nil || !strings.Contains(string(out), "ran") {
			t.Errorf("pty-req with TERM holding a NUL was accepted, then exec = %q, %v", out, err)
		}
	}
}

// OpenSSH keeps at most 128 client variables per session (session.c,
// session_env_req); without a limit one session can make the server hold
// hundreds of MiB with env requests under an accepted name pattern such as
// the default LC_* (each request up to a packet of 256 KiB), before any
// command starts, so a forced command does not prevent it.
func TestEnvRequestLimit(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.AcceptEnv = []string{"LC_*"} })
	c := e.login("root")
	s := openSession(t, c)
	accepted, held := 0, 0
	for _, size := range []int{200 << 10, 10} {
		for i := 0; i < 500; i++ {
			ok, err := s.SendRequest("env", true, gossh.Marshal(struct{ Name, Value string }{"LC_X", strings.Repeat("v", size)}))
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				accepted++
				held += size
			}
		}
	}
	if accepted > 128 || held > 1<<20 {
		t.Errorf("%d env requests accepted, %d KiB held; want at most 128 variables and 1 MiB", accepted, held>>10)
	}
}

// A home directory the user cannot enter: OpenSSH prints "Could not chdir
// to home directory" and runs the session in /; it must not refuse it.
func TestHomeNotAccessible(t *testing.T) {
	needRoot(t)
	e := newEnv(t, nil)
	home := e.home("alice")
	if err := os.Chown(home, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(home, ".ssh", "authorized_keys"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil { // the server reads alice's keys; alice may not enter
		t.Fatal(err)
	}
	c := e.login("alice")
	out, errOut, code := run(t, c, "pwd", "")
	if code != 0 || out != "/\n" || !strings.Contains(errOut, "Could not chdir to home directory") {
		t.Errorf("pwd with an inaccessible home = %q, %q, exit %d; want / and exit 0", out, errOut, code)
	}
	s := openSession(t, c)
	if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := s.CombinedOutput("pwd"); err != nil || !strings.HasSuffix(string(b), "\n/\r\n") {
		t.Errorf("pwd on a pty with an inaccessible home = %q, %v; want /", b, err)
	}
}

// A login user at their process limit (RLIMIT_NPROC, EAGAIN from execve
// after the switch to the user's ids): the client must be told why its
// command did not run, as OpenSSH's child says it on stderr, and the
// server must keep serving.
func TestSessionStartAtProcessLimit(t *testing.T) {
	needRoot(t)
	if !inChild() {
		runChild(t, nil, nil)
		return
	}
	e := newEnv(t, nil)
	// alice has one process already; her limit is none.
	sleeper := exec.Command("sleep", "60")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	}()
	if err := unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		t.Fatal(err)
	}
	c := e.login("alice")
	s := openSession(t, c)
	var out, errb strings.Builder
	s.Stdout, s.Stderr = &out, &errb
	err := s.Run("echo hi")
	t.Logf("alice at her process limit: err %v, stdout %q, stderr %q", err, out.String(), errb.String())
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
		t.Errorf("Run = %v; want exit status 1, as OpenSSH's child exits", err)
	}
	if !strings.Contains(errb.String(), "Resource temporarily unavailable") {
		t.Errorf("stderr %q; want the reason (Resource temporarily unavailable), as OpenSSH gives it", errb.String())
	}
	// A login shell on a terminal: the reason on the terminal.
	s = openSession(t, c)
	if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	var term strings.Builder
	s.Stdout = &term
	if err := s.Shell(); err != nil {
		t.Fatalf("shell request at the process limit: %v; want it accepted, with the reason and exit status 1", err)
	}
	err = s.Wait()
	b := term.String()
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 || !strings.Contains(string(b), "Resource temporarily unavailable\r\n") {
		t.Errorf("shell on a pty at the process limit: %q, %v; want the reason and exit status 1", b, err)
	}
	// The server keeps serving: root is not limited.
	o, _, code := run(t, e.login("root"), "echo ok", "")
	if o != "ok\n" || code != 0 {
		t.Errorf("root after alice's failure: %q, exit %d", o, code)
	}
}

// TestSessionUmask: as OpenSSH's sshd (sshd.c: umask(0077) | 0022), a
// session's programs get at least group and world write masked, whatever
// umask the server was started with (a supervisor or a wrapper that runs
// it under umask 0 or 002); a stricter one is kept.
func TestSessionUmask(t *testing.T) {
	for _, tc := range []struct {
		server int
		want   string
	}{
		{0, "0022"},
		{0o002, "0022"},
		{0o027, "0027"},
		{0o077, "0077"},
	} {
		withUmask(t, tc.server)
		e := newEnv(t, nil)
		users := []string{"root"}
		if os.Geteuid() == 0 {
			users = append(users, "alice")
		}
		for _, u := range users {
			out, _, code := run(t, e.login(u), "umask", "")
			if got := strings.TrimSpace(out); code != 0 || got != tc.want {
				t.Errorf("server umask %04o: %s's session umask = %q (exit %d), want %s", tc.server, u, got, code, tc.want)
			}
		}
	}
}

// TestSessionTimeZone: the server's TZ reaches sessions, as OpenSSH's
// do_setup_env passes its own TZ on; nothing else of its environment does.
func TestSessionTimeZone(t *testing.T) {
	t.Setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
	t.Setenv("GOMAXPROCS", "1")
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("https_proxy", "http://user:secret@proxy:3128")
	e := newEnv(t, nil)
	out, _, code := run(t, e.login("root"), "env", "")
	if code != 0 {
		t.Fatalf("env exited %d", code)
	}
	env := strings.Split(strings.TrimSpace(out), "\n")
	if !slices.Contains(env, "TZ=CET-1CEST,M3.5.0,M10.5.0/3") {
		t.Errorf("the server's TZ is not in the session's environment:\n%s", out)
	}
	for _, name := range []string{"GOMAXPROCS=", "NOTIFY_SOCKET=", "https_proxy="} {
		if slices.ContainsFunc(env, func(v string) bool { return strings.HasPrefix(v, name) }) {
			t.Errorf("the server's %s leaked into the session:\n%s", name, out)
		}
	}
}

// TestHomeMissing: a home directory that does not exist, or is not a
// directory, runs the session in / with OpenSSH's do_child message ("Could
// not chdir to home directory"), on stderr or on the terminal; HOME is still
// the passwd file's.
func TestHomeMissing(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		setup func(home string) error
		why   string
	}{
		{"missing", os.RemoveAll, "No such file or directory"},
		{"a file", func(home string) error {
			if err := os.RemoveAll(home); err != nil {
				return err
			}
			return os.WriteFile(home, nil, 0o644)
		}, "Not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(_ *testEnv, s *Server) { s.PasswordHashes = map[string]string{"root": string(hash)} })
			home := e.home("root")
			if err := tc.setup(home); err != nil {
				t.Fatal(err)
			}
			c, err := e.dial("root", gossh.Password("pw"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			want := "Could not chdir to home directory " + home + ": " + tc.why
			out, errOut, code := run(t, c, "pwd; echo $HOME", "")
			if code != 0 || out != "/\n"+home+"\n" || errOut != want+"\n" {
				t.Errorf("pwd; echo $HOME = %q, stderr %q, exit %d; want %q, stderr %q", out, errOut, code, "/\n"+home+"\n", want+"\n")
			}
			s := openSession(t, c)
			if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
				t.Fatal(err)
			}
			if b, err := s.CombinedOutput("pwd"); err != nil || string(b) != want+"\r\n/\r\n" {
				t.Errorf("pwd on a pty = %q, %v; want %q", b, err, want+"\r\n/\r\n")
			}
		})
	}
}

// TestHomeIsALink: a home directory that is a symbolic link to a directory
// (a read-only root file system's /root linked to a writable partition) is
// where the session starts, as chdir(2) follows the link: no "Could not chdir
// to home directory" message, and not /.
func TestHomeIsALink(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(_ *testEnv, s *Server) { s.PasswordHashes = map[string]string{"root": string(hash)} })
	home := e.home("root")
	target := filepath.Join(e.dir, "data-root")
	if err := os.Rename(home, target); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, home); err != nil {
		t.Fatal(err)
	}
	c, err := e.dial("root", gossh.Password("pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := target + "\n"
	if out, errOut, code := run(t, c, "pwd -P", ""); code != 0 || out != want || errOut != "" {
		t.Errorf("pwd -P = %q, stderr %q, exit %d; want %q, no stderr", out, errOut, code, want)
	}
}

// TestNologinRefusesNonRootSessions: while /etc/nologin exists, no session of
// a user other than root starts, as with OpenSSH's sshd without PAM
// (do_nologin): the file's text on stderr, exit status 254, the program not
// run. Root's sessions run.
func TestNologinRefusesNonRootSessions(t *testing.T) {
	needRoot(t)
	var nologin string
	e := newEnv(t, func(e *testEnv, s *Server) {
		nologin = filepath.Join(e.dir, "nologin")
		s.nologinFile = nologin
	})
	if out, _, code := run(t, e.login("alice"), "echo ran", ""); out != "ran\n" || code != 0 {
		t.Fatalf("alice without a nologin file: %q, exit %d", out, code)
	}
	writeFile(t, nologin, "System is under maintenance.\n")
	marker := filepath.Join(e.home("alice"), "ran")
	out, errOut, code := run(t, e.login("alice"), "touch "+marker+"; echo ran", "")
	if _, err := os.Stat(marker); err == nil || out != "" || errOut != "System is under maintenance.\n" || code != 254 {
		t.Errorf("alice's command with the nologin file: out %q, stderr %q, exit %d, ran: %v; want it refused as sshd does (the file on stderr, exit 254)", out, errOut, code, err == nil)
	}
	if out, _, code := run(t, e.login("root"), "echo ran", ""); out != "ran\n" || code != 0 {
		t.Errorf("root's command with the nologin file: %q, exit %d; want it run", out, code)
	}
}

// agentStreamConn is a connection as the agent hands a tunnel stream to
// ServeConn (agent/services.go): remote address "tunnel:<token label>/<service>",
// local address tunnel.Pipe's "pipe".
type agentStreamConn struct{ net.Conn }

type pipeLikeAddr struct{}

func (pipeLikeAddr) Network() string { return "pipe" }
func (pipeLikeAddr) String() string  { return "pipe" }

func (agentStreamConn) RemoteAddr() net.Addr { return tunnelAddr("tunnel:4f6fd38f/SSH") }
func (agentStreamConn) LocalAddr() net.Addr  { return pipeLikeAddr{} }

// Through a tunnel stream (the agent's normal way in) SSH_CLIENT and
// SSH_CONNECTION must still have their documented shape (ssh(1): "client IP
// address, client port number, server IP address, and server port number"):
// numeric ports. OpenSSH's sshd on a connection that is no socket gives
// "UNKNOWN 65535 65535". Here the tunnel label is split at its colon as if it
// were host:port, and the "port" is "4f6fd38f/SSH".
func TestSessionEnvironmentOverTunnelStream(t *testing.T) {
	e := newEnv(t, nil)
	server, client := tcpPair(t)
	go e.srv.ServeConn(agentStreamConn{server})
	cc, chans, reqs, err := gossh.NewClientConn(client, "tunnel", e.clientConfig("root", gossh.PublicKeys(e.key)))
	if err != nil {
		t.Fatal(err)
	}
	c := gossh.NewClient(cc, chans, reqs)
	defer c.Close()
	out, _, code := run(t, c, `printf '%s\n%s\n' "$SSH_CLIENT" "$SSH_CONNECTION"`, "")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("output %q", out)
	}
	numeric := func(s string) bool { _, err := strconv.ParseUint(s, 10, 16); return err == nil }
	cl, cn := strings.Fields(lines[0]), strings.Fields(lines[1])
	if len(cl) != 3 || !numeric(cl[1]) || !numeric(cl[2]) {
		t.Errorf("SSH_CLIENT=%q: want three fields, address and two numeric ports", lines[0])
	}
	if len(cn) != 4 || !numeric(cn[1]) || !numeric(cn[3]) {
		t.Errorf("SSH_CONNECTION=%q: want four fields with numeric ports", lines[1])
	}
}

// mayExec goes by the group bits for a user whose primary or supplementary
// groups hold the file's group, and by the others' bits otherwise.
func TestMayExecGroups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o010); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	other := st.Gid + 1
	for _, tc := range []struct {
		name string
		a    account
		want bool
	}{
		{"primary group", account{UID: st.Uid + 1, GID: st.Gid}, true},
		{"supplementary group", account{UID: st.Uid + 1, GID: other, Groups: []uint32{other, st.Gid}}, true},
		{"no group of the file's", account{UID: st.Uid + 1, GID: other, Groups: []uint32{other}}, false},
	} {
		if got := mayExec(path, &tc.a); got != tc.want {
			t.Errorf("%s: mayExec = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestStderrAfterEndOfWrite: after "eow@openssh.com" the client reads no more
// of the channel's data, but its stderr still comes: a program's error
// messages after "ssh host cmd | head" must not be lost.
func TestStderrAfterEndOfWrite(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	rs := openRaw(t, c)
	if ok, err := rs.ch.SendRequest("exec", true, gossh.Marshal(struct{ Value string }{"read x; echo note >&2; exit 3"})); !ok || err != nil {
		t.Fatalf("exec = %v, %v", ok, err)
	}
	if ok, err := rs.ch.SendRequest("eow@openssh.com", true, nil); !ok || err != nil {
		t.Fatalf("eow@openssh.com = %v, %v", ok, err)
	}
	stderr := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(rs.ch.Stderr())
		stderr <- string(b)
	}()
	if _, err := io.WriteString(rs.ch, "go\n"); err != nil {
		t.Fatal(err)
	}
	if got := rs.wait(t); got != "exit-status 3" {
		t.Errorf("session ended with %s, want exit-status 3", got)
	}
	select {
	case got := <-stderr:
		if got != "note\n" {
			t.Errorf("stderr after eow@openssh.com = %q, want %q", got, "note\n")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stderr not closed after the session ended")
	}
}
