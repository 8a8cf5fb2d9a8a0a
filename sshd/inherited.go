package sshd

import (
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The seams of CloseInheritedOnExec, for tests: close_range(2), and the
// directory that lists this process's descriptors.
var (
	closeRange = unix.CloseRange
	procSelfFD = "/proc/self/fd"
)

// CloseInheritedOnExec marks every descriptor above 2 that the process
// inherited (from an init script, a shell, a supervisor) close-on-exec, so
// that the commands the server starts get only their stdin, stdout and
// stderr, as OpenSSH's sshd gives them (closefrom before exec). Go opens its
// own descriptors close-on-exec but leaves inherited ones as they are; a login
// would otherwise hold, say, the supervisor's pipe open, or read a file its
// user may not open. close_range(2) (Linux 5.11) does it without /proc, which
// a minimal root file system (early boot, a chroot) may not have mounted: the
// descriptors then went to every login. Older kernels list them in /proc.
// (Here, not in the porthole command: a package that imports x/sys/unix
// already, so that the device binary's code keeps its order; docs/size.md.)
func CloseInheritedOnExec() {
	if closeRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	fds, err := os.ReadDir(procSelfFD)
	if err != nil {
		return // no /proc either: nothing to go by
	}
	for _, e := range fds {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
