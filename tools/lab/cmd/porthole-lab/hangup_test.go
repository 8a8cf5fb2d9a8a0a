//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// TestHangupWithMakeAsTheTerminalsProgram: `xterm -e make lab`, `script -c "make lab"`
// (a terminal that runs make itself, no shell): closing the terminal sends
// SIGHUP to make alone, the session leader; GNU make does not pass it on and
// waits for its child, so the lab must notice the hang-up itself.
func TestHangupWithMakeAsTheTerminalsProgram(t *testing.T) {
	makeProg := testenv.NeedProgram(t, "make")
	dir := stack.SafeDir(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	mk := fmt.Sprintf("lab:\n\tPORTHOLE_LAB_TEST_MAIN=1 %s --no-agent --state %s --region %s --ssh-port 0 --http-port 0 --console ''\n", self, filepath.Join(dir, "state"), stack.Region)
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o600); err != nil {
		t.Fatal(err)
	}
	master, slave, err := pty.Open() // the terminal
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(makeProg, "-s", "lab")
	cmd.Dir = dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	defer func() {
		// whatever is left: make and the lab share make's process group
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
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
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("15 s after its terminal hung up, make and the lab are still running (make got SIGHUP and waits for the lab, which never got it)")
	}
}
