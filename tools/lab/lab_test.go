package lab

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
	"github.com/porthole-iot/porthole/tools/console"
	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// Every lab these tests start (Run, or porthole-lab by startLab) has tunneld in
// stack.Region, x-: an agent that lost its tunnel.endpoint would dial the
// endpoint of the notification's region, which for x- Go's resolver refuses
// without asking DNS, rather than send the tunnel's token towards AWS.
// porthole-lab's TestRegion checks the default, us-east-1, without a lab.
func TestMain(m *testing.M) { goleak.VerifyTestMain(stack.Tests(m)) }

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
	cmd := exec.Command(ssh, args...)
	got, err := cmd.CombinedOutput()
	if err != nil || string(got) != "through-the-lab\nLinux\n" {
		t.Fatalf("ssh through the lab: %v, %q\nagent log:\n%s", err, got, tail(info.AgentLog, 20))
	}
	// The same line for an operator whose ssh-agent holds more keys than the
	// device's MaxAuthTries (6, counted as OpenSSH counts them): it names its
	// key with IdentitiesOnly=yes, or ssh would offer the agent's keys first
	// and be refused before it got to the lab's.
	cmd = exec.Command(ssh, args...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+fullAgent(t, 8))
	if got, err := cmd.CombinedOutput(); err != nil || string(got) != "through-the-lab\nLinux\n" {
		t.Fatalf("ssh through the lab with 8 keys in ssh-agent: %v, %q", err, got)
	}
	// The line to connect to more tunnels names the porthole binary the lab ran
	// (built outside the working directory here: by its absolute path).
	if want := "  " + filepath.Join(l.bin, "porthole") + " connect --endpoint "; !strings.Contains(l.out, want) {
		t.Errorf("the printed output lacks %q", want)
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

// fullAgent starts an ssh-agent holding n keys of its own and returns its
// socket; the agent stops with the test.
func fullAgent(t *testing.T, n int) string {
	t.Helper()
	agent, add, keygen := stack.NeedProgram(t, "ssh-agent"), stack.NeedProgram(t, "ssh-add"), stack.NeedProgram(t, "ssh-keygen")
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command(agent, "-D", "-a", sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			t.Fatal("ssh-agent made no socket in 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range n {
		key := filepath.Join(dir, "id"+strconv.Itoa(i))
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		a := exec.Command(add, "-q", key)
		a.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		if out, err := a.CombinedOutput(); err != nil {
			t.Fatalf("ssh-add: %v\n%s", err, out)
		}
	}
	return sock
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
// directory, stack.Region and args, waits up to up for "Ctrl-C stops the lab" and reads lab.json,
// checking that the printed output holds the ssh command. context, if set, adds to
// the failure message (such as a board's console).
func startLab(t *testing.T, pkgs []string, up time.Duration, context func(state string) string, args ...string) *runningLab {
	t.Helper()
	return startLabIn(t, filepath.Join(stack.SafeDir(t), "state"), pkgs, up, context, args...)
}

// startLabIn is startLab with the state directory state.
func startLabIn(t *testing.T, state string, pkgs []string, up time.Duration, context func(state string) string, args ...string) *runningLab {
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
	l := &runningLab{bin: bin, state: state, lines: make(chan string, 100)}
	l.cmd = exec.Command(filepath.Join(bin, "porthole-lab"), append([]string{"--state", l.state, "--region", stack.Region}, args...)...)
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
	l.info = readLabJSON(t, l.state)
	if !strings.Contains(l.out, l.info.SSHCommand) {
		t.Fatalf("the printed output lacks the ssh command %q", l.info.SSHCommand)
	}
	return l
}

// runLab runs the lab in this process with opt, its output going to out, and
// waits up to up for it to be up ("Ctrl-C stops the lab"); one that ends
// before, fails the test with Run's answer. stop ends the lab's
// context and returns Run's answer (the same at each call). The test's end
// stops a lab the test has not, and fails the test if Run then answers an
// error.
func runLab(t *testing.T, opt Options, up time.Duration) (out *stack.Log, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = stack.NewLog()
	opt.Out = out
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opt) }()
	var stopped bool
	var runErr error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() {
		if !stopped {
			if err := stop(); err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	})
	// A lab that ends before it is up (a refused start) fails the test with
	// its answer at once, not after up.
	deadline, upLine := time.Now().Add(up), regexp.MustCompile(`Ctrl-C stops the lab`)
	for out.Await(upLine, 0, 100*time.Millisecond) == nil {
		select {
		case runErr = <-done:
			stopped = true
			t.Fatalf("the lab ended before it was up: Run = %v; its output:\n%s", runErr, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lab was not up (\"Ctrl-C stops the lab\") within %v; its output:\n%s", up, out)
		}
	}
	return out, stop
}

// readLabJSON returns what the lab in state wrote to its lab.json.
func readLabJSON(t *testing.T, state string) Info {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

func (l *runningLab) stop(t *testing.T) {
	t.Helper()
	l.stopWith(t, syscall.SIGINT)
}

// stopWith sends sig and checks that the lab exits 0 within 15 s.
func (l *runningLab) stopWith(t *testing.T, sig syscall.Signal) {
	t.Helper()
	l.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() {
		for range l.lines {
		}
		done <- l.cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("porthole-lab exited with %v after %v", err, sig)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("porthole-lab did not stop within 15s of %v", sig)
	}
}

// TestCheckSafeDirResolvesSymlinks checks that a state directory reached through a
// symlink is checked where it really is: a symlink from a safe place to a
// directory under a world-writable one is refused, naming the real path.
func TestCheckSafeDirResolvesSymlinks(t *testing.T) {
	safe := stack.SafeDir(t)
	open := filepath.Join(safe, "open") // like /tmp
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o1777); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(safe, "state"), filepath.Join(open, "state")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"to-open": filepath.Join(open, "state"), "to-open-dir": open,
		"to-safe": filepath.Join(safe, "state")} {
		if err := os.Symlink(target, filepath.Join(safe, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(safe, "state"), filepath.Join(open, "to-safe")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		want      string // in the error; "" means no error
	}{
		{"safe", filepath.Join(safe, "state"), ""},
		{"symlink to a safe directory", filepath.Join(safe, "to-safe"), ""},
		{"below a world-writable directory", filepath.Join(open, "state"), "is below " + open + ","},
		{"symlink to a directory below it", filepath.Join(safe, "to-open"),
			"the state directory " + filepath.Join(safe, "to-open") + " (really " + filepath.Join(open, "state") + ") is below " + open + ","},
		{"not yet made, below a symlink to it", filepath.Join(safe, "to-open-dir", "new"),
			"(really " + filepath.Join(open, "new") + ") is below " + open + ","},
		{"not yet made, below a symlink to a directory below it", filepath.Join(safe, "to-open", "new", "deeper"),
			"(really " + filepath.Join(open, "state", "new", "deeper") + ") is below " + open + ","},
		// The agent's configuration names the path as given: its SSH server checks that one.
		{"symlink below it to a safe directory", filepath.Join(open, "to-safe"), "is below " + open + ","},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkSafeDir(tc.dir)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("checkSafeDir(%s) = %v, want an error with %q", tc.dir, err, tc.want)
			}
		})
	}
}

