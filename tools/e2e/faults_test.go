package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// The fault-injection tests run the real path (Mosquitto, tunneld, the agent
// binary, porthole connect, OpenSSH) and break one part of it at a time. Every
// transfer is checked by hash; a failed transfer must be reported as failed.

// randomFile writes n random bytes under dir and returns the path and its hash.
func randomFile(t *testing.T, dir string, n int) (string, [32]byte) {
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, fmt.Sprintf("random-%d.bin", n))
	writeFile(t, p, b, 0o600)
	return p, sha256.Sum256(b)
}

// fileDiff says how the file got differs from the file sent: their sizes and
// the ranges where they differ (the first few), each with what it holds
// instead: zeros (a write that never landed), bytes of the file sent from
// another offset (a write in the wrong place), or something else.
func fileDiff(t *testing.T, sent, got string) string {
	a, err := os.ReadFile(sent)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	var ranges []string
	n := min(len(a), len(b))
	for i := 0; i < n && len(ranges) < 8; {
		if a[i] == b[i] {
			i++
			continue
		}
		j := i
		for j < n && (a[j] != b[j] || j+64 <= n && !bytes.Equal(a[j:j+64], b[j:j+64])) {
			j++
		}
		what := "other bytes"
		switch {
		case !slices.ContainsFunc(b[i:j], func(c byte) bool { return c != 0 }):
			what = "zeros"
		case j-i >= 64:
			if k := bytes.Index(a, b[i:i+64]); k >= 0 {
				what = fmt.Sprintf("the bytes sent at %#x", k)
			}
		}
		ranges = append(ranges, fmt.Sprintf("[%#x, %#x): %s", i, j, what))
		i = j
	}
	// A file system that filled up meanwhile (other packages' tests run at the
	// same time) is a suspect: say how much room it has now.
	room := ""
	var fs syscall.Statfs_t
	if syscall.Statfs(filepath.Dir(got), &fs) == nil {
		room = fmt.Sprintf("; its file system (type %#x) has %d MiB free", fs.Type, uint64(fs.Bavail)*uint64(fs.Bsize)>>20)
	}
	return fmt.Sprintf("sent %d bytes, got %d; differing: %s%s", len(a), len(b), strings.Join(ranges, ", "), room)
}

// scp copies with `scp` (SFTP protocol) through port; it returns the error.
func scp(s *stack.Stack, port, from, to string) error {
	args := append(s.SSHOpts(), "-P", port, from, to)
	out, err := exec.Command("scp", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("scp %s %s: %v: %s", from, to, err, out)
	}
	return nil
}

// uploadHash sends data to `sha256sum` on the device over ssh and checks the
// digest it prints. opts go before the stack's SSHOpts: for each option ssh
// takes the first value it is given.
func uploadHash(s *stack.Stack, port string, data []byte, opts ...string) error {
	args := append(append(opts, s.SSHOpts()...), "-p", port, "root@127.0.0.1", "sha256sum")
	cmd := exec.Command("ssh", args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ssh sha256sum: %v: %s", err, out)
	}
	sum := sha256.Sum256(data)
	// The last line: root's shell start-up files on the test machine may print.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if want := hex.EncodeToString(sum[:]) + "  -"; lines[len(lines)-1] != want {
		return fmt.Errorf("device hashed %q, want %s", out, want)
	}
	return nil
}

// waitFlowing waits until n bytes of a transfer have arrived in path (the file it
// writes on this machine) and fails the test if the transfer ends first (done
// gets its result) or nothing arrives within 30 s. A fault meant to land
// mid-transfer is injected then, not after a fixed sleep: on a loaded machine
// the transfer's login can outlast the sleep, the fault then lands before any
// data moves, and the test passes without the fault it is about.
func waitFlowing(t *testing.T, path string, n int64, done <-chan error) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if fi, err := os.Stat(path); err == nil && fi.Size() >= n {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("the transfer ended (error: %v) before %s of it had arrived in %s", err, stack.MiB(n), path)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s of the transfer had not arrived in %s within 30 s", stack.MiB(n), path)
		}
	}
}

