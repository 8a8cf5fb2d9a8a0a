package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/lab"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

func TestMain(m *testing.M) {
	if os.Getenv("PORTHOLE_LAB_TEST_MAIN") != "" { // this test binary run as porthole-lab
		main()
	}
	goleak.VerifyTestMain(m)
}

// TestInterruptDuringStartUp stops the lab while it waits for the agent: it says
// so in one line, not with the error of the step it cut short, and exits 0 as
// after Ctrl-C once it is up. The agent is a script that never subscribes, or one
// that exits at once (as the real one does when Ctrl-C in a terminal reaches it
// too).
func TestInterruptDuringStartUp(t *testing.T) {
	for _, tc := range []struct{ name, agent string }{
		{"agent waits", "exec sleep 30"},
		{"agent exits", "exit 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := stack.SafeDir(t)
			porthole := filepath.Join(dir, "porthole")
			if err := os.WriteFile(porthole, []byte("#!/bin/sh\n"+tc.agent+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // Ctrl-C before the agent subscribes
			stdout := runInterrupted(t, ctx, dir, porthole)
			if !strings.Contains(stdout, "lab stopped; everything it started is gone") {
				t.Fatalf("stdout lacks that the lab stopped:\n%s", stdout)
			}
		})
	}
}

// A word before the flags is refused: flag stops parsing at it, and the lab
// would start with the defaults instead of the flags after it.
func TestStrayArgument(t *testing.T) {
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"start", "--state", filepath.Join(t.TempDir(), "s"), "--region", stack.Region}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `unexpected argument "start"`) || stdout.Len() > 0 {
		t.Errorf("run start --state … = %d, stdout %q, stderr %q; want 1, nothing started, the word named", code, stdout.String(), stderr.String())
	}
}

