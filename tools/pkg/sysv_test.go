package pkg

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

func TestSysVScript(t *testing.T) {
	st, err := os.Stat("sysv/porthole")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o111 == 0 {
		t.Errorf("sysv/porthole is not executable (mode %o)", st.Mode().Perm())
	}
	b, _ := os.ReadFile("sysv/porthole")
	shSyntax(t, "sysv/porthole", b)
	for _, want := range []string{"### BEGIN INIT INFO", "check-config", "start-stop-daemon", "start)", "stop)", "reload)", "force-reload"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("sysv/porthole lacks %q", want)
		}
	}
	// A config error is reported and start fails, without starting anything.
	fake := filepath.Join(t.TempDir(), "porthole")
	os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = check-config ] && { echo \"bad config: $*\" >&2; exit 1; }\necho started >&2\nexit 0\n"), 0o755)
	cmd := exec.Command("sh", "sysv/porthole", "start")
	logFile := filepath.Join(t.TempDir(), "porthole.log")
	defaults := filepath.Join(t.TempDir(), "default")
	os.WriteFile(defaults, []byte("DAEMON="+shq(fake)+"\nPIDFILE="+shq(filepath.Join(t.TempDir(), "pid"))+"\nLOG="+shq(logFile)+"\n"), 0o644)
	cmd.Env = append(os.Environ(), "PORTHOLE_DEFAULTS="+defaults)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL (configuration") {
		t.Errorf("start with a bad config: err %v, output %q; want a failure naming the configuration", err, out)
	}
	// -start: the device certificate's dates are the agent's to report.
	if !strings.Contains(string(out), "bad config: check-config -start -c ") {
		t.Errorf("start ran check-config without -start: output %q", out)
	}
	if log, _ := os.ReadFile(logFile); bytes.Contains(append(out, log...), []byte("started")) {
		t.Errorf("start with a bad config started the agent: output %q, log %q", out, log)
	}
}

// fakeAgent is a porthole that records what happens to it in $FAKE_EVENTS, one
// "KIND PID" line each: "started" once it handles signals, "reloaded" on
// SIGHUP, "stopped" on SIGTERM, "env PID GOMAXPROCS=…", "cwd PID DIR" and
// "environ PID "NAME=VALUE"" for each variable of its environment. A real program, not
// a script: the kernel names a script's process after the script but its
// /proc/PID/exe is the shell, which hides what an init script's
// start-stop-daemon -x /bin/sh would match.
//
// With FAKE_BAD_CONFIG, its check-config refuses the config (exit 1).
//
// With FAKE_EXIT it is an agent that cannot run: it exits with that status
// after FAKE_EXIT_AFTER ("exited"), its reason on stderr.
//
// With FAKE_LOGIN, SIGUSR1 makes it serve a login that runs sh -c "$FAKE_LOGIN"
// as the agent's SSH server runs a command: in a session of its own, its output
// a pty (FAKE_LOGIN_PTY) or pipes, copied to FAKE_LOGIN_OUTPUT ("login").
// On SIGTERM the agent ends the login as its SSH server does when the agent
// stops: the terminal hangs up (the pipes are no longer read), the login's
// process group gets SIGHUP and, if FAKE_LOGIN_KILL is a duration, SIGKILL
// that long later if the login's program still runs; without it the agent
// exits at once.
const fakeAgent = `package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "check-config" {
		if os.Getenv("FAKE_BAD_CONFIG") != "" {
			fmt.Fprintln(os.Stderr, "bad config (fake)")
			os.Exit(1)
		}
		return
	}
	f, err := os.OpenFile(os.Getenv("FAKE_EVENTS"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if s := os.Getenv("FAKE_EXIT"); s != "" {
		d, _ := time.ParseDuration(os.Getenv("FAKE_EXIT_AFTER"))
		time.Sleep(d)
		fmt.Fprintf(f, "exited %d\n", os.Getpid())
		fmt.Fprintln(os.Stderr, "porthole agent: cannot run (fake)")
		code, _ := strconv.Atoi(s)
		os.Exit(code)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGUSR1)
	fmt.Fprintf(f, "started %d\n", os.Getpid())
	fmt.Fprintf(f, "env %d GOMAXPROCS=%s\n", os.Getpid(), os.Getenv("GOMAXPROCS"))
	fmt.Fprintf(f, "args %d %q\n", os.Getpid(), os.Args[1:])
	wd, _ := os.Getwd()
	fmt.Fprintf(f, "cwd %d %s\n", os.Getpid(), wd)
	for _, kv := range os.Environ() {
		fmt.Fprintf(f, "environ %d %q\n", os.Getpid(), kv)
	}
	var l *login
	for s := range sig {
		switch s {
		case syscall.SIGHUP:
			fmt.Fprintf(f, "reloaded %d\n", os.Getpid())
			continue
		case syscall.SIGUSR1:
			if cmd := os.Getenv("FAKE_LOGIN"); cmd != "" && l == nil {
				l = startLogin(f, cmd)
			}
			continue
		}
		if os.Getenv("FAKE_IGNORE_TERM") != "" {
			fmt.Fprintf(f, "ignored %d\n", os.Getpid())
			continue
		}
		if l != nil {
			l.end()
		}
		fmt.Fprintf(f, "stopped %d\n", os.Getpid())
		return
	}
}

type login struct {
	cmd    *exec.Cmd
	output *os.File // the pty's master or the pipe's read end
	done   chan struct{}
}

func startLogin(events *os.File, command string) *login {
	l := &login{cmd: exec.Command("sh", "-c", command), done: make(chan struct{})}
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var tty *os.File
	var err error
	if os.Getenv("FAKE_LOGIN_PTY") != "" {
		l.output, tty, err = openPTY()
		l.cmd.Stdin = tty
		l.cmd.SysProcAttr.Setctty = true
	} else {
		l.output, tty, err = os.Pipe()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	l.cmd.Stdout, l.cmd.Stderr = tty, tty
	if err := l.cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tty.Close()
	transcript, _ := os.OpenFile(os.Getenv("FAKE_LOGIN_OUTPUT"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	go io.Copy(transcript, l.output)
	fmt.Fprintf(events, "login %d\n", l.cmd.Process.Pid)
	go func() {
		l.cmd.Wait()
		close(l.done)
	}()
	return l
}

func (l *login) end() {
	l.output.Close()
	pid := l.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGHUP)
	d, err := time.ParseDuration(os.Getenv("FAKE_LOGIN_KILL"))
	if err != nil {
		return
	}
	select {
	case <-l.done:
	case <-time.After(d):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-l.done
	}
}

func openPTY() (master, tty *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	var unlock int32
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		return nil, nil, e
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		return nil, nil, e
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	return master, tty, err
}
`

// TestMain puts the sbin directories on PATH, where Debian has
// start-stop-daemon but an ordinary user's PATH does not look (/etc/profile adds
// them for root only): the scripts under test run with this PATH too.
func TestMain(m *testing.M) {
	path := os.Getenv("PATH")
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if !slices.Contains(filepath.SplitList(path), d) {
			path += string(os.PathListSeparator) + d
		}
	}
	os.Setenv("PATH", path)
	os.Exit(m.Run())
}