// TestCheckSafeDirOwner: `sudo make lab` in a user's checkout. The agent refuses a
// data_dir below a directory another user owns (as OpenSSH's StrictModes); the lab
// refuses such a --state before it makes anything, instead of making a root-owned
// state directory in the user's tree and failing once everything runs.
func TestCheckSafeDirOwner(t *testing.T) {
	hostenv.NeedRoot(t, "giving a directory to another user (chown) needs root")
	home := filepath.Join(stack.SafeDir(t), "home", "someone")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(home, "porthole", ".lab")
	if err := checkSafeDir(state); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") || !strings.Contains(err.Error(), "without sudo") {
		t.Errorf("checkSafeDir below a directory of uid 65534, run as root: %v", err)
	}
	err := Run(context.Background(), Options{Region: stack.Region, StateDir: state, Porthole: stack.Build(t), Out: stack.NewLog()})
	if !errors.Is(err, ErrPrerequisite) {
		t.Errorf("Run = %v, want a refused --state (ErrPrerequisite)", err)
	}
	if _, err := os.Stat(filepath.Dir(state)); err == nil {
		t.Errorf("the lab made %s in another user's tree", filepath.Dir(state))
	}
}

// TestNoAgentConnectLine runs the lab with --no-agent: its connect line uses the
// --ssh-port asked for and the porthole binary it was given, by its absolute path.
func TestNoAgentConnectLine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sshPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	porthole := filepath.Join("..", "..", "bin", "porthole")
	wantBin, err := filepath.Abs(porthole)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(stack.SafeDir(t), "state")
	out, _ := runLab(t, Options{Region: stack.Region, StateDir: state, SSHPort: sshPort, NoAgent: true, Porthole: porthole}, 20*time.Second)
	info := readLabJSON(t, state)
	got := info.ConnectUsage
	if !strings.HasPrefix(got, wantBin+" connect --endpoint ") || !strings.HasSuffix(got, " -L SSH="+strconv.Itoa(sshPort)) {
		t.Errorf("connect line %q; want it to run %s with -L SSH=%d", got, wantBin, sshPort)
	}
	if !strings.Contains(out.String(), "Connect:\n  "+got+"\n") {
		t.Errorf("the printed output lacks the connect line %q:\n%s", got, out.String())
	}
}

