//go:build linux && (386 || arm || mips || mipsle)

package sshd

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// utimesTime64 sets the access and modification times of p, in seconds, with
// utimensat_time64(2) (Linux 5.1), whose times are 64-bit on 32-bit
// architectures too: unix.UtimesNano and os.Chtimes pass a 32-bit time_t here,
// which cannot hold a time after 2038. It gives ENOSYS on an older kernel.
func utimesTime64(p string, atime, mtime int64) error {
	path, err := unix.BytePtrFromString(p)
	if err != nil {
		return err
	}
	ts := [2]struct{ sec, nsec int64 }{{atime, 0}, {mtime, 0}} // struct __kernel_timespec
	dirfd := unix.AT_FDCWD
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT_TIME64, uintptr(dirfd), uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