// withEachStartStopDaemon runs test with the start-stop-daemon on PATH
// (Debian's, from dpkg) and with BusyBox's (busybox-static) under BusyBox's own
// sh, as on a Buildroot target. shell runs the script; binDir, when not empty,
// goes first on PATH.
func withEachStartStopDaemon(t *testing.T, test func(t *testing.T, shell, binDir string)) {
	t.Run("start-stop-daemon", func(t *testing.T) {
		t.Parallel()
		if _, err := exec.LookPath("start-stop-daemon"); err != nil {
			t.Fatalf("start-stop-daemon (Debian: dpkg) not on PATH: %v", err)
		}
		test(t, "sh", "")
	})
	t.Run("busybox", func(t *testing.T) {
		t.Parallel()
		bb := testenv.NeedProgram(t, "busybox") // Debian: busybox-static
		// BusyBox's applets before the host's: start-stop-daemon and the tools
		// the script calls are BusyBox's.
		dir := t.TempDir()
		for _, applet := range []string{"start-stop-daemon", "cat", "dirname", "ln", "mkdir", "mv", "mktemp", "readlink", "rm", "sleep", "tail", "tr", "wc"} {
			if err := os.Symlink(bb, filepath.Join(dir, applet)); err != nil {
				t.Fatal(err)
			}
		}
		test(t, bb+" sh", dir)
	})
}

// sysvRig runs sysv/porthole with a fake agent, everything in a directory of
// its own; whatever the script started is killed at the end of the test.
//
// The script starts the agent with a clean environment, which only what
// /etc/default/porthole exports reaches: run writes the rig's one
// ($PORTHOLE_DEFAULTS), exporting the script's settings and the fake agent's
// from env, then defaults.
type sysvRig struct {
	t                   *testing.T
	shell               string // runs the script: "sh" or "/path/busybox sh"
	script              string // the script's absolute path
	dir, events, log    string
	pidfile, transcript string
	env                 []string
	defaults            string // more lines of /etc/default/porthole
	wd                  string // the script's current directory; "": the test's
}

