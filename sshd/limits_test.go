package sshd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	gossh "golang.org/x/crypto/ssh"
)

func TestMaxSessions(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.MaxSessions = 1 })
	c := e.login("root")
	s1, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	in, _ := s1.StdinPipe()
	if err := s1.Start("cat"); err != nil {
		t.Fatal(err)
	}
	if s2, err := c.NewSession(); err == nil {
		s2.Close()
		t.Fatal("second session opened with MaxSessions 1")
	}
	in.Close()
	if err := s1.Wait(); err != nil {
		t.Fatal(err)
	}
	// The slot is free again once the first session is gone.
	waitFor(t, "session slot", func() bool {
		s, err := c.NewSession()
		if err != nil {
			return false
		}
		s.Close()
		return true
	})
}

func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.IdleTimeout = time.Second })
	c := e.login("root")
	// Activity keeps the connection open past the timeout.
	for range 4 {
		time.Sleep(300 * time.Millisecond)
		if _, _, code := run(t, c, "true", ""); code != 0 {
			t.Fatal("command failed")
		}
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
		if d := time.Since(start); d < 700*time.Millisecond {
			t.Errorf("closed after %v idle, want about 1s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not closed")
	}
}

func TestMaxSessionTime(t *testing.T) {
	// The limit runs from the accept; 2 s leaves room for a login under emulation.
	const limit = 2 * time.Second
	e := newEnv(t, func(_ *testEnv, s *Server) { s.MaxSessionTime = limit })
	start := time.Now()
	c := e.login("root")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run("sleep 30")
	if err == nil {
		t.Fatal("sleep 30 finished despite MaxSessionTime")
	}
	if d := time.Since(start); d > limit+5*time.Second {
		t.Errorf("connection closed after %v, want about %v", d, limit)
	}
}

// tunnelConn is a net.Conn as a tunnel might hand over: no deadlines and
// an address that is not IP.
type tunnelConn struct{ net.Conn }

type tunnelAddr string

func (a tunnelAddr) Network() string { return "tunnel" }
func (a tunnelAddr) String() string  { return string(a) }

func (tunnelConn) SetDeadline(time.Time) error      { return errors.New("no deadlines") }
func (tunnelConn) SetReadDeadline(time.Time) error  { return errors.New("no deadlines") }
func (tunnelConn) SetWriteDeadline(time.Time) error { return errors.New("no deadlines") }
func (tunnelConn) RemoteAddr() net.Addr             { return tunnelAddr("tunnel:stream-7") }

// tcpPair returns both ends of a loopback TCP connection (net.Pipe has no
// buffering, and both SSH sides write their version line at once).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

func TestServeConn(t *testing.T) {
	e := newEnv(t, nil)
	server, client := tcpPair(t)
	served := make(chan error, 1)
	go func() { served <- e.srv.ServeConn(tunnelConn{server}) }()
	cc, chans, reqs, err := gossh.NewClientConn(client, "tunnel", e.clientConfig("root", gossh.PublicKeys(e.key)))
	if err != nil {
		t.Fatal(err)
	}
	c := gossh.NewClient(cc, chans, reqs)
	out, _, code := run(t, c, "echo via tunnel", "")
	if out != "via tunnel\n" || code != 0 {
		t.Errorf("Run over ServeConn = %q, %d", out, code)
	}
	c.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeConn = %v, want nil after the client left", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn did not return")
	}
	// A second connection through the same stream address: its lines and
	// events carry a number of their own, so that the two can be told apart.
	server, client = tcpPair(t)
	go func() { served <- e.srv.ServeConn(tunnelConn{server}) }()
	cc, chans, reqs, err = gossh.NewClientConn(client, "tunnel", e.clientConfig("root", gossh.PublicKeys(e.key)))
	if err != nil {
		t.Fatal(err)
	}
	gossh.NewClient(cc, chans, reqs).Close()
	<-served
	var remotes []string
	for _, ev := range e.eventsOf(EventLoginSuccess) {
		remotes = append(remotes, ev.Remote)
	}
	if len(remotes) != 2 || remotes[0] == remotes[1] || !strings.HasPrefix(remotes[0], "tunnel:stream-7#") || !strings.HasPrefix(remotes[1], "tunnel:stream-7#") {
		t.Errorf("login events' remote labels %q, want two different ones, each tunnel:stream-7#N", remotes)
	}
	// from= can never match a connection without an IP address.
	e.writeAuthorizedKeys("root", authorizedLine(`from="*"`, e.key.PublicKey()))
	server, client = tcpPair(t)
	go func() { served <- e.srv.ServeConn(tunnelConn{server}) }()
	if _, _, _, err := gossh.NewClientConn(client, "tunnel", e.clientConfig("root", gossh.PublicKeys(e.key))); err == nil {
		t.Error(`from="*" matched a tunnel stream`)
	}
	client.Close()
	<-served
}

