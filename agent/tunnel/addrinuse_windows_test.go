package tunnel

import (
	"errors"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/windows"
)

// TestAddrInUseWinsock: on Windows a bind to an address another socket holds fails with Winsock's
// WSAEADDRINUSE (10048), as net wraps it; syscall.EADDRINUSE is a value Go
// invents there, which no socket call returns. listenMapping's warning that
// [::1] with the port is another program's (a dev server on ::1 only) must
// come on Windows too.
func TestAddrInUseWinsock(t *testing.T) {
	err := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", windows.WSAEADDRINUSE)}
	if !errors.Is(err, errAddrInUse) {
		t.Errorf("%v (errno %d) is not taken for an address in use", err, uintptr(windows.WSAEADDRINUSE))
	}
}
