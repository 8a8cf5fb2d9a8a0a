package tunnel_test

import "syscall"

// smallSocketBuffers sets a socket's receive and send buffers to n bytes.
// Windows names a socket by a Handle, not an int.
func smallSocketBuffers(fd uintptr, n int) error {
	h := syscall.Handle(fd)
	if err := syscall.SetsockoptInt(h, syscall.SOL_SOCKET, syscall.SO_RCVBUF, n); err != nil {
		return err
	}
	return syscall.SetsockoptInt(h, syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
}