func newSysVRig(t *testing.T, fake, shell, binDir string, env ...string) *sysvRig {
	dir := t.TempDir()
	script, err := filepath.Abs("sysv/porthole")
	if err != nil {
		t.Fatal(err)
	}
	r := &sysvRig{t: t, shell: shell, script: script, dir: dir,
		events: filepath.Join(dir, "events"), log: filepath.Join(dir, "log", "porthole.log"),
		pidfile: filepath.Join(dir, "run", "porthole.pid"), transcript: filepath.Join(dir, "login.out")}
	// Not the GOMAXPROCS of whoever runs the test.
	r.env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") })
	if binDir != "" {
		r.env = append(r.env, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	r.env = append(r.env, "FAKE_EVENTS="+r.events, "DAEMON="+fake, "CONF="+filepath.Join(dir, "porthole.toml"),
		"PIDFILE="+r.pidfile, "LOG="+r.log, "FAKE_LOGIN_OUTPUT="+r.transcript)
	r.env = append(r.env, env...)
	t.Cleanup(func() {
		kill := func() {
			for _, kind := range []string{"started", "login"} {
				for _, pid := range r.eventPidsWait(kind, 0, 0) {
					if testenv.ProcessRunning(pid) {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
		}
		kill()
		// After a failure, a restart a login sent into the background may
		// still start an agent: wait for it (its start-stop-daemon, up to a
		// second) and end that one too.
		if t.Failed() && len(r.eventPidsWait("login", 0, 0)) > 0 {
			time.Sleep(1500 * time.Millisecond)
			kill()
		}
	})
	return r
}

// command is the script run with action, as the shell runs it.
func (r *sysvRig) command(action string) string {
	return r.shell + " " + r.script + " " + action
}

func (r *sysvRig) run(action string) (string, error) {
	defaults := filepath.Join(r.dir, "default")
	var b strings.Builder
	for _, kv := range r.env {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "FAKE_"), k == "PORTHOLE_RESTART_DETACHED",
			k == "DAEMON", k == "CONF", k == "PIDFILE", k == "LOG", k == "LOG_MAX", k == "STOP_TIMEOUT":
			fmt.Fprintf(&b, "export %s=%s\n", k, shq(v))
		}
	}
	// For the script that a login the agent serves runs.
	fmt.Fprintf(&b, "export PORTHOLE_DEFAULTS=%s\n%s", shq(defaults), r.defaults)
	if err := os.WriteFile(defaults, []byte(b.String()), 0o644); err != nil {
		r.t.Fatal(err)
	}
	args := strings.Fields(r.command(action))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(slices.Clone(r.env), "PORTHOLE_DEFAULTS="+defaults)
	cmd.Dir = r.wd
	out, err := cmd.CombinedOutput()
	r.t.Logf("%s: %v: %s", r.command(action), err, bytes.TrimSpace(out))
	return string(out), err
}

// eventPidsWait returns the pids of the events of one kind, waiting up to wait
// for n of them; eventPids waits up to 5 s.
func (r *sysvRig) eventPidsWait(kind string, n int, wait time.Duration) []int {
	deadline := time.Now().Add(wait)
	for {
		b, _ := os.ReadFile(r.events)
		var pids []int
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == kind {
				pid, err := strconv.Atoi(f[1])
				if err != nil {
					r.t.Fatalf("events: %q: %v", l, err)
				}
				pids = append(pids, pid)
			}
		}
		if len(pids) >= n || time.Now().After(deadline) {
			return pids
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *sysvRig) eventPids(kind string, n int) []int { return r.eventPidsWait(kind, n, 5*time.Second) }

// pidFile returns the pid the pid file holds, or 0.
func (r *sysvRig) pidFile() int {
	b, _ := os.ReadFile(r.pidfile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// TestSysVScriptOneAgent runs start, start, reload, stop, restart and
// force-reload with a fake agent: the second start finds the first agent (the
// pid file names it) and starts no other, stop and reload act on exactly the
// process the pid file names when that is the agent, never on another one that
// has its pid now, and restart replaces the agent.
func TestSysVScriptOneAgent(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		testSysVOneAgent(t, newSysVRig(t, fake, shell, binDir))
	})
}

func testSysVOneAgent(t *testing.T, r *sysvRig) {
	if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("start: %v %q, want OK", err, out)
	}
	started := r.eventPids("started", 1)
	if len(started) != 1 {
		t.Fatalf("after start: agents started %v, want one", started)
	}
	first := started[0]
	if got := r.pidFile(); got != first {
		t.Errorf("pid file holds %d, want the agent's pid %d", got, first)
	}
	r.wantStatus(0, fmt.Sprintf("running (pid %d)", first))

	// LSB: start of a running service succeeds and starts nothing.
	if out, err := r.run("start"); err != nil || !strings.Contains(out, "already running") {
		t.Errorf("second start: %v %q, want exit 0 and already running", err, out)
	}
	// A second agent would have said so within a second.
	if started := r.eventPidsWait("started", 2, time.Second); len(started) != 1 {
		t.Errorf("after a second start: agents started %v, want only the first one", started)
	}

	if out, err := r.run("reload"); err != nil || !strings.Contains(out, "OK") {
		t.Errorf("reload: %v %q, want OK", err, out)
	}
	if got := r.eventPids("reloaded", 1); !slices.Equal(got, []int{first}) {
		t.Errorf("after reload: agents reloaded %v, want [%d]", got, first)
	}

	if out, err := r.run("stop"); err != nil || !strings.Contains(out, "OK") {
		t.Errorf("stop: %v %q, want OK", err, out)
	}
	for _, pid := range r.eventPids("started", 0) {
		if testenv.ProcessRunning(pid) {
			t.Errorf("after stop: agent %d still running (agents started: %v)", pid, r.eventPids("started", 0))
		}
	}
	if _, err := os.Stat(r.pidfile); err == nil {
		t.Error("after stop: the pid file is still there")
	}
	r.wantStatus(3, "not running")

	// A pid file left by an agent that died names a pid some other process has
	// now: stop and reload leave that process alone, start starts the agent.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	stale := func() { os.WriteFile(r.pidfile, []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o644) }
	for _, action := range []string{"stop", "reload"} {
		stale()
		r.run(action)
		time.Sleep(100 * time.Millisecond)
		if !testenv.ProcessRunning(other.Process.Pid) {
			t.Fatalf("%s with a stale pid file: it signalled pid %d, which is not the agent", action, other.Process.Pid)
		}
	}
	stale()
	r.wantStatus(1, "not running, but "+r.pidfile+" is left")
	if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("start with a stale pid file: %v %q, want OK", err, out)
	}
	started = r.eventPids("started", 2)
	if len(started) != 2 {
		t.Fatalf("start with a stale pid file: agents started %v, want a second one", started)
	}

	// restart and force-reload (SIGHUP reloads only part of the configuration)
	// each stop the agent and start another.
	for i, action := range []string{"restart", "force-reload"} {
		if out, err := r.run(action); err != nil || strings.Count(out, "OK") != 2 {
			t.Fatalf("%s: %v %q, want two OKs (stop, start)", action, err, out)
		}
		started = r.eventPids("started", 3+i)
		if len(started) != 3+i {
			t.Fatalf("%s: agents started %v, want one more", action, started)
		}
		if testenv.ProcessRunning(started[1+i]) || !testenv.ProcessRunning(started[2+i]) || r.pidFile() != started[2+i] {
			t.Errorf("%s: agents started %v, pid file %d; want only the last one running, named by the pid file", action, started, r.pidFile())
		}
	}

	if out, err := r.run("stop"); err != nil || !strings.Contains(out, "OK") {
		t.Errorf("stop: %v %q, want OK", err, out)
	}
	if testenv.ProcessRunning(started[3]) {
		t.Errorf("stop: agent %d still running", started[3])
	}
	if got := r.eventPids("stopped", 4); !slices.Equal(got, started) {
		t.Errorf("agents stopped %v, want %v (each by SIGTERM)", got, started)
	}
	// LSB: stop of a stopped service succeeds.
	if out, err := r.run("stop"); err != nil {
		t.Errorf("stop when not running: %v %q, want exit 0", err, out)
	}
}

// TestSysVPidFileNamesAnotherPorthole: a pid file left by an agent that died
// names a pid that another porthole process has now, its name the agent's:
// `porthole version` from a health check, an operator's `porthole connect`.
// status must not call it the agent, stop and reload must not signal it, and
// start must start the agent rather than say it runs.
func TestSysVPidFileNamesAnotherPorthole(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, args := range [][]string{{"version"}, {"connect", "--region", "eu-west-1"}} {
			t.Run(args[0], func(t *testing.T) {
				r := newSysVRig(t, fake, shell, binDir)
				// The fake runs until SIGTERM whatever its command, and
				// records the signals it gets in events of its own.
				events := filepath.Join(r.dir, "other.events")
				other := exec.Command(fake, args...)
				other.Env = append(os.Environ(), "FAKE_EVENTS="+events)
				if err := other.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { other.Process.Kill(); other.Wait() })
				deadline := time.Now().Add(5 * time.Second)
				for b, _ := os.ReadFile(events); !bytes.Contains(b, []byte("started ")); b, _ = os.ReadFile(events) {
					if time.Now().After(deadline) {
						t.Fatalf("porthole %s did not start: events %q", args[0], b)
					}
					time.Sleep(20 * time.Millisecond)
				}
				stale := func() {
					os.MkdirAll(filepath.Dir(r.pidfile), 0o755)
					os.WriteFile(r.pidfile, []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o644)
				}
				stale()
				r.wantStatus(1, "not running, but "+r.pidfile+" is left")
				for _, action := range []string{"stop", "reload"} {
					stale()
					r.run(action)
				}
				time.Sleep(100 * time.Millisecond)
				b, _ := os.ReadFile(events)
				var signalled []string
				for _, l := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(l, "stopped ") || strings.HasPrefix(l, "reloaded ") {
						signalled = append(signalled, l)
					}
				}
				if len(signalled) > 0 || !testenv.ProcessRunning(other.Process.Pid) {
					t.Errorf("stop and reload with the pid file naming porthole %s: it got %q, running %v; want no signal", args[0], signalled, testenv.ProcessRunning(other.Process.Pid))
				}
				stale()
				if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
					t.Errorf("start with the pid file naming porthole %s: %v %q, want the agent started", args[0], err, out)
				}
				if started := r.eventPids("started", 1); len(started) != 1 || r.pidFile() != started[0] {
					t.Errorf("start with the pid file naming porthole %s: agents started %v, pid file %d; want one, named", args[0], started, r.pidFile())
				}
				if out, err := r.run("stop"); err != nil || !strings.Contains(out, "OK") {
					t.Errorf("stop: %v %q, want OK", err, out)
				}
				if !testenv.ProcessRunning(other.Process.Pid) {
					t.Errorf("stop of the agent ended porthole %s too", args[0])
				}
			})
		}
	})
}

// wantStatus runs the status action and checks its LSB exit code and output.
func (r *sysvRig) wantStatus(code int, text string) {
	r.t.Helper()
	out, err := r.run("status")
	got := 0
	if ee, ok := err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if err != nil {
		r.t.Fatalf("status: %v", err)
	}
	if got != code || !strings.Contains(out, text) {
		r.t.Errorf("status: exit %d, %q; want exit %d and %q", got, out, code, text)
	}
}

// TestSysVStartFailsWhenTheAgentExits: an agent that exits right after it
// started (check-config passed with a warning, but the storage above data_dir
// is not mounted yet, say) makes start fail, pointing at the log and quoting
// its last line, rather than say OK.
func TestSysVStartFailsWhenTheAgentExits(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, after := range []string{"0s", "300ms"} {
			r := newSysVRig(t, fake, shell, binDir, "FAKE_EXIT=1", "FAKE_EXIT_AFTER="+after)
			out, err := r.run("start")
			if err == nil || !strings.Contains(out, "FAIL") || !strings.Contains(out, r.log) || !strings.Contains(out, "cannot run (fake)") {
				t.Errorf("start of an agent that exits 1 after %s: %v %q; want exit 1, FAIL, the log's name and its last line", after, err, out)
			}
			if exited := r.eventPids("exited", 1); len(exited) != 1 {
				t.Errorf("start of an agent that exits 1 after %s: the agent did not run (events %v)", after, exited)
			}
		}
	})
}