func TestCloseEndsSessions(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := s.StdoutPipe()
	pidFile := filepath.Join(e.dir, "pid")
	if err := s.Start("echo $$ > " + pidFile + "; echo started; sleep 30"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	io.ReadFull(out, buf)
	e.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after Close: %v", err)
	}
	pid, _ := os.ReadFile(pidFile)
	if _, err := os.Stat("/proc/" + strings.TrimSpace(string(pid))); err == nil {
		t.Errorf("session process %s still running after Close", pid)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := e.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Close = %v, want ErrServerClosed", err)
	}
	a, b := tcpPair(t)
	defer b.Close()
	if err := e.srv.ServeConn(a); !errors.Is(err, ErrServerClosed) {
		t.Errorf("ServeConn after Close = %v, want ErrServerClosed", err)
	}
}

func TestShutdownWaits(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with an open connection = %v, want deadline exceeded", err)
	}
	// The open connection still works, new ones are refused.
	if out, _, _ := run(t, c, "echo alive", ""); out != "alive\n" {
		t.Errorf("open connection after Shutdown began: %q", out)
	}
	// Shutdown closed the listener: the TCP connect itself is refused. Its
	// errno is not checked, as qemu-user passes the host's SO_ERROR through
	// (needRefusedErrno); a time-out is no refusal.
	var op *net.OpError
	if c, err := e.dial("root", gossh.PublicKeys(e.key)); err == nil {
		c.Close()
		t.Error("new connection accepted during Shutdown")
	} else if !errors.As(err, &op) || op.Op != "dial" || op.Timeout() {
		t.Errorf("new connection during Shutdown: %v, want the TCP connect refused", err)
	}
	c.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := e.srv.Shutdown(ctx2); err != nil {
		t.Errorf("Shutdown after the client left = %v", err)
	}
}

// TestBackgroundHolderDoesNotHang: a command that exits while a background
// child still holds its output keeps the session open, like OpenSSH, but
// once the client closes the session nothing on the server may hang.
func TestBackgroundHolderDoesNotHang(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := s.StdoutPipe()
	if err := s.Start("sleep 3 & echo $$"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSuffix(line, "\n"))
	if err != nil || perr != nil {
		t.Fatalf("read %q, %v", line, err)
	}
	// Until the shell has exited (a zombie, or reaped): only sleep still
	// holds the output. A fixed 300 ms could end before on a slow machine,
	// and the client then closed a session whose command still ran.
	waitFor(t, "the shell's exit", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		i := strings.LastIndexByte(string(b), ')')
		return err != nil || i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
	})
	s.Close()
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a background output holder: %v", err)
	}
}

