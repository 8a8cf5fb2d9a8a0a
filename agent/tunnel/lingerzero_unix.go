//go:build unix

package tunnel

import "syscall"

// lingerZero sets SO_LINGER 0 on a socket: its close sends a reset (see
// Targets.dialService).
func lingerZero(fd uintptr) {
	syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
}