// TestSysVStartUmask: start run by someone whose umask is 000 neither makes
// the log (logins, addresses, commands) writable by every local user nor gives
// the agent, and so every login's files, that umask: the agent gets 022, as
// under systemd and procd, and a new log is root's alone.
func TestSysVStartUmask(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	wrap := filepath.Join(t.TempDir(), "umask000")
	if err := os.WriteFile(wrap, []byte("#!/bin/sh\numask 000\nexec \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newSysVRig(t, fake, wrap+" "+shell, binDir)
		if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("start: %v %q", err, out)
		}
		defer r.run("stop")
		if fi, err := os.Stat(r.log); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("the log made by start: %v, %v; want mode 0600", fi.Mode(), err)
		}
		if fi, err := os.Stat(filepath.Dir(r.pidfile)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("the pid file's directory made by start: %v, %v; want mode 0755", fi.Mode(), err)
		}
		pids := r.eventPids("started", 1)
		if len(pids) != 1 {
			t.Fatalf("started agents: %v", pids)
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pids[0]) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\nUmask:\t0022\n") {
			t.Errorf("the agent's status, want Umask 0022:\n%s", b)
		}
	})
}

// TestSysVStopKillsAWedgedAgent: an agent still running STOP_TIMEOUT seconds
// after SIGTERM gets SIGKILL, as procd and systemd send it, so that restart
// can start a working one.
func TestSysVStopKillsAWedgedAgent(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newSysVRig(t, fake, shell, binDir, "FAKE_IGNORE_TERM=1", "STOP_TIMEOUT=1")
		if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("start: %v %s", err, out)
		}
		pid := r.eventPids("started", 1)[0]
		out, err := r.run("stop")
		if err != nil || !strings.Contains(out, "OK (SIGKILL: still running 1 s after SIGTERM)") {
			t.Errorf("stop of an agent that ignores SIGTERM: %v %q; want OK, saying it was killed", err, out)
		}
		if ignored := r.eventPids("ignored", 1); len(ignored) != 1 || ignored[0] != pid {
			t.Errorf("the agent was not sent SIGTERM first (events %v)", ignored)
		}
		if syscall.Kill(pid, 0) == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z") {
				t.Errorf("after stop: agent %d still running", pid)
			}
		}
	})
}

// TestSysVStartGOMAXPROCS: the agent gets GOMAXPROCS=1 unless the environment
// (/etc/default/porthole) sets it.
func TestSysVStartGOMAXPROCS(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	for _, tc := range []struct{ env, want string }{{"", "1"}, {"GOMAXPROCS=0", "0"}, {"GOMAXPROCS=3", "3"}} {
		r := newSysVRig(t, fake, "sh", "")
		r.defaults = tc.env + "\n" // as /etc/default/porthole sets it
		if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("start (%s): %v %s", tc.env, err, out)
		}
		r.eventPids("env", 1)
		b, _ := os.ReadFile(r.events)
		if want := "GOMAXPROCS=" + tc.want + "\n"; !strings.Contains(string(b), want) {
			t.Errorf("start with %q in the defaults: the agent saw %q, want %s", tc.env, b, want)
		}
		r.run("stop")
	}
}

// TestSysVStartCleanEnvironment: the agent runs in / with PATH, GOMAXPROCS,
// GOMEMLIMIT when set, and what /etc/default/porthole exports, and nothing
// else of the environment start ran in: an operator's https_proxy does not
// become the agent's at a restart they type.
func TestSysVStartCleanEnvironment(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, tc := range []struct {
			name, defaults string
			want           map[string]string // "": absent
		}{
			{"no defaults", "", map[string]string{"https_proxy": "", "HTTPS_PROXY": "", "OPERATOR": "", "GOMAXPROCS": "1", "GOMEMLIMIT": ""}},
			{"defaults", "export https_proxy=http://device:3128\nNOT_EXPORTED=1\nGOMEMLIMIT=20MiB\nGOMAXPROCS=2\n",
				map[string]string{"https_proxy": "http://device:3128", "HTTPS_PROXY": "", "OPERATOR": "", "NOT_EXPORTED": "", "GOMAXPROCS": "2", "GOMEMLIMIT": "20MiB"}},
			// A defaults file whose last command fails (a common idiom) still
			// starts the agent: it is sourced for its settings, not its status.
			{"defaults ending false", "export https_proxy=http://device:3128\n[ -f /nonexistent ] && export HTTPS_PROXY=x\n",
				map[string]string{"https_proxy": "http://device:3128", "HTTPS_PROXY": ""}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := newSysVRig(t, fake, shell, binDir, "https_proxy=http://operator:3128", "HTTPS_PROXY=http://operator:3128", "OPERATOR=1")
				r.env = slices.DeleteFunc(r.env, func(kv string) bool { return strings.HasPrefix(kv, "GOMEMLIMIT=") })
				r.defaults = tc.defaults
				r.wd = t.TempDir()
				if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
					t.Fatalf("start: %v %q", err, out)
				}
				pids := r.eventPids("started", 1)
				r.run("stop")
				if len(pids) != 1 {
					t.Fatalf("agents started %v, want one", pids)
				}
				env := map[string]string{}
				cwd := ""
				for _, l := range strings.Split(r.readEvents(), "\n") {
					if v, ok := strings.CutPrefix(l, fmt.Sprintf("cwd %d ", pids[0])); ok {
						cwd = v
					}
					if v, ok := strings.CutPrefix(l, fmt.Sprintf("environ %d ", pids[0])); ok {
						kv, err := strconv.Unquote(v)
						if err != nil {
							t.Fatalf("events: %q: %v", l, err)
						}
						k, v, _ := strings.Cut(kv, "=")
						env[k] = v
					}
				}
				if cwd != "/" {
					t.Errorf("the agent runs in %q, want /", cwd)
				}
				for k, want := range tc.want {
					if got := env[k]; got != want {
						t.Errorf("the agent's %s = %q, want %q", k, got, want)
					}
				}
				if env["PATH"] == "" {
					t.Error("the agent has no PATH")
				}
				// The rest: what the rig's defaults export and the shell's own.
				for k := range env {
					switch {
					case strings.HasPrefix(k, "FAKE_"), slices.Contains([]string{"PATH", "GOMAXPROCS", "GOMEMLIMIT", "https_proxy",
						"DAEMON", "CONF", "PIDFILE", "LOG", "PORTHOLE_DEFAULTS", "PWD", "OLDPWD", "SHLVL", "_"}, k):
					default:
						t.Errorf("the agent's environment has %s=%q, from the environment start ran in", k, env[k])
					}
				}
			})
		}
	})
}