// TestBackgroundStdinHolderEndsSession: the command exits, leaving a
// background job that holds its stdin and reads none of it, after the client
// sent more than a pipe (or a raw terminal's queue) holds. As OpenSSH's sshd
// (session_exit_message: chan_write_failed), the program's stdin is closed
// when it exits: once the client has gone, none of the connection's
// goroutines may be left blocked writing to the job's stdin, holding the
// channel and its unread data for as long as the job runs.
func TestBackgroundStdinHolderEndsSession(t *testing.T) {
	for _, withPTY := range []bool{false, true} {
		t.Run(map[bool]string{false: "pipes", true: "pty"}[withPTY], func(t *testing.T) {
			e := newEnv(t, nil)
			idle := goleak.IgnoreCurrent()
			c := e.login("root")
			h := stdinHolder{t: t, dir: e.dir, pty: withPTY}
			if err := h.run(c, true, 1<<20); err != nil {
				t.Fatal(err)
			}
			c.Close()
			deadline := time.Now().Add(10 * time.Second)
			for {
				err := goleak.Find(idle) // retries for a second or two itself
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("goroutines left after the connection ended: %v", err)
				}
			}
		})
	}
}

// TestBackgroundStdinHolderMemory: five connections whose command exits,
// leaving a background job that holds its stdin and reads none of it, after
// the client sent 2 MiB (a window) each. Once they have ended, the server's
// heap must come back to what five whose job does not hold stdin leave: the
// client's unread data stayed as long as the jobs ran.
func TestBackgroundStdinHolderMemory(t *testing.T) {
	e := newEnv(t, nil)
	h := stdinHolder{t: t, dir: e.dir}
	connections := func(holdStdin bool) {
		for range 5 {
			// Not login: its cleanup would keep the client's side until
			// the test ends.
			c, err := e.dial("root", gossh.PublicKeys(e.key))
			if err != nil {
				t.Fatal(err)
			}
			err = h.run(c, holdStdin, 2<<20)
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "the connections to end", func() bool {
			e.srv.mu.Lock()
			defer e.srv.mu.Unlock()
			return len(e.srv.conns) == 0 && e.srv.sessions == 0
		})
	}
	heap := func() int64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapInuse)
	}
	connections(false) // warms up pools and buffers
	connections(false)
	base := heap()
	connections(true)
	// The connections' goroutines end soon after them: polled, for 10 s at
	// most. Held, the five hold about 10 MiB.
	const slack = 4 << 20
	deadline := time.Now().Add(10 * time.Second)
	held := heap()
	for ; held-base > slack; held = heap() {
		if time.Now().After(deadline) {
			t.Fatalf("5 ended connections whose background jobs hold their stdin still hold %d KiB more heap than 5 whose jobs do not (%d KiB, want at most %d KiB more)", (held-base)>>10, held>>10, slack>>10)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("heap: %d KiB after 5 connections whose jobs held their stdin, %d KiB after 5 whose jobs did not", held>>10, base>>10)
}

// TestInputDroppedAfterExit: the command exits while a background job holds
// its stdin, unread, and its output, which keeps the session open as long as
// the job runs. What the client still sends is read and dropped, as OpenSSH's
// sshd drops it once the program has exited (channel_input_data on a channel
// whose output has failed): left unread, a window of it (2 MiB) stayed in
// memory and the client could send no more. The exit status still comes once
// the output ends.
func TestInputDroppedAfterExit(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	w, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(e.dir, "pid")
	if err := s.Start(`exec 3<&0; sleep 600 <&3 & echo $! >` + pidFile + `; echo started; exit 4`); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "started\n" {
		t.Fatalf("read %q, %v", buf, err)
	}
	b, _ := os.ReadFile(pidFile)
	job, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file: %q", b)
	}
	t.Cleanup(func() { syscall.Kill(job, syscall.SIGKILL) })
	sent := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, 8<<20)) // four windows
		sent <- err
	}()
	select {
	case err := <-sent:
		if err != nil {
			t.Fatalf("sending input: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("8 MiB of input not taken in 10 s while the exited command's job holds its stdin and output")
	}
	syscall.Kill(job, syscall.SIGKILL) // the output ends
	var ee *gossh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 4 {
		t.Fatalf("Wait = %v, want exit status 4", err)
	}
}

// stdinHolder runs sessions whose command starts a background job (sleep)
// that ignores SIGHUP and holds the command's stdin without reading it, or
// does not hold it, and exits with status 3 once the client has sent its
// input. The jobs are killed, by pid, when the test ends.
type stdinHolder struct {
	t   *testing.T
	dir string
	pty bool // the session has a pty, in raw mode
	n   int  // sessions run
}

// run runs one session on c that sends size bytes of input.
func (h *stdinHolder) run(c *gossh.Client, holdStdin bool, size int) error {
	h.n++
	pid, sent := filepath.Join(h.dir, fmt.Sprint("pid", h.n)), filepath.Join(h.dir, fmt.Sprint("sent", h.n))
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	cmd := ""
	if h.pty {
		if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
			return err
		}
		// A raw terminal's input fills and then blocks its writer; a
		// canonical one drops what does not fit a line.
		cmd = "stty raw -echo; "
	}
	in := "</dev/null"
	if holdStdin {
		in = "<&3"
	}
	cmd += `trap "" HUP; exec 3<&0; sleep 600 ` + in + ` >/dev/null 2>&1 & echo $! >` + pid +
		`; until [ -e ` + sent + ` ]; do sleep 0.01; done; exit 3`
	w, err := s.StdinPipe()
	if err != nil {
		return err
	}
	if err := s.Start(cmd); err != nil {
		return err
	}
	defer os.WriteFile(sent, nil, 0o644) // the command ends on a failure too
	h.t.Cleanup(func() {
		if b, err := os.ReadFile(pid); err == nil {
			if job, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(job, syscall.SIGKILL)
			}
		}
	})
	// All of it fits the channel's window: Write returns once it is sent.
	if _, err := w.Write(make([]byte, size)); err != nil {
		return fmt.Errorf("sending input: %w", err)
	}
	if err := os.WriteFile(sent, nil, 0o644); err != nil {
		return err
	}
	var ee *gossh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 3 {
		return fmt.Errorf("Wait = %v, want exit status 3", err)
	}
	if b, _ := os.ReadFile(pid); strings.TrimSpace(string(b)) == "" {
		return errors.New("the background job did not start")
	}
	return nil
}

