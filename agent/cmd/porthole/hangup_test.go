package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// TestConnectHangup: a hangup is how `porthole connect` usually ends when it
// is not stopped by hand: the terminal of a `porthole connect ... &` (as the
// README runs it) is closed, or ssh ends its ProxyCommand. It killed porthole
// connect outright: the device never heard that the streams were gone (the
// service does not tell it when a side leaves, spec §3.8), so the login's
// commands kept running on the device, and the token's lock file stayed.
// It must end as Ctrl-C does: streams reset, exit 0.
func TestConnectHangup(t *testing.T) {
	srv, tun := echoTunnel(t)
	cmd, lines := childPorthole(t, "connect", "--endpoint", srv.URL, "--allow-insecure-websocket",
		"-L", "SSH=127.0.0.1:0", "--token-file", writeToken(t, tun.SourceToken))
	var logged []string
	next := func(what string, re *regexp.Regexp) []string {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("porthole connect ended before %s:\n%s", what, strings.Join(logged, "\n"))
				}
				logged = append(logged, l)
				if m := re.FindStringSubmatch(l); m != nil {
					return m
				}
			case <-timeout:
				t.Fatalf("no %s in 10 s:\n%s", what, strings.Join(logged, "\n"))
			}
		}
	}
	addr := next("listening line", regexp.MustCompile(`msg=listening .*addr=(\S+)`))[1]
	next("connection to the tunnel", regexp.MustCompile(`msg="tunnel services"`))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := c.Read(b); err != nil || string(b) != "ping" {
		t.Fatalf("echo %q, %v", b, err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	for l := range lines {
		logged = append(logged, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("porthole connect after SIGHUP: %v, want exit 0", err)
	}
	if all := strings.Join(logged, "\n"); !strings.Contains(all, "reset the open streams") {
		t.Errorf("the device was not told the streams are gone:\n%s", all)
	}
}

// TestConnectSurvivesLogReaderGone: `porthole connect ... 2>&1 | logger` (or
// | tee, a log service restarted): once the log's reader is gone, the next log
// line is a write to a broken pipe on fd 2. The agent, tunneld, the console
// and the lab catch SIGPIPE for that; porthole connect did not, and Go killed
// it (exit 141) at the next line, its -L ports and every login through them
// gone, the device not told. It must serve on, reconnect, and end on Ctrl-C
// with exit 0.
func TestConnectSurvivesLogReaderGone(t *testing.T) {
	srv, tun := echoTunnel(t)
	cmd, stderr := startChild(t, "connect", "--endpoint", srv.URL, "--allow-insecure-websocket",
		"-L", "SSH=127.0.0.1:0", "--token-file", writeToken(t, tun.SourceToken))
	listening := regexp.MustCompile(`msg=listening .*addr=(\S+)`)
	sc := bufio.NewScanner(stderr)
	addr, up := "", false
	for !up && sc.Scan() {
		if m := listening.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
		up = strings.Contains(sc.Text(), `msg="tunnel services"`)
	}
	if !up || addr == "" {
		t.Fatalf("no listening line or tunnel services: %v", sc.Err())
	}
	stderr.Close() // the log's reader goes away
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	echo := func(what string) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 4)
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
			select {
			case err := <-done:
				t.Fatalf("%s: porthole connect ended once its log's reader had gone: %v", what, err)
			case <-time.After(100 * time.Millisecond):
			}
			t.Fatalf("%s: echo %q, %v", what, b, err)
		}
		return c
	}
	echo("before the tunnel is lost").Close()
	tun.Drop(tunneltest.Source) // logged: "tunnel connection lost, reconnecting"
	// echoed returns a connection that echoed, or nil: until porthole
	// connect has reconnected, a connection is closed at once.
	echoed := func() net.Conn {
		d, err := net.Dial("tcp", addr)
		if err != nil {
			return nil
		}
		d.SetDeadline(time.Now().Add(time.Second))
		b := make([]byte, 4)
		if _, err := d.Write([]byte("ping")); err == nil {
			if _, err := io.ReadFull(d, b); err == nil && string(b) == "ping" {
				d.SetDeadline(time.Time{})
				return d
			}
		}
		d.Close()
		return nil
	}
	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); c == nil; {
		select {
		case err := <-done:
			t.Fatalf("porthole connect ended once its log's reader had gone: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no echo through the tunnel 10 s after it was lost")
		}
		if c = echoed(); c == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	defer c.Close()
	cmd.Process.Signal(syscall.SIGINT) // with a connection open: logged, its stream reset
	select {
	case <-done:
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("after SIGINT: %v, want exit 0", cmd.ProcessState)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10 s after SIGINT")
	}
}