// TestSysVLogCap: start moves a log bigger than LOG_MAX to LOG.1, replacing the
// one before, and leaves a smaller one to grow.
func TestSysVLogCap(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newSysVRig(t, fake, shell, binDir, "LOG_MAX=1000")
		os.MkdirAll(filepath.Dir(r.log), 0o755)
		os.WriteFile(r.log+".1", []byte("oldest\n"), 0o644)
		big := bytes.Repeat([]byte("old line\n"), 200)
		os.WriteFile(r.log, big, 0o644)
		if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("start: %v %q", err, out)
		}
		r.run("stop")
		if b, _ := os.ReadFile(r.log + ".1"); !bytes.Equal(b, big) {
			t.Errorf("after start with a %d-byte log (LOG_MAX=1000): log.1 holds %d bytes, want the old log", len(big), len(b))
		}
		if b, _ := os.ReadFile(r.log); bytes.Contains(b, []byte("old line")) {
			t.Errorf("after start with a %d-byte log (LOG_MAX=1000): the log still holds the old lines", len(big))
		}

		small := []byte("recent line\n")
		os.WriteFile(r.log, small, 0o644)
		if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("start: %v %q", err, out)
		}
		r.run("stop")
		if b, _ := os.ReadFile(r.log); !bytes.HasPrefix(b, small) {
			t.Errorf("after start with a small log: the log is %q, want it kept", b)
		}
		if b, _ := os.ReadFile(r.log + ".1"); !bytes.Equal(b, big) {
			t.Errorf("after start with a small log: log.1 changed")
		}
	})
}

// TestSysVLogRotationStaysInPlace: where /var/log is a link to the
// world-writable /tmp, a local user can put a link to a directory of their
// choice, or a directory, at LOG.1; start's rotation, as root, moved the log
// into it. A link is replaced by the old log; a directory is left alone, and
// so is the log, which start says. The same with an mv without -T (an older
// BusyBox's), which the rotation falls back on.
func TestSysVLogRotationStaysInPlace(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	noT := t.TempDir()
	mv, err := exec.LookPath("mv")
	if err != nil {
		t.Fatal(err)
	}
	shim := "#!/bin/sh\nfor a; do case $a in -*T*) echo \"mv: invalid option -- 'T'\" >&2; exit 1;; esac; done\nexec " + shq(mv) + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(noT, "mv"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, tc := range []struct {
			name       string
			link, oldT bool
		}{
			{"a link", true, false},
			{"a directory", false, false},
			{"a link, mv without -T", true, true},
			{"a directory, mv without -T", false, true},
		} {
			if tc.oldT && binDir != "" {
				continue // BusyBox's sh runs its own mv, not one put first on PATH
			}
			r := newSysVRig(t, fake, shell, binDir, "LOG_MAX=1000")
			if tc.oldT {
				r.env = append(r.env, "PATH="+noT+string(os.PathListSeparator)+os.Getenv("PATH"))
			}
			os.MkdirAll(filepath.Dir(r.log), 0o755)
			elsewhere := filepath.Join(r.dir, "elsewhere")
			if err := os.Mkdir(elsewhere, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.link {
				err := os.Symlink(elsewhere, r.log+".1")
				if err != nil {
					t.Fatal(err)
				}
			} else if err := os.Mkdir(r.log+".1", 0o755); err != nil {
				t.Fatal(err)
			}
			big := bytes.Repeat([]byte("old line\n"), 200)
			os.WriteFile(r.log, big, 0o600)
			out, err := r.run("start")
			if err != nil || !strings.Contains(out, "OK") {
				t.Fatalf("LOG.1 %s: start: %v %q", tc.name, err, out)
			}
			r.run("stop")
			for _, dir := range []string{elsewhere, r.log + ".1"} {
				if entries, _ := os.ReadDir(dir); len(entries) > 0 {
					t.Errorf("LOG.1 %s: start moved the log into %s", tc.name, dir)
				}
			}
			b, _ := os.ReadFile(r.log + ".1")
			switch {
			case tc.link && !bytes.Equal(b, big):
				t.Errorf("LOG.1 %s to a directory: after start it holds %d bytes, want the old log", tc.name, len(b))
			case !tc.link && !strings.Contains(out, "not rotated"):
				t.Errorf("LOG.1 %s: start said %q, want it to say the log is not rotated", tc.name, out)
			}
			if b, _ := os.ReadFile(r.log); !tc.link && !bytes.HasPrefix(b, big) {
				t.Errorf("LOG.1 %s: the log lost its old lines", tc.name)
			}
		}
	})
}

// TestSysVLogNotFollowed: the script, as root, opens the log to append to it
// in /var/log, which some firmware makes a link to the world-writable /tmp.
// There, without fs.protected_symlinks (off by default in the kernel, and
// BusyBox init leaves it so), a local user's symbolic link in the log's place
// had start make the file it names, or append the agent's log to it; and a
// file of that user's would be theirs to read and, later, to replace with a
// link. start must refuse a log that is a link, not a regular file or
// another user's, saying why, and start nothing.
func TestSysVLogNotFollowed(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, tc := range []struct {
			name  string
			plant func(t *testing.T, log, victim string) // puts it in the log's place
			want  string                                 // why start refuses the log
		}{
			{"link to a file", func(t *testing.T, log, victim string) {
				os.WriteFile(victim, []byte("victim\n"), 0o644)
				if err := os.Symlink(victim, log); err != nil {
					t.Fatal(err)
				}
			}, "it is a symbolic link"},
			{"link to no file", func(t *testing.T, log, victim string) {
				if err := os.Symlink(victim, log); err != nil {
					t.Fatal(err)
				}
			}, "it is a symbolic link"},
			{"directory", func(t *testing.T, log, victim string) {
				if err := os.Mkdir(log, 0o755); err != nil {
					t.Fatal(err)
				}
			}, "it is not a regular file"},
			{"another user's file", func(t *testing.T, log, victim string) {
				os.WriteFile(log, nil, 0o666)
				if err := os.Chown(log, 65534, 65534); err != nil {
					if os.Getenv("CI") == "true" {
						t.Fatalf("giving the log to another user: %v", err)
					}
					t.Skipf("cannot give the log to another user here (%v)", err)
				}
			}, "it is another user's"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// An agent that says why it cannot run, on stderr, as it
				// exits: where the log goes shows.
				r := newSysVRig(t, fake, shell, binDir, "FAKE_EXIT=1", "FAKE_EXIT_AFTER=0s")
				victim := filepath.Join(r.dir, "victim")
				os.MkdirAll(filepath.Dir(r.log), 0o755)
				tc.plant(t, r.log, victim)
				out, err := r.run("start")
				want := "FAIL (cannot open the log " + r.log + ": " + tc.want
				if err == nil || !strings.Contains(out, want) || !strings.Contains(out, "; nothing was started)") {
					t.Errorf("start with %s in the log's place: %v %q; want exit 1 and %q…; nothing was started)", tc.name, err, out, want)
				}
				if ran := r.eventPidsWait("exited", 1, time.Second); len(ran) != 0 {
					t.Errorf("start with %s in the log's place ran the agent", tc.name)
				}
				if b, err := os.ReadFile(victim); tc.name == "link to a file" && string(b) != "victim\n" || tc.name != "link to a file" && err == nil {
					t.Errorf("start with %s in the log's place wrote the file it names: %q", tc.name, b)
				}
			})
		}
	})
}

