//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// labMakefile writes, in a directory of its own, a Makefile whose lab target
// runs this test binary as porthole-lab (--no-agent, state in dir/state), and
// returns make and the two paths. The recipe has flags with a quote, for which
// make runs a shell: the project's Makefile runs bash, which execs a lone
// command; this one /bin/sh, which may not, hence its exec, so that make is the
// lab's parent as in `make lab`.
func labMakefile(t *testing.T) (makeProg, dir, state string) {
	makeProg = testenv.NeedProgram(t, "make")
	dir = stack.SafeDir(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	state = filepath.Join(dir, "state")
	mk := fmt.Sprintf("lab:\n\texec env PORTHOLE_LAB_TEST_MAIN=1 %s --no-agent --state %s --region %s --ssh-port 0 --http-port 0 --console ''\n", self, state, stack.Region)
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o600); err != nil {
		t.Fatal(err)
	}
	return makeProg, dir, state
}

// TestHangupWithMakeAsTheTerminalsProgram: `xterm -e make lab`, `script -c "make lab"`
// (a terminal that runs make itself, no shell): closing the terminal sends
// SIGHUP to make alone, the session leader; GNU make does not pass it on and
// waits for its child, so the lab must notice the hang-up itself.
func TestHangupWithMakeAsTheTerminalsProgram(t *testing.T) {
	makeProg, dir, _ := labMakefile(t)
	master, slave, err := pty.Open() // the terminal
	if err != nil {
		t.Fatal(err)
	}
	// make starts with SIGHUP at its default, as a terminal's program does:
	// a test binary run with it ignored (nohup, a CI job in the background)
	// would pass that on to make and so to the lab, which then rightly stays
	// (the test failed there). A signal handled here is reset at exec.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	defer signal.Reset(syscall.SIGHUP)
	cmd := exec.Command(makeProg, "-s", "lab")
	cmd.Dir = dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	// One Wait, which the end below and the cleanup both wait for (two
	// were a data race when make outlived the test's 15 s).
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		// whatever is left: make and the lab share make's process group
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}()
	var out bytes.Buffer
	buf := make([]byte, 4096)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "Ctrl-C stops the lab"); {
		if time.Now().After(deadline) {
			t.Fatalf("the lab did not come up:\n%s", out.String())
		}
		master.SetReadDeadline(time.Now().Add(time.Second))
		k, _ := master.Read(buf)
		out.Write(buf[:k])
	}
	master.Close() // the terminal window closes
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatal("15 s after its terminal hung up, make and the lab are still running (make got SIGHUP and waits for the lab, which never got it)")
	}
}

// TestMakeKilledStopsTheLab: a run button that stops `make lab` with SIGINT and
// then SIGKILL to make alone. make waits for the lab at SIGINT and passes no
// signal on when killed, so the lab stops itself when make dies: it says so,
// and lab.json is gone.
func TestMakeKilledStopsTheLab(t *testing.T) {
	makeProg, dir, state := labMakefile(t)
	// A file, not a pipe: Wait would wait for the lab to close a pipe.
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	output := func() string { b, _ := os.ReadFile(out.Name()); return string(b) }
	cmd := exec.Command(makeProg, "-s", "lab")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever is left: make's process group
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(output(), "Ctrl-C stops the lab"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the lab did not come up:\n%s", output())
		}
	}
	b, err := os.ReadFile(filepath.Join(state, "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(b, &info); err != nil || info.PID == 0 {
		t.Fatalf("lab.json: %v, pid %d", err, info.PID)
	}
	syscall.Kill(cmd.Process.Pid, syscall.SIGINT) // make waits for the lab
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	running := func() bool { // a zombie left to whoever reaps orphans here has stopped
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", info.PID))
		i := bytes.LastIndexByte(b, ')')
		return err == nil && i > 0 && i+2 < len(b) && b[i+2] != 'Z'
	}
	for deadline := time.Now().Add(15 * time.Second); running(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("15 s after make was killed, the lab (pid %d) still runs:\n%s", info.PID, output())
		}
	}
	if !strings.Contains(output(), "lab stopped; everything it started is gone") {
		t.Errorf("the lab's output after make was killed:\n%s\nwant it to say it stopped", output())
	}
	if _, err := os.Stat(filepath.Join(state, "lab.json")); !os.IsNotExist(err) {
		t.Errorf("lab.json after the lab stopped: %v, want it gone", err)
	}
}
