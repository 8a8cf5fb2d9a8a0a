package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
	second := exec.CommandContext(ctx, filepath.Join(l.bin, "porthole-lab"), "--state", l.state, "--ssh-port", "0", "--http-port", "0", "--console", "")
	out, err := second.CombinedOutput()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("the second lab was still running after %v:\n%s", took, out)
	}
	if err == nil {
		t.Fatalf("the second lab exited 0:\n%s", out)
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
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=lab/20261130/us-east-1/IoTSecuredTunneling/aws4_request, SignedHeaders=host, Signature=00")
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s %s", op, resp.Status, b)
	}
	return string(b)
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