// TestSysVLogLinkedSinceTheCheck: a local user's link put in the log's place
// after start checked it (here right after the rotation freed the name, or
// as the new log is made) is not followed either. noclobber's open fails on
// a link to a regular file or to none, but opens what a link to a FIFO or a
// device names: to the user's FIFO, start hung in that open (at boot, rcS
// with it), and root opened any device the link named for writing. start
// must open no such file, and make the log, a regular file of root's, or
// refuse.
func TestSysVLogLinkedSinceTheCheck(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, tc := range []struct {
			name, tool string // the tool after which the link appears
			want       string // "": started, with a log of root's
		}{
			{"after the rotation", "mv", "FAIL (cannot open the log %s: it is a symbolic link"},
			{"as the log is made", "mktemp", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := newSysVRig(t, fake, shell, binDir, "LOG_MAX=10")
				fifo := filepath.Join(r.dir, "fifo")
				if err := syscall.Mkfifo(fifo, 0o666); err != nil {
					t.Fatal(err)
				}
				os.MkdirAll(filepath.Dir(r.log), 0o755)
				os.WriteFile(r.log, []byte("more than LOG_MAX bytes\n"), 0o600) // rotated
				if binDir != "" {
					// Its applets never come from PATH (busybox-static's
					// sh is built standalone), so no tool here can stage
					// the race; its noclobber opens a FIFO through a link
					// as dash's does.
					t.Skip("BusyBox's sh runs its own applets, not one put first on PATH: the race cannot be staged")
				}
				// The tool, then the link, once: the user's loop of ln -s
				// that wins the race.
				real, err := exec.LookPath(tc.tool)
				if err != nil {
					t.Fatal(err)
				}
				bin, linked := t.TempDir(), filepath.Join(r.dir, "linked")
				shim := "#!/bin/sh\n" + shq(real) + " \"$@\"; rc=$?\n" +
					"[ -e " + shq(linked) + " ] || { : >" + shq(linked) + "; rm -f " + shq(r.log) + "; ln -s " + shq(fifo) + " " + shq(r.log) + "; }\n" +
					"exit $rc\n"
				if err := os.WriteFile(filepath.Join(bin, tc.tool), []byte(shim), 0o755); err != nil {
					t.Fatal(err)
				}
				r.env = append(r.env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
				// Whether start opens the FIFO: this open returns once it does.
				opened := make(chan struct{})
				go func() {
					if f, err := os.OpenFile(fifo, os.O_RDONLY, 0); err == nil {
						close(opened)
						f.Close()
					}
				}()
				defer func() { // the reader's open ends, if start never opened the FIFO
					if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						f.Close()
					}
				}()
				out, err := r.run("start")
				select {
				case <-opened:
					t.Errorf("start with a link to a FIFO in the log's place %s opened the FIFO (%v %q)", tc.name, err, out)
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := os.Stat(linked); err != nil {
					t.Fatalf("%s never ran: the link was not put in the log's place (%v)", tc.tool, err)
				}
				if tc.want != "" {
					if want := fmt.Sprintf(tc.want, r.log); err == nil || !strings.Contains(out, want) {
						t.Errorf("start with a link in the log's place %s: %v %q, want exit 1 and %q…", tc.name, err, out, want)
					}
					return
				}
				if err != nil || !strings.Contains(out, "OK") {
					t.Errorf("start with a link in the log's place %s: %v %q, want OK", tc.name, err, out)
				}
				if fi, err := os.Lstat(r.log); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
					t.Errorf("the log after start: %v, %v; want a regular file, 0600", fi, err)
				}
				r.run("stop")
			})
		}
	})
}

// TestSysVRestartFromALogin runs restart in a login the agent serves, the way
// an operator restarts the agent through it: stopping the agent ends that
// login (its terminal hangs up or its output is no longer read, its process
// group gets SIGHUP and, 2 s later if still running, SIGKILL), and restart
// must start an agent all the same. By default restart notices the login and
// goes on in a session of its own; with PORTHOLE_RESTART_DETACHED=1 and no
// SIGKILL (a job of an interactive shell, which the SSH server's SIGKILL of the
// shell's process group misses) it stays, ignoring SIGHUP and SIGPIPE, and
// carries on although its output is gone (EIO, EPIPE).
func TestSysVRestartFromALogin(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, tc := range []struct {
			name    string
			env     []string
			inPlace bool
		}{
			{"command", []string{"FAKE_LOGIN_KILL=500ms"}, false},
			{"terminal", []string{"FAKE_LOGIN_PTY=1", "FAKE_LOGIN_KILL=500ms"}, false},
			{"command, in place", []string{"PORTHOLE_RESTART_DETACHED=1"}, true},
			{"terminal, in place", []string{"FAKE_LOGIN_PTY=1", "PORTHOLE_RESTART_DETACHED=1"}, true},
			// The log is due for rotation: the outcome must still be in $LOG,
			// which the login was told to read (its own start rotated it to
			// $LOG.1 once).
			{"command, log over LOG_MAX", []string{"FAKE_LOGIN_KILL=500ms", "LOG_MAX=1000"}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := newSysVRig(t, fake, shell, binDir, tc.env...)
				r.env = append(r.env, "FAKE_LOGIN="+r.command("restart"))
				if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
					t.Fatalf("start: %v %q", err, out)
				}
				first := r.eventPids("started", 1)
				if len(first) != 1 {
					t.Fatalf("after start: agents started %v, want one", first)
				}
				if f, err := os.OpenFile(r.log, os.O_WRONLY|os.O_APPEND, 0); err == nil {
					f.Write(bytes.Repeat([]byte("the agent's log\n"), 100)) // 1,600 bytes
					f.Close()
				}
				syscall.Kill(first[0], syscall.SIGUSR1) // log in
				logins := r.eventPids("login", 1)
				if len(logins) != 1 {
					t.Fatalf("the agent served no login: events %s", r.readEvents())
				}
				started := r.eventPidsWait("started", 2, 15*time.Second)
				transcript, _ := os.ReadFile(r.transcript)
				if len(started) != 2 {
					t.Fatalf("restart in a login: agents started %v, want a second one\nthe login's output: %q\nevents: %s", started, transcript, r.readEvents())
				}
				if got := r.eventPids("stopped", 1); !slices.Equal(got, started[:1]) {
					t.Errorf("agents stopped %v, want [%d]", got, started[0])
				}
				// Wait for restart to end (start waits a second after the agent
				// started, in naps whose forks a loaded machine slows: a CI
				// run with a 10 s wait once saw no OK yet): in the login's
				// session, or in its own, which writes to the log.
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					log, _ := os.ReadFile(r.log)
					if tc.inPlace && !sessionAlive(logins[0]) ||
						!tc.inPlace && bytes.Contains(log, []byte("Starting porthole: OK")) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if sessionAlive(logins[0]) {
					t.Errorf("the login's session is still there")
				}
				log, _ := os.ReadFile(r.log)
				if !tc.inPlace && !bytes.Contains(log, []byte("Starting porthole: OK")) {
					t.Errorf("restart in its own session did not say Starting porthole: OK in the log:\n%s", log)
				}
				if !testenv.ProcessRunning(started[1]) || r.pidFile() != started[1] {
					t.Errorf("after restart in a login: agent %d alive %v, pid file %d; want it running and named", started[1], testenv.ProcessRunning(started[1]), r.pidFile())
				}
				t.Logf("the login's output: %q", transcript)
			})
		}
	})
}

