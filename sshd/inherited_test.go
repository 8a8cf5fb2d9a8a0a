package sshd

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A descriptor the agent inherited without close-on-exec (from a shell, an init
// script) is not passed on to the commands its SSH server starts, with /proc
// mounted or not (close_range(2) needs none; the /proc listing is for kernels
// before 5.11).
func TestCloseInheritedOnExec(t *testing.T) {
	oldRange, oldProc := closeRange, procSelfFD
	defer func() { closeRange, procSelfFD = oldRange, oldProc }()
	t.Run("close_range without /proc", func(t *testing.T) {
		// A range with no descriptor in it: only whether the kernel knows
		// the call and its flag.
		if err := unix.CloseRange(1<<30, 1<<30, unix.CLOSE_RANGE_CLOEXEC); err != nil {
			t.Skipf("close_range(2) with CLOSE_RANGE_CLOEXEC: %v (a kernel before 5.11)", err)
		}
		procSelfFD = "/nonexistent/fd"
		closesInherited(t)
	})
	procSelfFD = oldProc
	t.Run("/proc without close_range", func(t *testing.T) {
		closeRange = func(uint, uint, uint) error { return syscall.ENOSYS } // a kernel before 5.9
		closesInherited(t)
	})
}

func closesInherited(t *testing.T) {
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0) // as a parent process leaves one: no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	seen := func() bool {
		return exec.Command("/bin/sh", "-c", fmt.Sprintf("test -e /proc/self/fd/%d", fd)).Run() == nil
	}
	if !seen() {
		t.Fatalf("a child does not see inherited fd %d even before: the test proves nothing", fd)
	}
	CloseInheritedOnExec()
	if seen() {
		t.Errorf("a child still gets inherited fd %d", fd)
	}
}
