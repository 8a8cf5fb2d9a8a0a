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
	ol := windows.Overlapped{OffsetHigh: lockOffsetHigh}
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
}

// lockOffsetHigh places the locked byte: far beyond anything written.
const lockOffsetHigh = 0x7fffffff

// removeLocked removes the lock file at path, whose lock f holds, and lets
// go of it. Windows cannot remove a file while it is open (Go opens files
// without FILE_SHARE_DELETE), f included: it is closed first. The removal
// then fails, and the file stays, if another has opened it meanwhile to take
// the lock: as on Unix, the lock held is on the file path names. The lock is
// let go of explicitly: Windows frees a closed handle's locks in its own time,
// and the next porthole connect (the next ssh's) waits for it.
func removeLocked(path string, f *os.File) {
	ol := windows.Overlapped{OffsetHigh: lockOffsetHigh}
	windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
	f.Close()
	os.Remove(path)
}
