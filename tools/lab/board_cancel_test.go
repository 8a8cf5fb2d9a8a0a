package lab

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/board"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// TestBoardImageStopsWithItsChildren stops the lab (its context ends) while
// board/build.sh runs a child that writes to the script's output, as its
// fetch.sh's apt-get does on a first run: the lab must stop at once, and the
// child with it. Killing build.sh alone left the child running, and the lab
// waiting on the output pipe the child held until the child ended (on a
// SIGTERM from outside the terminal: Ctrl-C reaches the child too).
func TestBoardImageStopsWithItsChildren(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	info := Info{StateDir: state, CAFile: filepath.Join(state, "ca.pem"),
		DeviceCert: filepath.Join(state, "device", "dev.crt"), DeviceKey: filepath.Join(state, "device", "dev.key")}
	for _, p := range []string{info.CAFile, info.DeviceCert, info.DeviceKey, filepath.Join(state, "device", "authorized_keys")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	boardDir := filepath.Join(dir, "board")
	if err := os.MkdirAll(boardDir, 0o700); err != nil {
		t.Fatal(err)
	}
	childPID := filepath.Join(dir, "child.pid")
	script := "#!/bin/sh\nsleep 60 >&2 &\necho $! >" + childPID + "\nwait\n"
	if err := os.WriteFile(filepath.Join(boardDir, "build.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- buildImage(ctx, board.Conf{Dir: boardDir, Name: "test"}, newBoardFiles(state, "test"), info, "1", "2", "3")
	}()
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("build.sh did not start its child within 10s")
		}
		b, _ := os.ReadFile(childPID)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("buildImage = nil after its context ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("buildImage still waiting 5s after its context ended (for build.sh's child)")
	}
	// Gone, or a zombie that nobody has reaped yet.
	for deadline := time.Now().Add(2 * time.Second); testenv.ProcessRunning(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("build.sh's child (pid %d) is still running after the lab stopped", pid)
		}
	}
}