// TestCtrlCReachesTheAgentFirst: Ctrl-C in a terminal signals the agent too, and
// it may exit (0, as the real one does on SIGINT) a moment before the lab's own
// signal handler ends ctx. That is still an interrupted start-up (exit 0, one
// line), not a failed step with the agent's log.
func TestCtrlCReachesTheAgentFirst(t *testing.T) {
	dir := stack.SafeDir(t)
	porthole, mark := filepath.Join(dir, "porthole"), filepath.Join(dir, "signalled")
	if err := os.WriteFile(porthole, []byte("#!/bin/sh\ntouch '"+mark+"'\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			if _, err := os.Stat(mark); err == nil {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // the lab's own SIGINT, handled a moment later
		cancel()
	}()
	runInterrupted(t, ctx, dir, porthole)
}

// runInterrupted runs the lab in dir with the agent program porthole until
// ctx ends during its start-up, and checks that it says so in one line and
// exits 0. It returns what the lab printed on stdout.
func runInterrupted(t *testing.T, ctx context.Context, dir, porthole string) string {
	t.Helper()
	var stdout, stderr strings.Builder
	code := run(ctx, []string{"--state", filepath.Join(dir, "state"), "--porthole", porthole, "--region", stack.Region,
		"--ssh-port", "0", "--http-port", "0", "--console", ""}, &stdout, &stderr)
	t.Logf("stdout:\n%s", stdout.String())
	if want := "porthole-lab: interrupted during start-up\n"; code != 0 || stderr.String() != want {
		t.Fatalf("run = %d, stderr %q; want 0, %q", code, stderr.String(), want)
	}
	return stdout.String()
}

// TestBadPorts: a port number out of range is bad usage, not a port "in use",
// and the same port for two of SSH, HTTP and the console is refused before
// anything starts, not after the whole start-up when the second listener fails.
func TestBadPorts(t *testing.T) {
	dir := stack.SafeDir(t)
	porthole := filepath.Join(dir, "porthole")
	if err := os.WriteFile(porthole, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ssh-port", "70000"}, "--ssh-port 70000"},
		{[]string{"--http-port", "-1"}, "--http-port -1"},
		{[]string{"--ssh-port", "45123", "--http-port", "45123"}, "45123"},
		{[]string{"--ssh-port", "45124", "--console", "127.0.0.1:45124"}, "--console 127.0.0.1:45124 and --ssh-port"},
		{[]string{"--http-port", "8088", "--console", "127.0.0.1:8088"}, "--console 127.0.0.1:8088 and --http-port"},
	} {
		var stdout, stderr strings.Builder
		args := append([]string{"--state", filepath.Join(dir, "state"), "--porthole", porthole, "--region", stack.Region, "--console", ""}, tc.args...)
		code := run(context.Background(), args, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.want) || strings.Contains(stderr.String(), "in use") || stdout.Len() > 0 {
			t.Errorf("%v: run = %d, stdout %q, stderr %q; want 1, a usage error naming %q, nothing started", tc.args, code, stdout.String(), stderr.String(), tc.want)
		}
	}
}

// TestStateDirectoryOthersCanWriteRefused: a --state directory another user
// could change (writable by group or others, or theirs), who could then
// replace the lab's CA key or the authorized_keys its agent trusts, is
// refused as the other bad input is, with exit 1 and a message that says what
// to do, before anything is written in it; with --no-agent and --board too.
// It exited 2 with the in-process tunneld's words about its own state file.
func TestStateDirectoryOthersCanWriteRefused(t *testing.T) {
	dir := stack.SafeDir(t)
	porthole := filepath.Join(dir, "porthole")
	if err := os.WriteFile(porthole, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		mode  os.FileMode
		owner int // -1: this user
		args  []string
		want  string // after the state directory's name
		what  string // what to do
	}{
		{"group", 0o770, -1, nil, " is writable by group or others (mode 0770)", "chmod go-w"},
		{"others", 0o707, -1, nil, " is writable by group or others (mode 0707)", "chmod go-w"},
		{"no agent", 0o775, -1, []string{"--no-agent"}, " is writable by group or others (mode 0775)", "chmod go-w"},
		{"board", 0o770, -1, []string{"--board", "qemu-armv7-virt"}, " is writable by group or others (mode 0770)", "chmod go-w"},
		{"another user", 0o700, 65534, nil, " belongs to uid 65534", "run the lab as that user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.owner >= 0 {
				hostenv.NeedRoot(t, "giving the state directory to another user (chown) needs root")
			}
			state := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.Mkdir(state, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(state, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.owner >= 0 {
				if err := os.Chown(state, tc.owner, tc.owner); err != nil {
					t.Fatal(err)
				}
			}
			var stdout, stderr strings.Builder
			args := append([]string{"--state", state, "--porthole", porthole, "--region", stack.Region,
				"--ssh-port", "0", "--http-port", "0", "--console", ""}, tc.args...)
			code := run(context.Background(), args, &stdout, &stderr)
			want := "porthole-lab: the state directory " + state + tc.want
			if code != 1 || !strings.HasPrefix(stderr.String(), want) || !strings.Contains(stderr.String(), tc.what) {
				t.Errorf("run %v = %d, stderr %q; want 1, %q…, saying %q", args, code, stderr.String(), want, tc.what)
			}
			if entries, _ := os.ReadDir(state); len(entries) > 0 {
				t.Errorf("the refused state directory holds %v, want nothing written", entries)
			}
		})
	}
}

// TestUserWithoutPasswdEntry: run as a uid /etc/passwd does not list (a
// container started with --user 1234), the lab cannot make its ssh line's
// user, and its agent's SSH server, which logs in only its own user of
// /etc/passwd, would refuse every login: the lab says so, and what to do,
// with exit 1, before it makes anything. It exited 2 with Go's bare "user:
// unknown userid N" (or, built without cgo, a word about $USER), or, with
// $USER set, started with that name in its ssh line, which the agent refused.
func TestUserWithoutPasswdEntry(t *testing.T) {
	hostenv.NeedRoot(t, "running the lab as a uid /etc/passwd does not list needs root")
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	uid := 54321
	for strings.Contains(string(passwd), ":"+strconv.Itoa(uid)+":") {
		uid++
	}
	// The test binary, run as the lab, where that uid may run it.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // testing's directory, and the test's in it
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "porthole-lab")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  string // USER
		args []string
	}{
		{"USER unset", "", nil},
		{"USER set", "USER=root", nil},
		{"no agent", "", []string{"--no-agent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(dir, "state")
			// Should the lab start, it stops here, and the test fails.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append([]string{"--state", state, "--porthole", "/bin/true", "--region", stack.Region,
				"--ssh-port", "0", "--http-port", "0", "--console", ""}, tc.args...)...)
			cmd.Env = []string{"PORTHOLE_LAB_TEST_MAIN=1", "PATH=" + os.Getenv("PATH"), "HOME=/"}
			if tc.env != "" {
				cmd.Env = append(cmd.Env, tc.env)
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			want := fmt.Sprintf("porthole-lab: you (uid %d) have no entry in /etc/passwd", uid)
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 || !strings.HasPrefix(stderr.String(), want) || !strings.Contains(stderr.String(), "useradd") {
				t.Errorf("porthole-lab as uid %d: %v, stderr %q; want exit 1, %q… and what to do", uid, err, stderr.String(), want)
			}
			if _, err := os.Stat(state); err == nil {
				os.RemoveAll(state)
				t.Errorf("the lab made its state directory")
			}
		})
	}
}