// near compares a later reading of the agent process with a baseline: the FDs
// must be back to the baseline exactly (take it with steadyProc, and the later
// reading with waitFDs: connections close asynchronously). Threads and RSS are
// only printed: Go keeps the threads it made, and RSS is the load tests' to bound.
func near(t *testing.T, what string, before, after stack.Proc) {
	t.Helper()
	t.Logf("%s: agent FDs %d -> %d, threads %d -> %d, RSS %s -> %s", what, before.FDs, after.FDs, before.Threads, after.Threads,
		stack.MiB(before.RSS), stack.MiB(after.RSS))
	if after.FDs > before.FDs {
		t.Errorf("%s: the agent holds %d FDs, %d before", what, after.FDs, before.FDs)
	}
}

// steadyProc reads the agent process once its FD count has stayed the same for
// half a second (at most 5 s): a baseline that no closing connection inflates.
func steadyProc(s *stack.Stack) stack.Proc {
	p := s.AgentProc()
	for same, deadline := 0, time.Now().Add(5*time.Second); same < 5 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		q := s.AgentProc()
		if q.FDs == p.FDs {
			same++
		} else {
			same = 0
		}
		p = q
	}
	return p
}

// waitFDs waits until the agent holds at most max FDs (connections close
// asynchronously).
func waitFDs(s *stack.Stack, max int, d time.Duration) stack.Proc {
	return waitAgent(s, func(p stack.Proc) bool { return p.FDs <= max }, d)
}

