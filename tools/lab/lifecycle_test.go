package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

var labPkgs = []string{"agent/cmd/porthole", "tools/lab/cmd/porthole-lab"}

// TestSecondLabOnSameState starts a second lab on a running lab's state directory:
// it must fail at once, naming the running lab, and leave the first one's files alone.
func TestSecondLabOnSameState(t *testing.T) {
	l := startLab(t, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
	defer l.cmd.Process.Kill()
	files := []string{"lab.json", filepath.Join("device", "porthole.toml"), "source.token"}
	before := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(l.state, f))
		if err != nil {
			t.Fatal(err)
		}
		before[f] = b
	}
	agentLog, err := os.Stat(l.info.AgentLog)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	second := exec.CommandContext(ctx, filepath.Join(l.bin, "porthole-lab"), "--state", l.state, "--region", stack.Region, "--ssh-port", "0", "--http-port", "0", "--console", "")
	out, err := second.CombinedOutput()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("the second lab was still running after %v:\n%s", took, out)
	}
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("the second lab ended with %v, want exit 1 (a --state to change):\n%s", err, out)
	}
	want := "the lab in " + l.state + " is already running (pid "
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "stop it first or use another --state") {
		t.Fatalf("the second lab said:\n%s\nwant a line with %q", out, want)
	}
	t.Logf("the second lab (%v): %s", took.Round(time.Millisecond), out)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(l.state, f))
		if err != nil || !bytes.Equal(b, before[f]) {
			t.Errorf("%s changed under the running lab (%v):\n%s\nwas:\n%s", f, err, b, before[f])
		}
	}
	// tunneld rewrites tunnels.json as the tunnel's sides connect: no new tunnel in it.
	if got := tunnelStates(t, l.state); len(got) != 1 || got[l.info.TunnelID] == "" {
		t.Errorf("tunnels in tunneld's state: %v, want only the running lab's %s", got, l.info.TunnelID)
	}
	if fi, err := os.Stat(l.info.AgentLog); err != nil || fi.Size() < agentLog.Size() {
		t.Errorf("agent.log shrank under the running lab: %v", err)
	}
	l.stop(t)
}

