//go:build unix

package tunnel_test

import "syscall"

// smallSocketBuffers sets a socket's receive and send buffers to n bytes.
func smallSocketBuffers(fd uintptr, n int) error {
	if err := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n); err != nil {
		return err
	}
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
}
