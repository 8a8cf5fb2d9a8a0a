package agent

import (
	"os"

	"golang.org/x/sys/windows"
)

// errLockHeld is lockNoWait's error for a lock another process holds.
var errLockHeld error = windows.ERROR_LOCK_VIOLATION

// lockNoWait takes an exclusive lock on f without waiting. It ends when f is
// closed, or with the process. It locks one byte far beyond anything written
// (Windows' locks are mandatory), so that others can still read the file:
// the holder's pid in a token's lock file.
func lockNoWait(f *os.File) error {
	ol := windows.Overlapped{OffsetHigh: 0x7fffffff}
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
}
