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
// every thread of the process). The thread is never unlocked: it ends with
// the goroutine, and nothing else ever runs with its credentials. New threads
// are not cloned from a locked one (the runtime starts them from its template
// thread), so none inherits them either.
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
		done <- syscall.Kill(-pgid, sig)
	}()
	return <-done
}