// TestConsoleBeyondLoopbackRefused: the lab's console serves plain HTTP and
// logs in with the lab's key, so a --console address beyond loopback is bad
// usage, refused before anything starts, as porthole-console refuses its
// --listen without TLS. It listened on every interface and printed a
// 127.0.0.1 URL.
func TestConsoleBeyondLoopbackRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:8088"} {
		consoleRefused(t, addr, "--console "+addr+" is not loopback")
	}
}

// consoleRefused runs the lab with --console addr and checks that it is
// refused with exit 1 and a message holding want, before anything starts.
func consoleRefused(t *testing.T, addr, want string) {
	t.Helper()
	// Should the lab start, it stops here, and run's 0 fails the test.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr strings.Builder
	state := filepath.Join(stack.SafeDir(t), "state")
	code := run(ctx, []string{"--state", state, "--region", stack.Region, "--no-agent", "--ssh-port", "0", "--console", addr}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), want) || stdout.Len() > 0 {
		t.Errorf("run --console %s = %d, stdout %q, stderr %q; want 1, nothing started, %q", addr, code, stdout.String(), stderr.String(), want)
	}
	if _, err := os.Stat(state); err == nil {
		t.Errorf("run --console %s made the state directory: the lab started", addr)
	}
}

// TestMalformedConsoleAddress: a --console address net.Listen cannot take is
// bad usage, refused before anything starts. It failed (exit 2) after the
// broker and tunneld had started, and was not looked at by a build without
// xterm.js, which ran without its console.
func TestMalformedConsoleAddress(t *testing.T) {
	for _, addr := range []string{"nonsense", "127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:no-such-service", "[::1]"} {
		consoleRefused(t, addr, "--console "+addr+":")
	}
}

// TestHelpOnStdout: -h asks for the help, which is then the lab's output, on
// stdout as porthole's (`porthole-lab -h | less` showed nothing), with exit 0;
// a mistake's usage stays on stderr.
func TestHelpOnStdout(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var stdout, stderr strings.Builder
		code := run(context.Background(), []string{arg}, &stdout, &stderr)
		if code != 0 || !strings.Contains(stdout.String(), "-console") || stderr.Len() > 0 {
			t.Errorf("run %s = %d, stdout %q, stderr %q; want 0, the help on stdout", arg, code, stdout.String(), stderr.String())
		}
	}
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"--no-such-flag"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "-console") || stdout.Len() > 0 {
		t.Errorf("run --no-such-flag = %d, stdout %q, stderr %q; want 1, the usage on stderr", code, stdout.String(), stderr.String())
	}
}

// TestStateDefaultDocumented: the default state directory is .lab in the
// current directory (the clone's only under make lab), and -h and the README
// say so. The README said "in the clone". And the README's options name each
// flag of -h.
func TestStateDefaultDocumented(t *testing.T) {
	var stdout, stderr strings.Builder
	run(context.Background(), []string{"-h"}, &stdout, &stderr)
	_, help, _ := strings.Cut(stdout.String(), "  -state string\n")
	help, _, _ = strings.Cut(help, "\n  -")
	if !strings.Contains(help, "current directory") || !strings.Contains(help, `(default ".lab")`) {
		t.Errorf("-h on --state: %q, want the default .lab and a relative path in the current directory", help)
	}
	readme, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(readme)), " ")
	if !strings.Contains(text, "`--state DIR` (default `.lab` in the current directory") {
		t.Errorf("README.md does not say that --state's default is .lab in the current directory")
	}
	// The README's list of options (make lab LABFLAGS="…") names every flag
	// -h lists, as the one place a newcomer reads them.
	_, options, _ := strings.Cut(text, "Options (`make lab LABFLAGS=")
	options, _, _ = strings.Cut(options, "The user in the ssh line")
	flags := regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(stdout.String(), -1)
	if len(flags) == 0 {
		t.Fatalf("-h lists no flags: %q", stdout.String())
	}
	for _, f := range flags {
		if !strings.Contains(options, "`--"+f[1]) {
			t.Errorf("README.md's lab options do not name --%s, which -h lists", f[1])
		}
	}
}

