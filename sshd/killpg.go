package sshd

import (
	"runtime"
	"syscall"
)

// killpgAs sends sig to process group pgid as OpenSSH's session_signal_req
// does: with the effective user id of the session's user (cred; nil when the
// program runs with the server's own ids) and the real user id still root.
// The kernel then lets it reach what the user's own processes and setuid-root
// programs run, but not the processes of another user that a program in the
// group became (an "su bob" started without job control), which a signal sent
// with root's privileges would reach as well.
//
// Credentials are per thread to the kernel, so the effective id is changed on
// one locked thread only, by the raw system call (syscall.Setresuid changes
// every thread of the process), and set back to root's before the thread is
// let go (the saved id, root's, allows it). Should that fail, the thread stays
// locked, and ends with the goroutine. (The change also clears the process's
// dumpable flag: for a root process, that only stops core dumps.)
func killpgAs(pgid int, sig syscall.Signal, cred *syscall.Credential) error {
	if cred == nil || cred.Uid == 0 {
		return syscall.Kill(-pgid, sig)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// -1 leaves the real and saved ids as they are.
		if _, _, errno := syscall.RawSyscall(sysSetresuid, ^uintptr(0), uintptr(cred.Uid), ^uintptr(0)); errno != 0 {
			done <- errno
			return
		}
		err := syscall.Kill(-pgid, sig)
		if _, _, errno := syscall.RawSyscall(sysSetresuid, ^uintptr(0), 0, ^uintptr(0)); errno == 0 {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}
