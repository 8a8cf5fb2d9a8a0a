package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// The agent as process 1 of its PID namespace (a container's entrypoint
// without --init, an initramfs's init), started by unshare(1): the jobs its
// sessions leave in the background, orphans that the kernel gives to process
// 1, are waited for and leave no zombies (each kept its pid until the
// container's pids limit refused every fork); the sessions' own exit statuses
// still reach the client; SIGHUP to process 1 reloads the agent, SIGTERM stops
// it, and process 1 exits as the agent did.
func TestAgentAsProcess1ReapsOrphans(t *testing.T) {
	unshare := needUnshare(t)
	dir := t.TempDir()
	f := writeDevice(t, dir)
	// A password, not a key: authorized_keys below /tmp (1777) is refused.
	hash, err := bcrypt.GenerateFromPassword([]byte("process-1"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b, _ := os.ReadFile(f.path)
	os.WriteFile(f.path, append(b, fmt.Sprintf("[ssh]\nlisten = %q\npassword_hashes = { root = %q }\n", addr, hash)...), 0o600)

	// systemd-nspawn takes READY=1 from its container's process 1 alone.
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	if raw, err := notify.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1) })
	}
	cmd := exec.Command(unshare, "--pid", "--fork", "--kill-child", "--mount-proc", os.Args[0], "-test.run=^$", "--", "agent", "-c", f.path)
	cmd.Env = append(os.Environ(), childEnv+"=1", "NOTIFY_SOCKET="+filepath.Join(dir, "notify"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() }) // unshare's namespace ends with it
	var logged []string
	waitLog := func(want string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("the agent ended before it logged %q:\n%s", want, strings.Join(logged, "\n"))
				}
				logged = append(logged, line)
				if strings.Contains(line, want) {
					return
				}
			case <-timeout:
				t.Fatalf("the agent never logged %q:\n%s", want, strings.Join(logged, "\n"))
			}
		}
	}
	waitLog("porthole agent started")

	var client *gossh.Client
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		client, err = gossh.Dial("tcp", addr, &gossh.ClientConfig{
			User:            "root",
			Auth:            []gossh.AuthMethod{gossh.Password("process-1")},
			HostKeyCallback: gossh.InsecureIgnoreHostKey(),
			Timeout:         5 * time.Second,
		})
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		cmd.Process.Kill()
		for line := range lines {
			logged = append(logged, line)
		}
		t.Fatalf("ssh to the agent as process 1: %v\n%s", err, strings.Join(logged, "\n"))
	}
	defer client.Close()
	run := func(command string) (string, int) {
		t.Helper()
		s, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out, err := s.Output(command)
		if exit, ok := err.(*gossh.ExitError); ok {
			return string(out), exit.ExitStatus()
		}
		if err != nil {
			t.Fatalf("%s: %v", command, err)
		}
		return string(out), 0
	}
	// Three jobs left running by shells that exit: orphans, given to process 1.
	run(`for i in 1 2 3; do sh -c 'sleep 0.2 </dev/null >/dev/null 2>&1 &'; done`)
	// Each process of the namespace: "pid (comm) state ppid".
	list := `for f in /proc/[0-9]*/stat; do read -r l < $f && echo "$l"; done 2>/dev/null`
	var sleeps []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := run(list)
		sleeps = sleeps[:0]
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "(sleep)") {
				sleeps = append(sleeps, line)
			}
		}
		if len(sleeps) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(sleeps) > 0 {
		t.Errorf("the background jobs are still there 10 s after they ended (Z: zombies no one waits for):\n%s", strings.Join(sleeps, "\n"))
	}
	for i := range 5 {
		if _, code := run("sleep 0.05; exit " + strconv.Itoa(7+i)); code != 7+i {
			t.Errorf("exit %d came back as %d", 7+i, code)
		}
	}

	// Process 1 in the namespace is unshare's child.
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	init, err2 := strconv.Atoi(strings.TrimSpace(string(children)))
	if err != nil || err2 != nil {
		t.Fatalf("process 1 of the namespace: %q %v %v", children, err, err2)
	}
	notify.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg, oob := make([]byte, 64), make([]byte, 64)
	n, oobn, _, _, err := notify.ReadMsgUnix(msg, oob)
	if err != nil {
		t.Fatalf("no READY=1 on NOTIFY_SOCKET: %v", err)
	}
	if cmsgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err != nil || len(cmsgs) == 0 {
		t.Errorf("READY=1 came without credentials: %v", err)
	} else if cred, err := syscall.ParseUnixCredentials(&cmsgs[0]); err != nil || int(cred.Pid) != init || string(msg[:n]) != "READY=1" {
		t.Errorf("%q came from pid %v (%v), not from process 1 (pid %d here)", msg[:n], cred, err, init)
	}
	notify.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, _, _, err := notify.ReadMsgUnix(msg, oob); err == nil {
		t.Errorf("a second %q on NOTIFY_SOCKET: the agent's own", msg[:n])
	}
	syscall.Kill(init, syscall.SIGHUP)
	waitLog("reloaded")
	syscall.Kill(init, syscall.SIGTERM)
	waitLog("agent stopped")
	for range lines {
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("process 1 after the agent's clean stop: %v, want exit 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("process 1 did not exit after the agent stopped")
	}
}