// TestSysVIgnoresCallersSettings: the script's settings come from
// /etc/default/porthole only. An operator whose shell exports PIDFILE, CONF,
// LOG or GOMAXPROCS (names other programs use too) once restarted into a
// second agent beside the first (stop found no agent at that pid file), or
// had start check and run another config file. The defaults file here sets
// only what keeps the test off the system's paths; CONF is left to the
// script's default.
func TestSysVIgnoresCallersSettings(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	r := newSysVRig(t, fake, "sh", "")
	defaults := filepath.Join(r.dir, "default.admin")
	os.WriteFile(defaults, []byte("export FAKE_EVENTS="+shq(r.events)+"\nDAEMON="+shq(fake)+
		"\nPIDFILE="+shq(r.pidfile)+"\nLOG="+shq(r.log)+"\n"), 0o644)
	other := t.TempDir()
	env := slices.DeleteFunc(slices.Clone(r.env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == "DAEMON" || k == "CONF" || k == "PIDFILE" || k == "LOG"
	})
	env = append(env, "PORTHOLE_DEFAULTS="+defaults, "DAEMON=/bin/false", "PIDFILE="+filepath.Join(other, "pid"),
		"CONF="+filepath.Join(other, "conf"), "LOG="+filepath.Join(other, "log"), "GOMAXPROCS=7")
	run := func(action string) {
		cmd := exec.Command("sh", r.script, action)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		t.Logf("%s with the operator's settings exported: %v: %s", action, err, out)
		if err != nil {
			t.Errorf("%s: %v", action, err)
		}
	}
	run("start")
	first := r.eventPids("started", 1)
	run("restart")
	started := r.eventPids("started", 2)
	if len(started) != 2 || testenv.ProcessRunning(first[0]) || r.pidFile() != started[1] {
		t.Errorf("restart: agents started %v, the first alive %v, pid file %d; want the first replaced and named", started, testenv.ProcessRunning(first[0]), r.pidFile())
	}
	if names, _ := os.ReadDir(other); len(names) > 0 {
		t.Errorf("the script used the operator's paths: %s holds %v", other, names)
	}
	b, _ := os.ReadFile(r.events)
	if strings.Contains(string(b), "GOMAXPROCS=7") || strings.Contains(string(b), other) {
		t.Errorf("the agent got the operator's GOMAXPROCS or config: events %s", b)
	}
	run("stop")
}

// sessionAlive reports whether a live process is in session sid.
func sessionAlive(sid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		// After the command's name: state, ppid, pgrp, session.
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 3 && f[3] == strconv.Itoa(sid) && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

func (r *sysvRig) readEvents() string {
	b, _ := os.ReadFile(r.events)
	return string(b)
}

// TestSysVCheckConfigCleanEnvironment: start and reload gate the agent on
// `porthole check-config -start`, which reads the environment's https_proxy
// as the agent does. The agent runs with a clean environment (what
// /etc/default/porthole exports), never the one of whoever ran the script, so
// the check must see that one too: an operator's https_proxy that the agent
// would refuse (socks5://, a typo) failed start, and restart stopped the
// agent and then refused to start it, although the agent it would have
// started never sees the variable. The device was left without its agent.
func TestSysVCheckConfigCleanEnvironment(t *testing.T) {
	r := sysvRigWithAgent(t)
	t.Cleanup(func() { r.run("stop") })
	if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("start: %v %q, want OK", err, out)
	}
	r.env = append(r.env, "https_proxy=socks5://operator:1080")
	for _, action := range []string{"reload", "restart"} {
		if out, err := r.run(action); err != nil || !strings.Contains(out, "OK") || strings.Contains(out, "FAIL") {
			t.Errorf("%s with https_proxy=socks5://... in the caller's environment: %v %q, want OK", action, err, out)
		}
	}
	if out, err := r.run("status"); err != nil {
		t.Errorf("status after the restart: %v %q, want the agent running", err, out)
	}
}

// TestSysVCheckActionCleanEnvironment: `check` is documented (docs/firmware.md)
// as start's check plus the device certificate's dates. It must judge the
// config in the environment the agent gets, as start and reload do: an
// operator's https_proxy (socks5://) that the agent never sees made `check`
// report a configuration error for a config that starts.
func TestSysVCheckActionCleanEnvironment(t *testing.T) {
	r := sysvRigWithAgent(t)
	r.env = append(r.env, "https_proxy=socks5://operator:1080")
	if out, err := r.run("check"); err != nil {
		t.Errorf("check with https_proxy=socks5://... in the caller's environment only: %v %q, want ok", err, out)
	}
	// What the agent would get (/etc/default/porthole) is checked.
	r.defaults = "export https_proxy=socks5://agent:1080\n"
	if out, err := r.run("check"); err == nil || !strings.Contains(out, "socks5") {
		t.Errorf("check with https_proxy=socks5://... in /etc/default/porthole: %v %q, want the proxy refused", err, out)
	}
}

// sysvRigWithAgent is a rig with the real porthole and a config it starts
// with (its broker does not answer, which the agent rides out).
func sysvRigWithAgent(t *testing.T) *sysvRig {
	porthole := buildPorthole(t)
	pki := mqtttest.NewPKI(t)
	cert, key := pki.Client(t, "router-7")
	r := newSysVRig(t, porthole, "sh", "")
	conf := "thing_name = \"router-7\"\ndata_dir = " + shq(filepath.Join(r.dir, "state")) + "\n[mqtt]\nendpoint = \"127.0.0.1:1\"\n" +
		"ca_file = " + shq(pki.CAFile) + "\ncert_file = " + shq(cert) + "\nkey_file = " + shq(key) + "\n[services]\nSSH = \"builtin\"\n"
	if err := os.WriteFile(filepath.Join(r.dir, "porthole.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSysVRestartFromALoginLogMode: the log made when a restart run in a
// login rotates it is root's alone too, as start makes it: it names logins,
// their addresses and commands. The restart in the background writes to $LOG
// (>>"$1") with the login's umask, before its start's umask 077 touch, which
// leaves an existing log as it is.
func TestSysVRestartFromALoginLogMode(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newSysVRig(t, fake, shell, binDir, "FAKE_LOGIN_KILL=500ms", "LOG_MAX=1000")
		r.env = append(r.env, "FAKE_LOGIN="+r.command("restart"))
		if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("start: %v %q", err, out)
		}
		if fi, err := os.Stat(r.log); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("the log made by start: %v, %v; want mode 0600", fi.Mode(), err)
		}
		first := r.eventPids("started", 1)
		if len(first) != 1 {
			t.Fatalf("after start: agents started %v, want one", first)
		}
		if f, err := os.OpenFile(r.log, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			f.Write(bytes.Repeat([]byte("the agent's log\n"), 100)) // over LOG_MAX: restart rotates it
			f.Close()
		}
		syscall.Kill(first[0], syscall.SIGUSR1) // log in; the login runs restart
		if started := r.eventPidsWait("started", 2, 15*time.Second); len(started) != 2 {
			t.Fatalf("restart in a login: agents started %v, want a second one; events %s", started, r.readEvents())
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if log, _ := os.ReadFile(r.log); bytes.Contains(log, []byte("Starting porthole: OK")) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if fi, err := os.Stat(r.log); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("the log made by restart in a login (after rotating the old one to %s.1): mode %v, %v; want 0600, as start makes it",
				filepath.Base(r.log), fi.Mode(), err)
		}
	})
}