// TestCtrlCWithOutputReaderGone: `make lab | tee lab.txt`, then Ctrl-C. The
// terminal's SIGINT ends tee at once, so the lab's last line goes to a pipe with
// no reader. The lab must still stop as after any Ctrl-C (exit 0, lab.json
// removed), not die of SIGPIPE part-way through its stop, leaving lab.json to
// name a lab that is gone. The lab is this test binary (see TestMain) with
// --no-agent, up in a moment.
func TestCtrlCWithOutputReaderGone(t *testing.T) {
	state := filepath.Join(stack.SafeDir(t), "state") // not below /tmp: the lab refuses it
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(os.Args[0], "--state", state, "--region", stack.Region, "--no-agent", "--ssh-port", "0", "--console", "")
	cmd.Env = append(os.Environ(), "PORTHOLE_LAB_TEST_MAIN=1")
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	w.Close()
	r.SetReadDeadline(time.Now().Add(20 * time.Second))
	sc := bufio.NewScanner(r)
	for sc.Scan() && !strings.Contains(sc.Text(), "Ctrl-C stops the lab") {
	}
	if sc.Err() != nil || !strings.Contains(sc.Text(), "Ctrl-C stops the lab") {
		cmd.Process.Kill()
		err := cmd.Wait()
		t.Fatalf("porthole-lab not up (%v, %v): %s", sc.Err(), err, stderr.String())
	}
	r.Close() // tee is gone
	cmd.Process.Signal(os.Interrupt)
	time.AfterFunc(15*time.Second, func() { cmd.Process.Kill() })
	if err := cmd.Wait(); err != nil {
		t.Errorf("porthole-lab exited with %v after SIGINT (stderr %q)", err, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(state, "lab.json")); err == nil {
		t.Errorf("lab.json is left after the lab stopped")
	}
}

// TestRegion: --region is tunneld's region, in lab.json, the printed aws line
// and what tunneld answers with (a tunnel's ARN, the SigV4 credential scope
// it checks), and a name an agent would not make an endpoint of is bad usage,
// refused before anything starts. The lab ran with us-east-1 whatever it was
// given. The lab here is stack.Region's, as in every other lab test; -h shows
// the default, us-east-1, and no test starts a lab in it.
func TestRegion(t *testing.T) {
	var help, errs strings.Builder
	run(context.Background(), []string{"-h"}, &help, &errs)
	if !strings.Contains(help.String(), `(default "us-east-1")`+"\n  -ssh-port") {
		t.Errorf("-h does not give --region's default, us-east-1:\n%s", help.String())
	}

	state := filepath.Join(stack.SafeDir(t), "state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := stack.NewLog()
	var stderr strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--state", state, "--no-agent", "--ssh-port", "0", "--console", "", "--region", stack.Region}, out, &stderr)
	}()
	if out.Await(regexp.MustCompile(`Ctrl-C stops the lab`), 0, 20*time.Second) == nil {
		cancel()
		t.Fatalf("the lab is not up (exit %d):\n%s%s", <-done, out, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(state, "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info lab.Info
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if info.Region != stack.Region {
		t.Errorf("lab.json region = %q, want %q", info.Region, stack.Region)
	}
	if want := " --region " + stack.Region + " "; !strings.Contains(info.AWSCommand, want) || !strings.Contains(out.String(), info.AWSCommand) {
		t.Errorf("the aws line lacks %q, or is not printed: %s", want, info.AWSCommand)
	}
	arn := openTunnel(t, info)
	if want := "arn:aws:iot:" + stack.Region + ":"; !strings.HasPrefix(arn, want) {
		t.Errorf("tunneld opened tunnel %s, want an ARN in %s", arn, stack.Region)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("run = %d after Ctrl-C, stderr %q", code, stderr.String())
	}

	for _, region := range []string{"US-EAST-1", "us east 1", "eu.west-1", "x/", strings.Repeat("a", 65)} {
		var stdout, stderr strings.Builder
		state := filepath.Join(stack.SafeDir(t), "state")
		code := run(context.Background(), []string{"--state", state, "--no-agent", "--ssh-port", "0", "--console", "", "--region", region}, &stdout, &stderr)
		if want := "porthole-lab: --region \"" + region + "\" is not a region name"; code != 1 || !strings.HasPrefix(stderr.String(), want) || stdout.Len() > 0 {
			t.Errorf("run --region %q = %d, stdout %q, stderr %q; want 1, nothing started, %q", region, code, stdout.String(), stderr.String(), want)
		}
		if _, err := os.Stat(state); err == nil {
			t.Errorf("run --region %q made the state directory: the lab started", region)
		}
	}
}

// openTunnel opens a tunnel to the lab's device at the lab's tunneld, signed
// as its aws line is (lab.json's key, for its region), and returns its ARN.
func openTunnel(t *testing.T, info lab.Info) string {
	t.Helper()
	ca, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	body := `{"destinationConfig":{"thingName":"` + info.Thing + `","services":["SSH"]}}`
	req, _ := http.NewRequest(http.MethodPost, info.Tunneld+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "IoTSecuredTunneling.OpenTunnel")
	tunneld.SignV4(req, []byte(body), info.AWSAccessKeyID, info.AWSSecretAccessKey, "", info.Region, "IoTSecuredTunneling", time.Now())
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct{ TunnelArn string }
	if err := json.Unmarshal(b, &out); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("OpenTunnel signed for %s: %s %s", info.Region, resp.Status, b)
	}
	return out.TunnelArn
}
