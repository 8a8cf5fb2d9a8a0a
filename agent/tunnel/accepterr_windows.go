package tunnel

import (
	"errors"

	"golang.org/x/sys/windows"
)

// acceptRetryErrnos are the failures of Winsock's accept (WSASocket, AcceptEx)
// that go away by themselves (TemporaryAcceptError). They are Winsock's own
// numbers: syscall.EMFILE, ENOBUFS and ECONNABORTED are values the Go runtime
// invents on Windows, which no socket call returns.
var acceptRetryErrnos = []error{windows.WSAEMFILE, windows.WSAENOBUFS, windows.WSAECONNABORTED}

// errAddrInUse is bind's error for an address another socket holds:
// Winsock's WSAEADDRINUSE (syscall.EADDRINUSE is a value Go invents here).
var errAddrInUse error = windows.WSAEADDRINUSE

// acceptRetryable reports whether err, from Accept, is one of acceptRetryErrnos.
func acceptRetryable(err error) bool {
	for _, e := range acceptRetryErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// errConnReset is a read's error on a connection its peer reset: Winsock's
// WSAECONNRESET (syscall.ECONNRESET is a value Go invents here).
var errConnReset error = windows.WSAECONNRESET
