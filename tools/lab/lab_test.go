package lab

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/tools/internal/stack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestLabAsAUserRunsIt builds porthole and porthole-lab, starts the lab, logs in with
// the OpenSSH client through the tunnel, fetches the status page through the
// tunnel, stops the lab with SIGINT and checks that nothing it started is left.
func TestLabAsAUserRunsIt(t *testing.T) {
	ssh := stack.NeedProgram(t, "ssh")
	l := startLab(t, labPkgs, 60*time.Second, nil,
		"--ssh-port", "0", "--http-port", "0", "--console", "127.0.0.1:0")
	defer l.cmd.Process.Kill()
	info := l.info
	// The printed ssh line, as written, plus batch options for a test.
	args := strings.Fields(info.SSHCommand)[1:]
	args = append([]string{"-o", "BatchMode=yes", "-o", "LogLevel=ERROR"}, args...)
	args = append(args, "echo", "through-the-lab", "&&", "uname", "-s")
	cmd := exec.Command(ssh, args...) // its paths are relative to where the lab ran: here
	got, err := cmd.CombinedOutput()
	if err != nil || string(got) != "through-the-lab\nLinux\n" {
		t.Fatalf("ssh through the lab: %v, %q\nagent log:\n%s", err, got, tail(info.AgentLog, 20))
	}
	checkConsole(t, l.out, info)
	resp, err := http.Get("http://" + info.HTTP + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "porthole lab device") {
		t.Fatalf("status page through the tunnel: %q", page)
	}

	l.stop(t)
	if err := syscall.Kill(info.AgentPID, 0); err == nil {
		t.Fatalf("the agent (pid %d) is still running after the lab stopped", info.AgentPID)
	}
}

// checkConsole opens the web console's printed URL (tools/console has its own
// tests, the browser one among them); a build without xterm.js says so instead.
func checkConsole(t *testing.T, out string, info Info) {
	t.Helper()
	if info.Console == "" {
		if !strings.Contains(out, "make console-assets") {
			t.Fatalf("no console URL and no word why in:\n%s", out)
		}
		t.Log("the web console is not in this build (no make console-assets)")
		return
	}
	if !strings.Contains(out, info.Console) {
		t.Fatalf("the printed output lacks the console URL %q", info.Console)
	}
	resp, err := http.Get(info.Console) // the #token= fragment is not sent
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "porthole console") {
		t.Fatalf("the console page: %s %q", resp.Status, page)
	}
	// The page's forms start from the lab: its device, user and operator key. The
	// page sends the URL's token as a bearer token.
	u, _ := url.Parse(info.Console)
	token, _ := url.ParseQuery(u.Fragment)
	req, _ := http.NewRequest(http.MethodGet, u.Scheme+"://"+u.Host+"/api/state", nil)
	req.Header.Set("Authorization", "Bearer "+token.Get("token"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		ControlPlane bool     `json:"controlPlane"`
		Thing        string   `json:"thing"`
		User         string   `json:"user"`
		Keys         []string `json:"keys"`
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || !st.ControlPlane || st.Thing != Thing || st.User != info.User || len(st.Keys) != 1 || !strings.HasPrefix(st.Keys[0], "lab operator key") {
		t.Fatalf("the console's state: %+v, %v; want the lab's control plane, thing, user and operator key", st, err)
	}
}

// runningLab is porthole-lab started as a user would start it.
type runningLab struct {
	bin   string // where porthole-lab and the other pkgs were built
	cmd   *exec.Cmd
	lines chan string
	out   string // what it printed until it was up
	state string
	info  Info // its lab.json
}

// startLab builds pkgs (paths in this module), runs porthole-lab with a fresh state
// directory and args, waits up to up for "Ctrl-C stops the lab" and reads lab.json,
// checking that the printed output holds the ssh command. context, if set, adds to
// the failure message (such as a board's console).
func startLab(t *testing.T, pkgs []string, up time.Duration, context func(state string) string, args ...string) *runningLab {
	t.Helper()
	bin := t.TempDir()
	buildArgs := []string{"build", "-o", bin + "/"}
	for _, p := range pkgs {
		buildArgs = append(buildArgs, "github.com/porthole-iot/porthole/"+p)
	}
	build := exec.Command("go", buildArgs...)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	l := &runningLab{bin: bin, state: filepath.Join(stack.SafeDir(t), "state"), lines: make(chan string, 100)}
	l.cmd = exec.Command(filepath.Join(bin, "porthole-lab"), append([]string{"--state", l.state}, args...)...)
	stdout, _ := l.cmd.StdoutPipe()
	l.cmd.Stderr = l.cmd.Stdout
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
		close(l.lines)
	}()
	more := func() string {
		if context == nil {
			return ""
		}
		return context(l.state)
	}
	var out strings.Builder
	deadline := time.After(up)
wait:
	for {
		select {
		case line, ok := <-l.lines:
			if !ok {
				t.Fatalf("porthole-lab ended early:\n%s%s", out.String(), more())
			}
			out.WriteString(line + "\n")
			if strings.Contains(line, "Ctrl-C stops the lab") {
				break wait
			}
		case <-deadline:
			t.Fatalf("porthole-lab not up within %v:\n%s%s", up, out.String(), more())
		}
	}
	l.out = out.String()
	t.Logf("porthole-lab:\n%s", l.out)
	b, err := os.ReadFile(filepath.Join(l.state, "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &l.info); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.out, l.info.SSHCommand) {
		t.Fatalf("the printed output lacks the ssh command %q", l.info.SSHCommand)
	}
	return l
}

// stop sends SIGINT and checks that the lab exits 0 within 15 s.
func (l *runningLab) stop(t *testing.T) {
	t.Helper()
	l.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() {
		for range l.lines {
		}
		done <- l.cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("porthole-lab exited with %v after SIGINT", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("porthole-lab did not stop within 15s of SIGINT")
	}
}