// TestHangupIgnoredIsLeftRunning: a command that ignores SIGHUP (nohup, a job
// that must outlive a dropped tunnel) is never killed, for pty and plain
// sessions alike, as OpenSSH's sshd leaves it: leaveDelay after its client
// went away the session ends without it, so the connection, the session's
// slot and Shutdown do not wait for it, and the session-end record says so.
func TestHangupIgnoredIsLeftRunning(t *testing.T) {
	for _, withPTY := range []bool{false, true} {
		t.Run(map[bool]string{false: "pipes", true: "pty"}[withPTY], func(t *testing.T) {
			e, pid := hungUp(t, withPTY, `trap "" HUP`, `while :; do sleep 0.1; done`, nil)
			if err := syscall.Kill(pid, 0); err != nil {
				t.Errorf("the program that ignored the hangup did not survive it: %v", err)
			}
			ends := e.eventsOf(EventSessionEnd)
			if len(ends) != 1 || ends[0].ExitStatus != -1 || !strings.Contains(ends[0].Reason, "left running") {
				t.Errorf("session-end events %+v, want one saying the program was left running", ends)
			}
		})
	}
}

// hungUp runs before, then "echo started", then after, as root's command in
// a session with a pty or without; once "started" is read and ready (if not
// nil) has returned, the client goes away and the server is shut down (10 s
// at most). It returns the program's pid, whose process group is killed at
// the test's end.
func hungUp(t *testing.T, withPTY bool, before, after string, ready func(pid int)) (*testEnv, int) {
	e := newEnv(t, nil)
	c := e.login("root")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if withPTY {
		if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := s.StdoutPipe()
	pidFile := filepath.Join(e.dir, "pid")
	if err := s.Start(before + `; echo $$ > ` + pidFile + `; echo started; ` + after); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(out, make([]byte, 7)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file: %q", b)
	}
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	if ready != nil {
		ready(pid)
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	return e, pid
}

// A job run with nohup finishes after its client has gone: the hangup does
// not reach it and nothing stronger follows.
func TestHangupSparesNohup(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	started, done := filepath.Join(e.dir, "started"), filepath.Join(e.dir, "done")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(fmt.Sprintf("exec nohup sh -c 'touch %s; sleep 3; touch %s' >/dev/null 2>&1", started, done)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job to start", func() bool { _, err := os.Stat(started); return err == nil })
	c.Close() // the tunnel drops
	waitFor(t, "the job to finish", func() bool { _, err := os.Stat(done); return err == nil })
}

// TestFailureLimiterForgetsExpiredSources: a long-running agent gives each
// tunnel its own source label, so every tunnel that saw a failed login (an
// operator's wrong key, a connection that gave up) left an entry that was only
// dropped once maxTrackedSources of them had piled up: months of dead entries
// (up to about 2 MiB at 10 failures each) on a router. Failures older than the
// window count for nothing; the next failure after a window must let them go.
func TestFailureLimiterForgetsExpiredSources(t *testing.T) {
	const window = time.Minute
	l := newFailureLimiter(10, window)
	now := time.Unix(1000, 0)
	for i := range 500 { // one tunnel a minute or so, each with a failed login
		now = now.Add(2 * window)
		l.fail(fmt.Sprintf("tunnel:%08x/SSH", i), now)
	}
	l.mu.Lock()
	n := len(l.hits)
	l.mu.Unlock()
	if n > 2 {
		t.Fatalf("limiter tracks %d sources after 500 failures, each from a new source %v after the last; want the expired ones dropped (at most 2)", n, 2*window)
	}
}

// TestHangupReachesStoppedProgram: the client goes away while the session's
// program is stopped (SIGSTOP from another login, a job-control stop). A
// dropped modem line, or OpenSSH closing a pty, sends the session leader
// SIGCONT with the SIGHUP, so the hangup takes effect; a SIGHUP alone stays
// pending in a stopped process for ever, and the program is "left running"
// (stopped) with a record that says it ignored the hangup.
func TestHangupReachesStoppedProgram(t *testing.T) {
	for _, withPTY := range []bool{false, true} {
		t.Run(map[bool]string{false: "pipes", true: "pty"}[withPTY], func(t *testing.T) { hangupStopped(t, withPTY) })
	}
}

func hangupStopped(t *testing.T, withPTY bool) {
	e, pid := hungUp(t, withPTY, `:`, `kill -STOP $$; echo continued`, func(pid int) {
		waitFor(t, "the program to stop", func() bool {
			st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			return strings.Contains(string(st), ") T ")
		})
	})
	time.Sleep(100 * time.Millisecond)
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
		t.Errorf("the stopped program is left behind, still stopped, its SIGHUP pending: %s", st)
	}
	if ends := e.eventsOf(EventSessionEnd); len(ends) == 1 && strings.Contains(ends[0].Reason, "ignored the hangup") {
		t.Errorf("session-end record %q: the program did not ignore the hangup, it was stopped", ends[0].Reason)
	}
}

// TestForwardFailedLogRateLimited: a client that opens channel after channel
// to a closed port, or asks again and again for a remote forward whose listen
// fails, gets one "forward failed" line per refusalLogInterval (local and
// remote together), not one per channel: it would fill a router's small log.
// The next line says how many were held back, and every failure keeps its
// event.
func TestForwardFailedLogRateLimited(t *testing.T) {
	clock := newTestClock()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	inUse := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	e := newEnv(t, func(e *testEnv, s *Server) {
		allowRemoteForward(e, s)
		s.now = clock.now
		s.dial = func(context.Context, string, string) (net.Conn, error) { return nil, refused }
		s.listen = func(string, string) (net.Listener, error) { return nil, inUse }
	})
	c := e.login("root")
	dialClosed := func() {
		t.Helper()
		if fc, err := c.Dial("tcp", "127.0.0.1:9"); err == nil {
			fc.Close()
			t.Fatal("forward to a closed port opened")
		}
	}
	const burst = 50
	for range burst {
		dialClosed()
	}
	for range burst {
		if l, err := c.Listen("tcp", "127.0.0.1:8080"); err == nil {
			l.Close()
			t.Fatal("remote forward whose listen fails granted")
		}
	}
	lines := func() []string { return e.logs.logged("forward failed") }
	if got := lines(); len(got) != 1 || !strings.Contains(got[0], `msg="forward failed"`) || strings.Contains(got[0], "not_logged_since_last") {
		t.Fatalf("after %d failed local and %d failed remote forwards, %d log lines, the first %q; want the first local one only", burst, burst, len(got), got[:min(len(got), 2)])
	}
	clock.advance(refusalLogInterval)
	dialClosed()
	want := fmt.Sprintf("not_logged_since_last=%d", 2*burst-1)
	if got := lines(); len(got) != 2 || !strings.Contains(got[1], `msg="forward failed"`) || !strings.Contains(got[1], want) {
		t.Errorf("a failed forward once %s passed: log lines %q; want a second line with %s", refusalLogInterval, got, want)
	}
	evs := e.eventsOf(EventForward)
	n := 0
	for _, ev := range evs {
		if !ev.Allowed && (strings.HasPrefix(ev.Reason, "connect failed: ") || strings.HasPrefix(ev.Reason, "listen failed: ")) {
			n++
		}
	}
	if n != 2*burst+1 || len(evs) != n {
		t.Errorf("%d forward events, %d of them failures; want one per failed forward, %d", len(evs), n, 2*burst+1)
	}
}

// TestForwardRefusedLogRateLimited: the "forward refused" line comes at most
// once every refusalLogInterval on a connection, as forwardFailed's: a client opening tun
// channel after channel (ssh -w), asking for X11 or a remote forward (ssh -R,
// off here) again and again logged a line each. Every refusal keeps its
// event, a port beyond 65535 too.
func TestForwardRefusedLogRateLimited(t *testing.T) {
	clock := newTestClock()
	e := newEnv(t, func(e *testEnv, s *Server) { s.now = clock.now })
	c := e.login("root")
	const burst = 50
	tun := func() {
		t.Helper()
		if ch, _, err := c.OpenChannel("tun@openssh.com", gossh.Marshal(struct{ Mode, Unit uint32 }{1, 0x7fffffff})); err == nil {
			ch.Close()
			t.Fatal("tun channel opened")
		}
	}
	remote := func(port uint32) {
		t.Helper()
		if ok, _, err := c.SendRequest("tcpip-forward", true, gossh.Marshal(tcpipForward{BindAddr: "localhost", BindPort: port})); ok || err != nil {
			t.Fatalf("tcpip-forward to port %d: %v, %v; want it refused", port, ok, err)
		}
	}
	for i := range burst {
		tun()
		remote(20000 + uint32(i))
	}
	remote(1 << 16)
	lines := func() []string { return e.logs.logged("forward refused") }
	if got := lines(); len(got) != 1 || strings.Contains(got[0], "not_logged_since_last") {
		t.Fatalf("after %d tun channels and %d remote forwards refused, %d log lines, the first %q; want one", burst, burst+1, len(got), got[:min(len(got), 2)])
	}
	clock.advance(refusalLogInterval)
	tun()
	want := fmt.Sprintf("not_logged_since_last=%d", 2*burst)
	if got := lines(); len(got) != 2 || !strings.Contains(got[1], want) {
		t.Errorf("a refusal once %s passed: log lines %q; want a second line with %s", refusalLogInterval, got, want)
	}
	evs := e.eventsOf(EventForward)
	if len(evs) != 2*burst+2 {
		t.Errorf("%d forward events, want one per refused tun channel and remote forward, %d", len(evs), 2*burst+2)
	}
	if ev := evs[len(evs)-2]; ev.Direction != "remote" || ev.Dest != "localhost:65536" || ev.Reason != "no such port" {
		t.Errorf("event of a remote forward to port 65536: %+v", ev)
	}
	// Another connection's first refusal is logged at once: an operator
	// whose ssh -L the policy refuses sees why, whatever others did.
	c = e.login("root")
	tun()
	if got := lines(); len(got) != 3 {
		t.Errorf("another connection's first refusal: log lines %q; want a third", got)
	}
}