// TestUnsafeStateRefusedUntouched: a --state the agent's SSH server would not
// trust is a usage error (exit 1, ErrPrerequisite), found before anything is made:
// the state directory and its lock are not left behind.
func TestUnsafeStateRefusedUntouched(t *testing.T) {
	open := filepath.Join(stack.SafeDir(t), "open") // like /tmp
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o1777); err != nil {
		t.Fatal(err)
	}
	porthole := filepath.Join(t.TempDir(), "porthole")
	if err := os.WriteFile(porthole, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(open, "state")
	err := Run(context.Background(), Options{Region: stack.Region, StateDir: state, Porthole: porthole, SSHPort: 0, HTTPPort: 0})
	if !errors.Is(err, ErrPrerequisite) || !strings.Contains(err.Error(), "is below "+open) {
		t.Fatalf("Run = %v, want ErrPrerequisite naming %s", err, open)
	}
	if _, err := os.Lstat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused state directory was made (%v)", err)
	}
}

// TestPortholeNotExecutableRefusedUntouched: a --porthole that cannot run (a
// release binary downloaded without its execute bit, a directory) is refused
// as a missing one is, before anything is made, saying what to do; not with
// exec's bare "permission denied" after the broker and tunneld started.
func TestPortholeNotExecutableRefusedUntouched(t *testing.T) {
	dir := stack.SafeDir(t)
	file := filepath.Join(dir, "porthole-linux-amd64")
	if err := os.WriteFile(file, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, porthole := range []string{file, dir} {
		state := filepath.Join(dir, "state"+strconv.Itoa(i))
		err := Run(context.Background(), Options{Region: stack.Region, StateDir: state, Porthole: porthole, Console: ""})
		if !errors.Is(err, ErrPrerequisite) || !strings.Contains(err.Error(), "is not an executable file") {
			t.Errorf("Run with --porthole %s = %v, want ErrPrerequisite saying it is not an executable file", porthole, err)
		}
		if _, err := os.Lstat(state); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("with --porthole %s, the state directory was made (%v)", porthole, err)
		}
	}
}

func TestMorePort(t *testing.T) {
	for _, tc := range []struct {
		used []int
		want int
	}{{[]int{2222, 8080}, 2223}, {[]int{2223, 8080}, 2224}, {[]int{2223, 2224}, 2225}, {[]int{0, 0}, 2223}} {
		if got := morePort(tc.used...); got != tc.want {
			t.Errorf("morePort(%v) = %d, want %d", tc.used, got, tc.want)
		}
	}
}

