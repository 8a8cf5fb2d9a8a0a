package tunnel

import (
	"syscall"
	"unsafe"
)

// unsent is how many of the bytes written to c its kernel has yet to send or
// to see acknowledged (SIOCOUTQ, which is TIOCOUTQ), or -1 if it cannot tell.
func unsent(c syscall.Conn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	rc.Control(func(fd uintptr) {
		var v int32
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&v))); e == 0 {
			n = int(v)
		}
	})
	return n
}