// TestSysVConcurrentStartsStartOneAgent: two `start`s at once (a boot's rcS
// and an OTA or watchdog script, two if-up hooks) must leave one agent, named
// by the pid file, which stop then stops. Each start removes the pid file
// and runs start-stop-daemon without anything that makes the check and the
// start one step, so both start an agent and the pid file names only the last
// one. With the real agent, the one that loses the race for data_dir's lock
// exits 1 ten seconds later; if the pid file names that one, the running
// agent is out of the script's reach: status says not running, stop stops
// nothing (at shutdown the agent gets no SIGTERM from rcK), and every later
// start says OK for an agent that exits after 10 s.
func TestSysVConcurrentStartsStartOneAgent(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newSysVRig(t, fake, shell, binDir)
		r.run("status") // writes the rig's /etc/default/porthole
		var wg sync.WaitGroup
		outs := make([]string, 2)
		for i := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				args := strings.Fields(r.command("start"))
				cmd := exec.Command(args[0], args[1:]...)
				cmd.Env = append(slices.Clone(r.env), "PORTHOLE_DEFAULTS="+filepath.Join(r.dir, "default"))
				out, _ := cmd.CombinedOutput()
				outs[i] = string(out)
			}()
		}
		wg.Wait()
		t.Logf("two starts at once: %q", outs)
		started := r.eventPidsWait("started", 2, 2*time.Second)
		if len(started) != 1 {
			t.Errorf("two starts at once started agents %v (pid file: %d), want one", started, r.pidFile())
		}
		r.run("stop")
		for _, pid := range started {
			if testenv.ProcessRunning(pid) {
				t.Errorf("after stop: agent %d still running, out of the script's reach (agents started %v)", pid, started)
			}
		}
	})
}

// TestSysVStaleLock: the lock start, stop, restart and reload take is left by
// a script that was killed (SIGKILL, a login's end); it must not keep the
// service from starting or stopping. It names its holder by pid and start
// time, so a pid another process has now does not hold it either.
func TestSysVStaleLock(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newSysVRig(t, fake, shell, binDir)
		lock := r.pidfile + ".lock"
		os.MkdirAll(filepath.Dir(lock), 0o755)
		for _, holder := range []string{"999999999 1", strconv.Itoa(os.Getpid()) + " 1"} {
			os.Remove(lock)
			if err := os.Symlink(holder, lock); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			out, err := r.run("start")
			if err != nil || !strings.Contains(out, "OK") || time.Since(begin) > 10*time.Second {
				t.Errorf("start with a lock held by %q, gone: %v %q after %v, want OK at once", holder, err, out, time.Since(begin).Round(time.Millisecond))
			}
			if out, err := r.run("stop"); err != nil || !strings.Contains(out, "OK") {
				t.Errorf("stop: %v %q, want OK", err, out)
			}
			if _, err := os.Lstat(lock); err == nil {
				t.Errorf("after stop: %s is left", lock)
			}
		}
	})
}

// lockFunctions writes the script's lock and the functions it calls, as the
// script has them, to dir/funcs.sh, for a test's own script to source.
func lockFunctions(t *testing.T, dir string) {
	t.Helper()
	funcs, err := exec.Command("sed", "-n", `/^nap() {/,/^}/p; /^started_at() {/,/^}/p; /^lock() {/,/^}/p; /^gone() {/,/^}/p; /^reap() {/,/^}/p; /^link() {/,/^}/p; /^unlock() {/,/^}/p`, "sysv/porthole").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "funcs.sh"), funcs, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSysVLockTakeoverRace: three runs and a lock left by a killed one. The
// takeover renamed the lock aside and put back one that was not the dead
// holder's with mv -f: a run slow in it (1 s per mv and rm, as on a loaded
// device) put back the lock of a second run over that of a third, which had
// taken the lock in between, and two runs held it at once. The lock's
// functions run as the script has them, under dash (sh on Debian), whose mv
// and rm are the programs on PATH.
func TestSysVLockTakeoverRace(t *testing.T) {
	dir := t.TempDir()
	lockFunctions(t, dir)
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	for _, tool := range []string{"mv", "rm"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(bin, tool), []byte("#!/bin/sh\n[ -n \"${SLOW:-}\" ] && sleep 1\nexec "+path+" \"$@\"\n"), 0o755)
	}
	log := filepath.Join(dir, "log")
	os.WriteFile(filepath.Join(dir, "run.sh"), []byte(`PIDFILE=`+filepath.Join(dir, "porthole.pid")+` STOP_TIMEOUT=10
. `+filepath.Join(dir, "funcs.sh")+`
lock || exit 1
echo "$1 in" >>`+log+`
sleep 3
echo "$1 out" >>`+log+`
`), 0o644)
	os.Symlink("999999999 1", filepath.Join(dir, "porthole.pid.lock")) // a holder that is gone
	run := func(name string, slow bool) *exec.Cmd {
		c := exec.Command("sh", filepath.Join(dir, "run.sh"), name)
		c.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
		if slow {
			c.Env = append(c.Env, "SLOW=1")
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	b := run("B", true)
	time.Sleep(300 * time.Millisecond)
	a := run("A", false)
	time.Sleep(1500 * time.Millisecond)
	c := run("C", false)
	for _, p := range []*exec.Cmd{a, b, c} {
		p.Wait()
	}
	out, _ := os.ReadFile(log)
	held := 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		switch {
		case strings.HasSuffix(l, " in"):
			if held++; held > 1 {
				t.Errorf("%s took the lock while another run held it:\n%s", strings.TrimSuffix(l, " in"), out)
			}
		case strings.HasSuffix(l, " out"):
			held--
		}
	}
	if strings.Count(string(out), " in") != 3 {
		t.Errorf("not every run took the lock in turn:\n%s", out)
	}
}

// TestSysVLockWaitWallTime: the wait for a lock another run holds counted its
// naps of 0.1 s and left out the time between them (readlink, cat, their
// forks): under load the 20 s of STOP_TIMEOUT=0 took 30 to 51. It must take
// 20 s of wall time however slow those are; here readlink takes 0.2 s, and a
// count of naps would wait 60 s. The lock's functions run as the script has
// them, under dash (sh on Debian), whose readlink is the program on PATH.
func TestSysVLockWaitWallTime(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	lockFunctions(t, dir)
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	readlink, err := exec.LookPath("readlink")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bin, "readlink"), []byte("#!/bin/sh\nsleep 0.2\nexec "+readlink+" \"$@\"\n"), 0o755)
	// The lock's holder is a sleep that outlives the wait.
	os.WriteFile(filepath.Join(dir, "run.sh"), []byte(`PIDFILE=`+filepath.Join(dir, "porthole.pid")+` STOP_TIMEOUT=0
. `+filepath.Join(dir, "funcs.sh")+`
sleep 120 >/dev/null 2>&1 &
holder=$!
ln -s "$holder $(started_at $holder)" "$PIDFILE.lock"
lock
rc=$?
kill $holder
exit $rc
`), 0o644)
	c := exec.Command("sh", filepath.Join(dir, "run.sh"))
	c.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	began := time.Now()
	out, err := c.CombinedOutput()
	took := time.Since(began)
	if err == nil || !strings.Contains(string(out), "FAIL (another run of this script, pid ") || took < 19*time.Second || took > 26*time.Second {
		t.Errorf("lock held by a live run, STOP_TIMEOUT=0: %v %q after %v; want a failure naming it after 20 s", err, out, took.Round(100*time.Millisecond))
	}
}