// The printed commands name files in the state directory, which may hold spaces
// or quotes: each is one word to the shell.
func TestShellArg(t *testing.T) {
	for _, s := range []string{"/root/lab A2/id_ed25519", "it's", "$HOME/x", "a;b|c&d", "`x`", "UserKnownHostsFile=/a b/known_hosts", "plain/path-1.2", ""} {
		out, err := exec.Command("sh", "-c", `printf '%s' `+shellArg(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh read shellArg(%q) = %s as %q (err %v)", s, shellArg(s), out, err)
		}
	}
	if got := shellArg("bin/porthole"); got != "bin/porthole" {
		t.Errorf("shellArg quoted a plain path: %s", got)
	}
}

// The lab's known_hosts pins the agent's key for any port of 127.0.0.1, so the
// ssh of a `porthole connect -L SSH=PORT` the lab suggests trusts it too, and
// for no other host (checked with OpenSSH's own lookup).
func TestKnownHostsAnyPort(t *testing.T) {
	keygen := stack.NeedProgram(t, "ssh-keygen")
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(nil)
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	hostKey, known := filepath.Join(dir, "host_key"), filepath.Join(dir, "known_hosts")
	os.WriteFile(hostKey, pem.EncodeToMemory(block), 0o600)
	pub, err := devicePublicKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeKnownHosts(known, pub); err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{"[127.0.0.1]:2222": true, "[127.0.0.1]:2223": true, "[127.0.0.2]:2222": false, "example.com": false} {
		err := exec.Command(keygen, "-F", host, "-f", known).Run()
		if (err == nil) != want {
			t.Errorf("ssh-keygen -F %s: %v, want found %v", host, err, want)
		}
	}
}

// The console's store gets this run's device key, as known_hosts does: a store
// kept from a run with another device in the same state directory (the local
// agent, then a board) must not stop the console's logins as a changed key.
func TestConsoleHostKeyPinned(t *testing.T) {
	keys := &console.HostKeys{Path: filepath.Join(t.TempDir(), "console_host_keys.json")}
	ctx := context.Background()
	for i := range 2 {
		pub, _, _ := ed25519.GenerateKey(nil)
		key, _ := gossh.NewPublicKey(pub)
		if err := pinConsoleHostKey(keys, key); err != nil {
			t.Fatal(err)
		}
		if _, err := keys.Check(ctx, Thing, key, ""); err != nil {
			t.Errorf("run %d: the console refuses the device key the lab made: %v", i+1, err)
		}
	}
}

// TestPrintedSSHLineFromAnotherTerminal: the lab holds its terminal until
// Ctrl-C, so its lines are pasted into another one (a second ssh session, a new
// tmux window), which starts in the home directory. With the state directory
// below the working directory (.lab, as `make lab` runs it), lines naming the key
// and CA relative to it work nowhere else: they name them as lab.json does.
func TestPrintedSSHLineFromAnotherTerminal(t *testing.T) {
	stack.NeedProgram(t, "ssh")
	porthole := stack.Build(t)
	dir, home := stack.SafeDir(t), t.TempDir()
	t.Chdir(dir) // the clone, where `make lab` runs
	out, _ := runLab(t, Options{Region: stack.Region, StateDir: ".lab", Porthole: porthole}, 60*time.Second)
	info := readLabJSON(t, filepath.Join(dir, ".lab"))
	for _, want := range []string{info.AWSCommand, " --ca-file " + shellArg(info.CAFile) + " "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the printed lines lack %q (as lab.json names the files):\n%s", want, out.String())
		}
	}
	m := regexp.MustCompile(`(?m)^  SSH     (ssh .*)$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no ssh line in:\n%s", out.String())
	}
	cmd := exec.Command("sh", "-c", strings.Replace(m[1], "ssh ", "ssh -o BatchMode=yes ", 1)+" echo through-the-lab")
	cmd.Dir = home
	if got, err := cmd.CombinedOutput(); err != nil || string(got) != "through-the-lab\n" {
		t.Errorf("the printed ssh line, pasted in a shell in %s:\n%s\n%v: %s", home, m[1], err, got)
	}
}