// TestLabOutlivesItsTunnel closes the lab's tunnel with the control-plane call the
// printed AWS line makes: the lab says so and keeps tunneld running until Ctrl-C.
func TestLabOutlivesItsTunnel(t *testing.T) {
	l := startLab(t, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
	defer l.cmd.Process.Kill()

	// Only the lab's own secret signs: another user of this machine, who can
	// reach its loopback port, opened tunnels to the device and took their
	// tokens, or closed the lab's, with any signature (it had no credentials).
	for _, secret := range []string{"lab", "not-the-secret"} {
		if code, b := signedCall(t, l.info, "CloseTunnel", `{"tunnelId":"`+l.info.TunnelID+`"}`, secret); code != http.StatusForbidden {
			t.Errorf("CloseTunnel signed with secret %q: %d %s, want 403", secret, code, b)
		}
	}
	callTunneld(t, l.info, "CloseTunnel", `{"tunnelId":"`+l.info.TunnelID+`"}`)
	line := l.waitLine(t, "is gone", 10*time.Second)
	for _, want := range []string{l.info.TunnelID, "tunneld closed it", l.info.SSH, l.info.HTTP, "no longer work", "keep running"} {
		if !strings.Contains(line, want) {
			t.Errorf("the lab said %q; want it to say %q", line, want)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if l.cmd.ProcessState != nil || syscall.Kill(l.cmd.Process.Pid, 0) != nil {
		t.Fatal("the lab exited after its tunnel was closed")
	}
	if got := callTunneld(t, l.info, "DescribeTunnel", `{"tunnelId":"`+l.info.TunnelID+`"}`); !strings.Contains(got, `"CLOSED"`) {
		t.Fatalf("DescribeTunnel after CloseTunnel: %s", got)
	}
	l.stop(t)
}

// TestSourceEndedByExpiry: a lab left up past its tunnel's lifetime (12 h) sees
// tunneld close it with a Close frame whose reason says so, and must not blame
// CloseTunnel or a rotated token.
func TestSourceEndedByExpiry(t *testing.T) {
	// As agent/tunnel's conn.go wraps tunneld's Close frame at expiry.
	why, rotated := sourceEnded(fmt.Errorf("%w (status %d %s)", tunnel.ErrClosedByService, 1000, "tunnel expired"))
	if !strings.Contains(why, "lifetime") || !strings.Contains(why, "restart the lab") || strings.Contains(why, "CloseTunnel") || rotated {
		t.Errorf("sourceEnded(the expiry's close) = %q, %v; want it to say the tunnel reached its lifetime, and to restart the lab", why, rotated)
	}
}

// TestSourceEndedByRotatedTokenRefusal: a source side between connections when
// its token was rotated gets no Close frame, but its reconnect is refused with
// tunneld's rotation body: that is the rotation too, not a tunnel gone.
func TestSourceEndedByRotatedTokenRefusal(t *testing.T) {
	why, rotated := sourceEnded(fmt.Errorf("joining: %w", &tunnel.HandshakeError{StatusCode: 400, Body: tunneld.BodyTokenRotated}))
	if !rotated || !strings.Contains(why, "rotated") {
		t.Errorf("sourceEnded(the rotated token's refusal) = %q, %v; want the rotation", why, rotated)
	}
	why, rotated = sourceEnded(&tunnel.HandshakeError{StatusCode: 400, Body: "Invalid access token"})
	if rotated || !strings.Contains(why, "refused") {
		t.Errorf("sourceEnded(another refusal) = %q, %v; want a refusal, not a rotation", why, rotated)
	}
}

// TestLabSourceTokenRotated rotates the lab's source token with the call the
// printed AWS line makes: tunneld closes the lab's source side, saying why. The
// tunnel is not gone (it stayed open, with the agent on it): the lab says so,
// and the porthole connect line it prints, given the rotation's new token,
// brings the lab's own SSH port back, so that the ssh line printed at the start
// works again.
func TestLabSourceTokenRotated(t *testing.T) {
	stack.NeedProgram(t, "ssh")
	l := startLab(t, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
	defer l.cmd.Process.Kill()
	var rotated struct{ SourceAccessToken string }
	b := callTunneld(t, l.info, "RotateTunnelAccessToken", `{"tunnelId":"`+l.info.TunnelID+`","clientMode":"SOURCE"}`)
	if err := json.Unmarshal([]byte(b), &rotated); err != nil || rotated.SourceAccessToken == "" {
		t.Fatalf("RotateTunnelAccessToken: %s (%v)", b, err)
	}
	line := l.waitLine(t, "source side stopped", 10*time.Second)
	for _, want := range []string{l.info.TunnelID, "source token was rotated", "stays open", l.info.SSH, l.info.HTTP, filepath.Base(l.info.SourceToken)} {
		if !strings.Contains(line, want) {
			t.Errorf("the lab said %q; want it to say %q", line, want)
		}
	}
	connect := l.waitLine(t, " connect --endpoint ", 5*time.Second)
	if running := l.waitLine(t, "keep running", 5*time.Second); strings.Contains(running, "console") {
		t.Errorf("the lab said %q: no console runs", running)
	}
	_, sshPort, _ := net.SplitHostPort(l.info.SSH)
	_, httpPort, _ := net.SplitHostPort(l.info.HTTP)
	if !strings.Contains(connect, " -L SSH="+sshPort+" -L HTTP="+httpPort) {
		t.Fatalf("the connect line %q does not take the lab's ports %s and %s", connect, sshPort, httpPort)
	}
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(rotated.SourceAccessToken), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "exec "+strings.Replace(strings.TrimSpace(connect), "--token-file TOKEN", "--token-file "+token, 1))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}()
	ssh := strings.Replace(l.info.SSHCommand, "ssh ", "ssh -o BatchMode=yes -o ConnectionAttempts=1 ", 1) + " echo through-the-new-source"
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got, err := exec.Command("sh", "-c", ssh).CombinedOutput()
		if err == nil && string(got) == "through-the-new-source\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ssh line after connecting with the new token: %v, %q\nporthole connect:\n%s", err, got, out.String())
		}
	}
	l.stop(t)
}