// Process 1 exits as the agent did: 1 for a config it cannot use.
func TestAgentAsProcess1ExitsAsTheAgent(t *testing.T) {
	unshare := needUnshare(t)
	missing := filepath.Join(t.TempDir(), "missing.toml")
	if code, _, _ := runCmd(t, nil, "agent", "-c", missing); code != exitUsage {
		t.Fatalf("the agent with a missing config: exit %d, want %d", code, exitUsage)
	}
	cmd := exec.Command(unshare, "--pid", "--fork", "--kill-child", "--mount-proc", os.Args[0], "-test.run=^$", "--", "agent", "-c", missing)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != exitUsage {
		t.Errorf("process 1 with a missing config: exit %d (%v), want %d:\n%s", code, err, exitUsage, out)
	}
}

// A reload right after process 1's READY=1 reloads the agent. systemd holds a
// reload back until READY=1 and then sends it: process 1 said READY=1 before it
// had started the agent, and passed the SIGHUP on to a child still starting,
// before its signal.Notify, which Go's default for SIGHUP ended (exit 129, and
// the container with it).
func TestAgentAsProcess1ReloadRightAfterReady(t *testing.T) { testProcess1Reload(t, false) }

// A SIGHUP to process 1 as it has just started the agent (from an init system
// that does not wait for READY=1) is held until the agent catches it, and
// reloads it.
func TestAgentAsProcess1ReloadWhileTheAgentStarts(t *testing.T) { testProcess1Reload(t, true) }

func testProcess1Reload(t *testing.T, early bool) {
	unshare := needUnshare(t)
	dir := t.TempDir()
	f := writeDevice(t, dir)
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cmd := exec.Command(unshare, "--pid", "--fork", "--kill-child", "--mount-proc", os.Args[0], "-test.run=^$", "--", "agent", "-c", f.path)
	cmd.Env = append(os.Environ(), childEnv+"=1", "NOTIFY_SOCKET="+filepath.Join(dir, "notify"))
	stderr := new(testlog.Lines)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { cmd.Process.Kill(); <-exited }()
	children := func(pid int) (c []string) { // of every thread: a Go program forks from any
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			c = append(c, strings.Fields(string(b))...)
		}
		return c
	}
	var init int
	if early {
		// The agent started, but likely still in the Go runtime's start:
		// process 1 holds the SIGHUP until the agent is ready for it.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
			if c := children(cmd.Process.Pid); len(c) == 1 {
				init, _ = strconv.Atoi(c[0])
				if len(children(init)) == 1 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("process 1 did not start the agent")
			}
		}
		syscall.Kill(init, syscall.SIGHUP)
	}
	notify.SetReadDeadline(time.Now().Add(20 * time.Second))
	msg := make([]byte, 64)
	if n, err := notify.Read(msg); err != nil || string(msg[:n]) != "READY=1" {
		t.Fatalf("READY=1: %q %v\n%s", msg[:n], err, stderr.String())
	}
	if !early {
		c := children(cmd.Process.Pid)
		if len(c) != 1 {
			t.Fatalf("process 1 of the namespace: %q", c)
		}
		init, _ = strconv.Atoi(c[0])
		syscall.Kill(init, syscall.SIGHUP)
	}
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(stderr.String(), "reloaded"); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("a reload right after READY=1 ended the agent as process 1 (%v), want a reload:\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged 20 s after the SIGHUP:\n%s", stderr.String())
		}
	}
}

// Process 1 takes READY=1 from the agent's pid alone: anyone in its network
// namespace (a container sharing the host's) may send to its abstract socket,
// and a stranger's datagram was taken as the agent's, which released the signals
// held for a child still starting.
func TestAwaitReadyHearsTheAgentAlone(t *testing.T) {
	send := func(name, msg string) {
		t.Helper()
		c, err := net.Dial("unixgram", name)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	// The agent is another process here: this one is the stranger.
	fd, name := readySocket()
	if !strings.HasPrefix(name, "@") {
		t.Fatalf("readySocket: %d %q", fd, name)
	}
	ready := make(chan struct{})
	go awaitReady(fd, os.Getppid(), ready)
	send(name, "READY=1")
	select {
	case <-ready:
		t.Fatal("a stranger's READY=1 was taken as the agent's")
	case <-time.After(300 * time.Millisecond):
	}
	syscall.Shutdown(fd, syscall.SHUT_RD) // no datagram, no credentials: it gives up
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("awaitReady did not return once its socket was shut down")
	}
	// This process as the agent.
	fd, name = readySocket()
	ready = make(chan struct{})
	go awaitReady(fd, os.Getpid(), ready)
	send(name, "READY=1")
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's READY=1 was not heard")
	}
}

// needUnshare returns unshare(1)'s path, for a PID namespace: it needs root
// (CI runs as root).
func needUnshare(t *testing.T) string {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err == nil && os.Geteuid() != 0 {
		err = fmt.Errorf("a PID namespace needs root here")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("unshare(1) as root is needed (CI runs as root): %v", err)
		}
		t.Skipf("unshare(1) as root is needed: %v", err)
	}
	return unshare
}
