//go:build unix

package agent

import (
	"os"
	"syscall"
)

// errLockHeld is lockNoWait's error for a lock another process holds.
var errLockHeld error = syscall.EWOULDBLOCK

// lockNoWait takes an exclusive flock(2) on f without waiting. It ends when f
// is closed, or with the process.
func lockNoWait(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// removeLocked removes the lock file at path, whose lock f holds, and lets
// go of it: the name goes first, so that whoever locks path next locks a new
// file (flockPath sees the old one gone).
func removeLocked(path string, f *os.File) {
	os.Remove(path)
	f.Close()
}