// waitAgent samples the agent's process until done holds or d has passed, and
// returns the last sample.
func waitAgent(s *stack.Stack, done func(stack.Proc) bool, d time.Duration) stack.Proc {
	deadline := time.Now().Add(d)
	for {
		p := s.AgentProc()
		if done(p) || time.Now().After(deadline) {
			return p
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wantReset reads c, which the tunnel must end (EOF or a reset) within d: a
// read that times out means that nothing ended it.
func wantReset(t *testing.T, what string, c net.Conn, d time.Duration) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	n, err := c.Read(make([]byte, 64))
	switch {
	case n > 0:
		t.Errorf("%s: read %d bytes, want the stream reset", what, n)
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		t.Logf("%s: %v after %v", what, err, time.Since(start).Round(time.Microsecond))
	default:
		t.Errorf("%s: %v; want EOF or a reset within %v", what, err, d)
	}
}

func TestFaultBrokerRestart(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	open := s.OpenTunnel("SSH")
	port, _, stop := s.Connect(open)
	defer stop()
	dir := t.TempDir()
	src, want := randomFile(t, dir, 16<<20)

	// Idle tunnel: the broker goes away and comes back; the tunnel is untouched.
	s.Broker.Stop()
	if got := s.MustSSH(port, "echo idle"); got != "idle\n" {
		t.Fatalf("ssh with the broker down: %q", got)
	}
	from := s.AgentLog.Len()
	s.Broker.Start()
	s.AgentLog.Wait(t, stack.SubscribedRE(), from, 60*time.Second)

	// During a transfer: the data plane does not depend on MQTT. The tunnel is
	// slowed to 4 MiB/s and the broker is stopped once the first MiB has arrived,
	// so that its restart (0.1–1 s) lands mid-transfer: past the limiter's burst
	// of a second's worth, the 16 MiB need 3 s more. The test fails if the
	// transfer had ended before the broker was back. Then the tunnel runs at full
	// speed again.
	dp := s.TD().Dataplane(open.TunnelID)
	dp.SetBandwidth(4 << 20)
	defer dp.SetBandwidth(0)
	up := filepath.Join(dir, "up.bin")
	done := make(chan error, 1)
	go func() { done <- scp(s, port, src, "root@127.0.0.1:"+up) }()
	midway := func(when string) {
		t.Helper()
		select {
		case err := <-done:
			t.Fatalf("the transfer had ended (error: %v) %s: the restart did not land mid-transfer", err, when)
		default:
		}
	}
	waitFlowing(t, up, 1<<20, done)
	arrived := func() string {
		fi, err := os.Stat(up)
		if err != nil {
			return err.Error()
		}
		return stack.MiB(fi.Size())
	}
	from = s.AgentLog.Len()
	stopped := arrived()
	s.Broker.Stop()
	midway("when the broker was stopped")
	s.Broker.Start()
	midway("when the broker was back")
	t.Logf("the broker restarted with %s of the 16 MiB arrived (%s at its stop)", arrived(), stopped)
	dp.SetBandwidth(0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if hashFile(t, up) != want {
		t.Fatalf("transfer during the broker restart: file differs (%s)", fileDiff(t, src, up))
	}
	s.AgentLog.Wait(t, stack.SubscribedRE(), from, 60*time.Second)
	// A new tunnel is heard after the restart.
	open2 := s.OpenTunnel("SSH")
	port2, _, stop2 := s.Connect(open2)
	defer stop2()
	if got := s.MustSSH(port2, "echo second"); got != "second\n" {
		t.Fatalf("ssh through a tunnel opened after the restart: %q", got)
	}
}

// loggedInStack starts the whole path with one tunnel to SSH, joined by porthole
// connect (stopped at the test's end) on port, and logs in through it once.
func loggedInStack(t *testing.T) (*stack.Stack, *tunneld.OpenTunnelOutput, string) {
	t.Helper()
	s := stack.Start(t, stack.Options{})
	open := s.OpenTunnel("SSH")
	port, _, stop := s.Connect(open)
	t.Cleanup(stop)
	s.MustSSH(port, "true")
	return s, open, port
}

func TestFaultTunneldRestart(t *testing.T) {
	s, open, port := loggedInStack(t)

	// tunneld stops (state on disk) and comes back on the same address: the agent
	// and porthole connect reconnect with their client tokens.
	addr := s.TDAddr
	s.StopTunneld()
	s.StartTunneld(addr)
	s.WaitDestination(open.TunnelID, 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := s.SSH(port, "echo after restart")
		if err == nil && out == "after restart\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh after the tunneld restart: %v %q\nagent log:\n%s", err, out, s.AgentLog)
		}
		time.Sleep(500 * time.Millisecond)
	}
	data := make([]byte, 4<<20)
	rand.Read(data)
	if err := uploadHash(s, port, data); err != nil {
		t.Fatal(err)
	}
}

func TestFaultWebSocketDropMidTransfer(t *testing.T) {
	s, open, port := loggedInStack(t)
	before := steadyProc(s)
	dir := t.TempDir()
	src, want := randomFile(t, dir, 64<<20)
	dp := s.TD().Dataplane(open.TunnelID)
	// Slow the tunnel so that the drop lands mid-transfer.
	dp.SetBandwidth(8 << 20)

	dst := filepath.Join(dir, "up.bin")
	done := make(chan error, 1)
	go func() { done <- scp(s, port, src, "root@127.0.0.1:"+dst) }()
	// Dropped once the first MiB is there: more than 50 MiB are still to come
	// at 8 MiB/s.
	waitFlowing(t, dst, 1<<20, done)
	dp.Drop(dataplane.Destination)
	err := <-done
	dp.SetBandwidth(0)
	if err == nil {
		// The drop came with most of the file still to send: it ends every
		// stream of the tunnel, so a transfer that went on did not meet it.
		what := "intact"
		if hashFile(t, dst) != want {
			what = "differs: " + fileDiff(t, src, dst)
		}
		t.Fatalf("scp succeeded although the agent's WebSocket was dropped mid-transfer (the file %s)", what)
	} else {
		t.Logf("transfer failed as it should: %v", err)
		if b, rerr := os.ReadFile(dst); rerr == nil && sha256.Sum256(b) == want {
			t.Fatal("scp failed although the file arrived intact")
		}
	}
	if err := dp.WaitConnects(ctxTimeout(t, 30*time.Second), dataplane.Destination, 2); err != nil {
		t.Fatalf("agent did not reconnect: %v", err)
	}
	// The next transfer works.
	os.Remove(dst)
	if err := scp(s, port, src, "root@127.0.0.1:"+dst); err != nil {
		t.Fatal(err)
	}
	if hashFile(t, dst) != want {
		t.Fatalf("transfer after the drop: file differs (%s)", fileDiff(t, src, dst))
	}
	near(t, "after the drop", before, waitFDs(s, before.FDs, 10*time.Second))
}

func TestFaultTargetRefusesOrHangs(t *testing.T) {
	refusedAddr := tunneltest.RefusingTarget(t)
	// HANG accepts and never answers; its connections are held until the
	// test ends.
	quit := make(chan struct{})
	hang := tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		<-quit
	})
	t.Cleanup(func() { close(quit) })
	s := stack.Start(t, stack.Options{Services: []string{fmt.Sprintf("REFUSE = %q", refusedAddr), fmt.Sprintf("HANG = %q", hang)}})
	open := s.OpenTunnel("SSH", "REFUSE", "HANG")
	ports, clog, stop := s.ConnectServices(open, "SSH", "REFUSE", "HANG")
	defer stop()
	defer func() {
		if t.Failed() { // a reset dial to HANG was seen once in CI (not reproduced; the one to REFUSE is now expected)
			t.Logf("porthole connect's log:\n%s", clog)
		}
	}()
	s.MustSSH(ports["SSH"], "true")
	before := steadyProc(s)

	// The agent answers the failed dial with STREAM_RESET, and porthole connect
	// closes the connection: at once, not after some timeout. So at once that,
	// on a loaded machine, the reset can come before Dial looks at its
	// connection (SO_ERROR) and is then Dial's error (seen in CI).
	c, err := net.Dial("tcp", "127.0.0.1:"+ports["REFUSE"])
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		t.Logf("refused target: %v", err)
	case err != nil:
		t.Fatal(err)
	default:
		wantReset(t, "refused target", c, 5*time.Second)
		c.Close()
	}

	h, err := net.Dial("tcp", "127.0.0.1:"+ports["HANG"])
	if err != nil {
		t.Fatal(err)
	}
	h.Write([]byte("hello?"))
	h.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := h.Read(make([]byte, 1)); n != 0 || !os.IsTimeout(err) {
		t.Fatalf("hanging target: read %d, %v; want nothing", n, err)
	}
	// A hung target holds one connection, not the tunnel: SSH still works.
	data := make([]byte, 1<<20)
	rand.Read(data)
	if err := uploadHash(s, ports["SSH"], data); err != nil {
		t.Fatal(err)
	}
	if n := s.AgentSocketsTo(hang); n != 1 {
		t.Errorf("the agent holds %d connections to the hanging target, want 1", n)
	}
	h.Close()
	// The operator gave up: the agent closes its connection to the target.
	deadline := time.Now().Add(10 * time.Second)
	for s.AgentSocketsTo(hang) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := s.AgentSocketsTo(hang); n != 0 {
		t.Errorf("the agent still holds %d connections to the hanging target 10 s after the operator closed it", n)
	}
	near(t, "after the refused and hung targets", before, waitFDs(s, before.FDs, 10*time.Second))
	if s.AgentLog.Await(regexp.MustCompile(`dialing service failed.*REFUSE`), 0, 10*time.Second) == nil {
		t.Errorf("no log line for the refused target:\n%s", s.AgentLog)
	}
}

