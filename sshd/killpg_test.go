package sshd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKillpgAs: killpgAs reaches a process group only where the user's
// effective uid may (uid 1000 cannot end uid 1003's sleep, uid 1003 can), and
// leaves every thread of the server root. The sleep is a native program, so
// this runs under qemu-user too, where the setresuid call differs (32-bit ids
// are SETRESUID32 on arm).
func TestKillpgAs(t *testing.T) {
	needRoot(t)
	sleep := exec.Command("sleep", "30")
	sleep.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: 1003, Gid: 1003}}
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleep.Process.Kill()
	ended := make(chan error, 1)
	go func() { ended <- sleep.Wait() }()

	if err := killpgAs(sleep.Process.Pid, syscall.SIGTERM, &syscall.Credential{Uid: 1000}); !errors.Is(err, syscall.EPERM) {
		t.Errorf("TERM as uid 1000 to uid 1003's group: %v, want EPERM", err)
	}
	// Every thread is still root: probe as many as goroutines can reach.
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			time.Sleep(time.Millisecond) // hold the thread, so others get other threads
			if euid := syscall.Geteuid(); euid != 0 {
				t.Errorf("a server thread's euid is %d after killpgAs, want 0", euid)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-ended:
		t.Fatalf("uid 1003's sleep ended (%v): uid 1000's signal reached it", err)
	default:
	}

	if err := killpgAs(sleep.Process.Pid, syscall.SIGTERM, &syscall.Credential{Uid: 1003}); err != nil {
		t.Errorf("TERM as uid 1003 to its own group: %v", err)
	}
	select {
	case err := <-ended:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Errorf("sleep ended with %v, want SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("uid 1003's own signal did not end its sleep")
	}
}

// TestKillpgAsLeavesMainThread: after killpgAs, the process's main thread
// (what ps, top and /proc/PID show for the agent) has root's ids again. The
// thread killpgAs changed was left to end with its goroutine, but Go never
// ends the main thread: parked with the user's effective uid, it showed the
// agent as that user. The helper (internal/killpgcheck) is a static program
// like the agent: there, unlike in a test binary, the goroutines run on the
// main thread too.
func TestKillpgAsLeavesMainThread(t *testing.T) {
	needRoot(t)
	bin := filepath.Join(t.TempDir(), "killpgcheck")
	build := exec.Command("go", "build", "-o", bin, "./internal/killpgcheck")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if errors.Is(err, syscall.ENOEXEC) {
		t.Skip("built for the emulated architecture (qemu-user): it cannot run here")
	} else if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "Uid:\t0\t0\t0\t0\nowner 0\n"; string(out) != want {
		t.Errorf("after killpgAs with uid 1003's credentials, the process's main thread shows\n%s\nwant\n%s(ps lists the agent as uid 1003, /proc/PID belongs to it)", out, want)
	}
}

// TestKillpgAsReachesTheGroup: a user's signal goes to the session's whole
// process group, as sshd's killpg does, not to its leader alone: a shell's
// background job (here a sleep its shell started) is ended too.
func TestKillpgAsReachesTheGroup(t *testing.T) {
	needRoot(t)
	sh := exec.Command("sh", "-c", "sleep 30 & echo $!; wait")
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: 1003, Gid: 1003}}
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer sh.Process.Kill()
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		t.Fatal(err)
	}
	defer func() { // the sleep, left running by a failure (once ended, its pid may be another's)
		if t.Failed() {
			syscall.Kill(-sh.Process.Pid, syscall.SIGKILL)
		}
	}()
	if err := killpgAs(sh.Process.Pid, syscall.SIGTERM, &syscall.Credential{Uid: 1003}); err != nil {
		t.Fatalf("TERM as uid 1003 to its own group: %v", err)
	}
	sh.Wait()
	// Gone, or a zombie nobody has reaped yet (the sleep's parent is gone).
	ended := func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		_, rest, _ := strings.Cut(string(b), ") ")
		return strings.HasPrefix(rest, "Z")
	}
	for deadline := time.Now().Add(10 * time.Second); !ended(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the group's other process (the shell's background sleep) still runs 10 s after the signal")
		}
	}
}