// TestLabSaysWhenTheAgentDies kills the agent: the lab says so, with the exit
// status and the log's path, instead of leaving ssh to hang in silence.
func TestLabSaysWhenTheAgentDies(t *testing.T) {
	l := startLab(t, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
	defer l.cmd.Process.Kill()

	if err := syscall.Kill(l.info.AgentPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	line := l.waitLine(t, "exited", 10*time.Second)
	for _, want := range []string{"The agent exited", "signal: killed", l.info.AgentLog} {
		if !strings.Contains(line, want) {
			t.Errorf("the lab said %q; want it to say %q", line, want)
		}
	}
	// lab.json no longer names the dead agent's pid.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(l.info.StateDir, "lab.json"))
		if bytes.Contains(b, []byte(`"thing"`)) && !bytes.Contains(b, []byte(`"agent_pid"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lab.json after the agent died:\n%s\nwant it without agent_pid", b)
		}
	}
	// The source token rotated now: the tunnel stays open, but no agent is on
	// it, and no connect line can bring the device back.
	callTunneld(t, l.info, "RotateTunnelAccessToken", `{"tunnelId":"`+l.info.TunnelID+`","clientMode":"SOURCE"}`)
	line = l.waitLine(t, "source side stopped", 10*time.Second)
	if !strings.Contains(line, "the agent has exited") || strings.Contains(line, "with the agent on it") || strings.Contains(line, "the agent keep") || strings.Contains(line, "TOKEN") {
		t.Errorf("the lab said %q after its agent exited; want it to say so, and no connect line", line)
	}
	l.stop(t)
}

// waitLine waits for the lab to print a line holding s and returns it.
func (l *runningLab) waitLine(t *testing.T, s string, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case line, ok := <-l.lines:
			if !ok {
				err := l.cmd.Wait()
				t.Fatalf("porthole-lab ended (%v) before it printed %q", err, s)
			}
			t.Logf("porthole-lab: %s", line)
			if strings.Contains(line, s) {
				return line
			}
		case <-deadline:
			t.Fatalf("porthole-lab did not print %q within %v", s, within)
		}
	}
}

// callTunneld makes one control-plane call to the lab's tunneld, as the AWS CLI
// does, and returns the answer's body.
func callTunneld(t *testing.T, info Info, op, body string) string {
	t.Helper()
	code, b := signedCall(t, info, op, body, info.AWSSecretAccessKey)
	if code != http.StatusOK {
		t.Fatalf("%s: %d %s", op, code, b)
	}
	return b
}

// signedCall makes one control-plane call to the lab's tunneld signed with
// secret, and returns the answer's status and body.
func signedCall(t *testing.T, info Info, op, body, secret string) (int, string) {
	t.Helper()
	pem, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, info.Tunneld+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "IoTSecuredTunneling."+op)
	tunneld.SignV4(req, []byte(body), info.AWSAccessKeyID, secret, "", info.Region, "IoTSecuredTunneling", time.Now())
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestKilledLabsTunnelClosedOnRestart: a lab killed with -9 (the OOM killer, a
// crash) cannot close its tunnel on the way out; the next lab on the same state
// closes it, or the agent would resume it, and every such restart would add an
// open tunnel for up to 12 h.
func TestKilledLabsTunnelClosedOnRestart(t *testing.T) {
	state := filepath.Join(stack.SafeDir(t), "state")
	first := startLabIn(t, state, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
	first.cmd.Process.Signal(syscall.SIGKILL)
	first.cmd.Wait()
	second := startLabIn(t, state, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
	defer second.cmd.Process.Kill()
	if got := tunnelStates(t, state); got[first.info.TunnelID] != "CLOSED" || got[second.info.TunnelID] != "OPEN" {
		t.Errorf("while the next lab runs, the killed lab's tunnel %s is %q and the new one %q (tunnels: %v); want CLOSED and OPEN",
			first.info.TunnelID, got[first.info.TunnelID], got[second.info.TunnelID], got)
	}
	second.stop(t)
}

// TestLabClosesItsTunnelOnStop stops the lab with Ctrl-C: its tunnel is CLOSED in
// tunneld's saved state, so restarts do not pile up open tunnels.
func TestLabClosesItsTunnelOnStop(t *testing.T) {
	l := startLab(t, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
	defer l.cmd.Process.Kill()
	l.stop(t)
	if got := tunnelStates(t, l.state)[l.info.TunnelID]; got != "CLOSED" {
		t.Fatalf("the lab's tunnel %s is %q after the lab stopped, want CLOSED", l.info.TunnelID, got)
	}
}

// tunnelStates reads tunneld's saved state under the lab's state directory: the
// status of each tunnel by id.
func tunnelStates(t *testing.T, state string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "tunneld", "tunnels.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Tunnels []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"tunnels"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, tn := range st.Tunnels {
		m[tn.ID] = tn.Status
	}
	return m
}

// TestPrintedSSHLineWithSpaceInState runs the printed ssh and sftp lines through a
// shell, as a user pastes them, with a state directory whose path holds a space
// (and a %): ssh reads the known_hosts file the lab wrote and logs in without a
// host-key question. ssh splits an -o UserKnownHostsFile value at whitespace (a
// list of files) and expands % tokens in it and in -i, so shell quoting alone is
// not enough.
func TestPrintedSSHLineWithSpaceInState(t *testing.T) {
	testenv.NeedProgram(t, "ssh")
	testenv.NeedProgram(t, "sftp")
	state := filepath.Join(stack.SafeDir(t), "my lab 100%", "state")
	l := startLabIn(t, state, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
	defer l.cmd.Process.Kill()
	// BatchMode: an unknown host key fails instead of asking.
	line := strings.Replace(l.info.SSHCommand, "ssh ", "ssh -o BatchMode=yes ", 1)
	out, err := exec.Command("sh", "-c", line+" echo through-the-lab").CombinedOutput()
	if err != nil || string(out) != "through-the-lab\n" {
		t.Errorf("the printed ssh line, run by sh:\n%s\n%v: %s", line, err, out)
	}
	sftp := strings.Replace(l.info.SFTPCommand, "sftp ", "sftp -o BatchMode=yes -b - ", 1)
	cmd := exec.Command("sh", "-c", sftp)
	cmd.Stdin = strings.NewReader("pwd\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("the printed sftp line, run by sh:\n%s\n%v: %s", sftp, err, out)
	}
	l.stop(t)
}

// TestLabStopsOnHangupAndTerm stops the lab with SIGHUP (its terminal closed) and
// SIGTERM as Ctrl-C does: exit 0, the agent gone and the lab's tunnel CLOSED, so
// that restarts do not pile up open tunnels that the agent resumes.
func TestLabStopsOnHangupAndTerm(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			if sig == syscall.SIGHUP {
				// Under nohup the lab would inherit the ignored SIGHUP and
				// keep running on a hangup, by design. Handled here, it is
				// the default again in the programs this starts (exec resets
				// handled signals, not ignored ones). Not only when
				// signal.Ignored says so: it reports false once Notify has
				// been called, though Stop puts SIG_IGN back, so under nohup
				// every -count run after the first hung (as in
				// agent/cmd/porthole's childPorthole).
				hup := make(chan os.Signal, 1)
				signal.Notify(hup, syscall.SIGHUP)
				defer signal.Stop(hup)
			}
			l := startLab(t, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
			defer l.cmd.Process.Kill()
			l.stopWith(t, sig)
			if got := tunnelStates(t, l.state)[l.info.TunnelID]; got != "CLOSED" {
				t.Errorf("the lab's tunnel %s is %q after %v, want CLOSED", l.info.TunnelID, got, sig)
			}
			time.Sleep(200 * time.Millisecond) // the kernel's SIGKILL of a left-over agent (Pdeathsig)
			if err := syscall.Kill(l.info.AgentPID, 0); err == nil {
				t.Errorf("the agent (pid %d) is still running after %v", l.info.AgentPID, sig)
			}
		})
	}
}

// TestCtrlCOnceUp: Ctrl-C in a terminal reaches the agent too, which may stop a
// moment before the lab's own handler runs. The lab then stops without saying
// that the device is gone.
func TestCtrlCOnceUp(t *testing.T) {
	l := startLab(t, labPkgs, 60*time.Second, nil, "--ssh-port", "0", "--http-port", "0", "--console", "")
	defer l.cmd.Process.Kill()
	if err := syscall.Kill(l.info.AgentPID, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// The agent logs "agent stopped" as it exits.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(tail(l.info.AgentLog, 3), "agent stopped"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the agent did not stop within 10s of SIGINT")
		}
	}
	time.Sleep(50 * time.Millisecond)
	l.cmd.Process.Signal(syscall.SIGINT)
	var said []string
	for line := range l.lines {
		said = append(said, line)
	}
	if err := l.cmd.Wait(); err != nil {
		t.Fatalf("porthole-lab exited with %v after SIGINT", err)
	}
	if out := strings.Join(said, "\n"); strings.Contains(out, "exited") {
		t.Errorf("on Ctrl-C the lab said:\n%s", out)
	}
}

// TestStaleLabJSON: lab.json describes a running lab, and scripts read it. One
// left by an earlier run (stopped, or killed with -9) must not name that run's
// pid and ports while the next lab starts, nor once it stops: a second lab
// started meanwhile named the dead pid as the one holding the directory.
func TestStaleLabJSON(t *testing.T) {
	dir := stack.SafeDir(t)
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	labJSON := filepath.Join(state, "lab.json")
	if err := os.WriteFile(labJSON, []byte(`{"pid": 2147483646, "ssh": "127.0.0.1:1"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	porthole := filepath.Join(dir, "porthole") // an agent that never subscribes
	if err := os.WriteFile(porthole, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := stack.NewLog()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Region: stack.Region, StateDir: state, Porthole: porthole, Out: out}) }()
	out.Wait(t, regexp.MustCompile(`agent subscribes`), 0, 20*time.Second)
	if _, err := os.Stat(labJSON); err == nil {
		t.Errorf("the last run's lab.json is there while the lab starts")
	}
	f, err := lockState(state)
	if err == nil {
		f.Close()
		t.Fatal("a second lock on a starting lab's directory was granted")
	}
	if strings.Contains(err.Error(), "2147483646") || !strings.Contains(err.Error(), "still starting") {
		t.Errorf("the second lab is told: %v; want that the first is still starting", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, ErrInterrupted) {
		t.Errorf("Run = %v, want ErrInterrupted", err)
	}
	if _, err := os.Stat(labJSON); err == nil {
		t.Errorf("lab.json is left after the lab stopped")
	}
}

// TestNoAgentLeavesHTTPPortAlone: with --no-agent the lab has no source side and
// listens on no HTTP port, so one in use (8080, the default, often is) must not
// stop it.
func TestNoAgentLeavesHTTPPortAlone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	_, stop := runLab(t, Options{Region: stack.Region, StateDir: filepath.Join(stack.SafeDir(t), "state"), NoAgent: true, HTTPPort: busy}, 20*time.Second)
	if err := stop(); err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}

// TestLeftTemporaryFilesRemoved: a lab killed (-9) in the middle of writing one
// of its files (through a temporary ".NAME.DIGITS" beside it, atomicfile.Write)
// left that file in the state directory, a private key in it for ca.key, and no
// later run removed it. The next start removes those of its own directories,
// and nothing else.
func TestLeftTemporaryFilesRemoved(t *testing.T) {
	state := filepath.Join(stack.SafeDir(t), "state")
	left := []string{".ca.key.3940281734", filepath.Join("device", ".porthole.toml.12"), ".console_host_keys.json.7",
		filepath.Join("board", "qemu-armv7-virt", ".ssh_host_ed25519_key.4")}
	kept := []string{".ca.key.bak", ".ca.key.", "ca.key.123", ".notes", filepath.Join("device", "data", ".state.json.5"),
		filepath.Join("tunneld", ".notes.5"), filepath.Join("board", "qemu-armv7-virt", "out", ".initrd.gz.9")}
	for _, f := range append(left, kept...) {
		p := filepath.Join(state, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, stop := runLab(t, Options{Region: stack.Region, StateDir: state, NoAgent: true}, 20*time.Second)
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	for _, f := range left {
		if _, err := os.Stat(filepath.Join(state, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s, left by a write cut short: %v after a start, want it removed", f, err)
		}
	}
	for _, f := range kept {
		if _, err := os.Stat(filepath.Join(state, f)); err != nil {
			t.Errorf("%s, not the lab's: %v after a start, want it kept", f, err)
		}
	}
}