// TestConnectStdioEndsWithStdout: with SIGPIPE caught, a write to a stdout
// nobody reads any more (ssh, whose ProxyCommand it is, gone; the end of a
// pipeline) fails with EPIPE instead of killing porthole connect --stdio: it
// must still end, even while its stdin stays open, not go on carrying a
// connection whose output goes nowhere.
func TestConnectStdioEndsWithStdout(t *testing.T) {
	c := startStdioChild(t)
	c.outR.Close()
	c.inW.Write([]byte("pong")) // echoed to a stdout nobody reads; stdin stays open
	select {
	case <-c.done:
		if ws := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
			t.Errorf("porthole connect --stdio killed by %v", ws.Signal())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("porthole connect --stdio still running 10 s after its stdout's reader went away")
	}
}

// TestConnectStdioStoppedMidConnection: a hangup is how ssh ends its
// ProxyCommand, exit 0; but stopped by SIGTERM or Ctrl-C while its connection
// is open, porthole connect --stdio has cut what it carried short, and a script
// that runs it (porthole connect --stdio SVC <in >out) must not read success.
func TestConnectStdioStoppedMidConnection(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			c := startStdioChild(t)
			c.cmd.Process.Signal(sig)
			select {
			case <-c.done:
			case <-time.After(10 * time.Second):
				t.Fatalf("porthole connect --stdio still running 10 s after %v", sig)
			}
			code, stderr := c.cmd.ProcessState.ExitCode(), c.stderr.String()
			switch {
			case sig == syscall.SIGHUP && code != exitOK:
				t.Errorf("after a hangup: exit %d, want 0; stderr:\n%s", code, stderr)
			case sig != syscall.SIGHUP && (code != exitRuntime || !strings.Contains(stderr, "porthole connect: stopped with the connection open")):
				t.Errorf("after %v: exit %d, want %d and a line that says it was stopped with the connection open; stderr:\n%s", sig, code, exitRuntime, stderr)
			}
		})
	}
}

// TestConnectStdioStoppedBeforeConnecting: stopped by hand while it has not
// connected (a wrong endpoint, a device not there yet), porthole connect
// --stdio carried nothing: exit 2 as well, saying so, not that anything was
// cut.
func TestConnectStdioStoppedBeforeConnecting(t *testing.T) {
	// Only the environment echoTunnel sets: a cache and home of the
	// test's own, none of the AWSIOT_TUNNEL_ variables.
	echoTunnel(t)
	l, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cmd, lines := childPorthole(t, "connect", "--endpoint", "ws://"+l.Addr().String(), "--allow-insecure-websocket",
		"--stdio", "SSH", "--token-file", writeToken(t, strings.Repeat("t", 40)), "-v")
	var logged []string
	for l := range lines {
		logged = append(logged, l)
		if strings.Contains(l, "msg=connecting") {
			cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	cmd.Wait()
	if code, all := cmd.ProcessState.ExitCode(), strings.Join(logged, "\n"); code != exitRuntime ||
		!strings.Contains(all, "porthole connect: stopped before the connection opened: nothing was carried") {
		t.Errorf("exit %d, want %d and a line that says nothing was carried:\n%s", code, exitRuntime, all)
	}
}

// stdioChild is `porthole connect --stdio SSH` run as a process of its own on
// an echo tunnel, with a round trip done.
type stdioChild struct {
	cmd    *exec.Cmd
	inW    *os.File
	outR   *os.File
	stderr *testlog.Lines // read once done is closed
	done   chan struct{}
}

func startStdioChild(t *testing.T) *stdioChild {
	t.Helper()
	srv, tun := echoTunnel(t)
	c := &stdioChild{stderr: new(testlog.Lines), done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$", "--", "connect", "--endpoint", srv.URL, "--allow-insecure-websocket",
		"--stdio", "SSH", "--token-file", writeToken(t, tun.SourceToken))
	c.cmd.Env = append(os.Environ(), childEnv+"=1")
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c.inW, c.outR = inW, outR
	c.cmd.Stdin, c.cmd.Stdout, c.cmd.Stderr = inR, outW, c.stderr
	err = startHangupDefault(c.cmd)
	inR.Close()
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inW.Close(); outR.Close() })
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.cmd.Process.Kill(); <-c.done })
	inW.Write([]byte("ping"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(outR, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo %q, %v", b, err)
	}
	return c
}