func TestFaultAgentKilled(t *testing.T) {
	s, open, port := loggedInStack(t)
	keyPath := filepath.Join(s.DataDir, "ssh_host_ed25519_key")
	key := hashFile(t, keyPath)
	dp := s.TD().Dataplane(open.TunnelID)
	before := dp.Connects(dataplane.Destination)

	s.KillAgent()
	s.StartAgent()
	// The agent resumes the saved tunnel with its saved client token: the service
	// accepts the reconnect of an access token already used only with it.
	if err := dp.WaitConnects(ctxTimeout(t, 30*time.Second), dataplane.Destination, before+1); err != nil {
		t.Fatalf("agent did not resume the tunnel after SIGKILL: %v\n%s", err, s.AgentLog)
	}
	if hashFile(t, keyPath) != key {
		t.Fatal("the host key changed across SIGKILL")
	}
	data := make([]byte, 2<<20)
	rand.Read(data)
	if err := uploadHash(s, port, data); err != nil {
		t.Fatal(err)
	}
	// The tunnel's state is written in tunnels/, the host key at the top.
	for _, dir := range []string{s.DataDir, filepath.Join(s.DataDir, "tunnels")} {
		if m, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(m) > 0 {
			t.Errorf("temporary files left in %s: %v", dir, m)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(s.DataDir, "tunnels", "*.json")); len(m) != 1 {
		t.Errorf("saved tunnels after the restart: %v, want the one resumed", m)
	}
}

// mountTmpfs mounts a tmpfs of size bytes at dir (root only; skipped where
// mounting is not allowed, e.g. an unprivileged container).
func mountTmpfs(t *testing.T, dir string, opts string) {
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

func TestFaultDataDirUnwritable(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	s.StopAgent()
	run := func(t *testing.T) string {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, s.Bin, "agent", "-c", s.Config).CombinedOutput()
		if err == nil || ctx.Err() != nil {
			t.Fatalf("agent with an unusable data directory: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("agent exit %v: %s", err, lines[len(lines)-1])
		return string(out)
	}
	noPartial := func(t *testing.T) {
		ents, _ := os.ReadDir(s.DataDir)
		for _, e := range ents {
			if e.Name() != "lost+found" {
				t.Errorf("left in the data directory: %s", e.Name())
			}
		}
	}
	t.Run("read-only", func(t *testing.T) {
		os.RemoveAll(s.DataDir)
		os.MkdirAll(s.DataDir, 0o700)
		mountTmpfs(t, s.DataDir, "ro,size=64k,mode=0700")
		out := run(t)
		if !strings.Contains(out, "ssh_host_ed25519_key") || !strings.Contains(out, "read-only file system") {
			t.Fatalf("error does not name the host key and the cause:\n%s", out)
		}
		noPartial(t)
	})
	t.Run("full", func(t *testing.T) {
		os.RemoveAll(s.DataDir)
		os.MkdirAll(s.DataDir, 0o700)
		mountTmpfs(t, s.DataDir, "size=8k,mode=0700")
		// Fill it: tmpfs rounds to pages; write until ENOSPC.
		f, _ := os.Create(filepath.Join(s.DataDir, "filler"))
		io.Copy(f, io.LimitReader(rand.Reader, 1<<20))
		f.Close()
		out := run(t)
		if !strings.Contains(out, "ssh_host_ed25519_key") || !strings.Contains(out, "no space left on device") {
			t.Fatalf("error does not name the host key and the cause:\n%s", out)
		}
		ents, _ := os.ReadDir(s.DataDir)
		if len(ents) != 1 {
			t.Errorf("data directory holds %d entries, want only the filler", len(ents))
		}
	})
	t.Run("tunnel state full", func(t *testing.T) {
		exec.Command("umount", "-l", s.DataDir).Run()
		os.RemoveAll(s.DataDir)
		os.MkdirAll(s.DataDir, 0o700)
		s.StartAgent() // makes the host key
		tunnels := filepath.Join(s.DataDir, "tunnels")
		os.MkdirAll(tunnels, 0o700)
		mountTmpfs(t, tunnels, "size=4k,mode=0700")
		f, _ := os.Create(filepath.Join(tunnels, "filler"))
		io.Copy(f, io.LimitReader(rand.Reader, 1<<20))
		f.Close()
		open := s.OpenTunnel("SSH")
		s.AgentLog.Wait(t, regexp.MustCompile(`cannot save tunnel state.*no space left on device`), 0, 20*time.Second)
		port, _, stop := s.Connect(open)
		defer stop()
		if got := s.MustSSH(port, "echo still works"); got != "still works\n" {
			t.Fatalf("ssh: %q", got)
		}
		ents, _ := os.ReadDir(tunnels)
		if len(ents) != 1 {
			t.Errorf("tunnels directory holds %d entries, want only the filler", len(ents))
		}
		s.StopAgent()
	})
}

// TestFaultAgentStoppedEndsSessions: an agent stopped with SIGTERM while an SSH
// session runs through its tunnel ends that session for the operator too: the
// service resets the source's streams only when a new destination replaces the
// old one, so without the agent's resets the operator's ssh hung until an agent
// came back.
func TestFaultAgentStoppedEndsSessions(t *testing.T) {
	s, _, port := loggedInStack(t)
	args := append(s.SSHOpts(), "-p", port, "root@127.0.0.1", "echo started; sleep 60; echo finished")
	cmd := exec.Command("ssh", args...)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make([]byte, len("started\n"))
	if _, err := io.ReadFull(out, started); err != nil || string(started) != "started\n" {
		t.Fatalf("session did not start: %q %v", started, err)
	}
	done := make(chan error, 1)
	go func() { io.Copy(io.Discard, out); done <- cmd.Wait() }()
	s.StopAgent()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ssh exited 0 although its session was cut")
		}
		t.Logf("ssh ended: %v", err)
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("ssh still running 15 s after the agent stopped\n%s", s.AgentLog)
	}
}

// TestFaultLogOutputStalls: the agent's log destination stops taking lines (a
// serial console whose UART stalls, a supervisor that stops draining the
// pipe). The agent keeps serving: an upload through the tunnel and new logins
// while nothing is read from its output (a one-page pipe, which the agent's
// first lines fill); once the output is read again, a line says how many log
// lines were dropped meanwhile.
func TestFaultLogOutputStalls(t *testing.T) {
	s := stack.Start(t, stack.Options{AgentPipe: 4096})
	open := s.OpenTunnel("SSH")
	port, _, stop := s.Connect(open)
	t.Cleanup(stop)
	s.MustSSH(port, "true")
	t.Cleanup(s.AgentLog.Resume)
	from := s.AgentLog.Len()
	s.AgentLog.Stall()

	data := make([]byte, 2<<20)
	rand.Read(data)
	done := make(chan error, 1)
	served := make(chan struct{}, 1) // the upload or a login went through
	step := func() {
		select {
		case served <- struct{}{}:
		default:
		}
	}
	go func() {
		if err := uploadHash(s, port, data); err != nil {
			done <- err
			return
		}
		step()
		// Logins log a few lines each (about 1 KB at debug, with the
		// tunnel's frame lines rate-limited): 100 fill the agent's 64 KiB
		// queue and the pipe with room to spare (60 once did not).
		for i := range 100 {
			out, err := s.SSH(port, "echo login")
			if err == nil && out != "login\n" {
				err = fmt.Errorf("login %d printed %q", i, out)
			}
			if err != nil {
				done <- err
				return
			}
			step()
		}
		done <- nil
	}()
	// Each login must go through, however slow the machine (4 s each under
	// a loaded CI's race detector, as before the stall): a hung agent hangs
	// one of them, and a minute without one is that.
	for waiting := true; waiting; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("with its log output stalled: %v", err)
			}
			waiting = false
		case <-served:
		case <-time.After(time.Minute):
			t.Fatal("the agent stopped serving while its log output was stalled: no login for a minute")
		}
	}

	s.AgentLog.Resume()
	m := s.AgentLog.Wait(t, regexp.MustCompile(`log lines dropped.* dropped=(\d+)`), from, 30*time.Second)
	t.Logf("the agent dropped %s log lines while its output was stalled", m[1])
}
