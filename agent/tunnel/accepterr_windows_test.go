package tunnel

import (
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/windows"
)

// On Windows a listener out of sockets fails Accept with Winsock's numbers
// (WSASocket's WSAEMFILE or WSAENOBUFS, as net wraps them), never with
// syscall.EMFILE or ENOBUFS, which Go invents there: the accept loop must wait
// them out as it does EMFILE on Linux, not stop accepting with the port open.
func TestTemporaryAcceptErrorWinsock(t *testing.T) {
	for _, e := range []syscall.Errno{windows.WSAEMFILE, windows.WSAENOBUFS, windows.WSAECONNABORTED} {
		for _, err := range []error{
			&net.OpError{Op: "accept", Net: "tcp", Err: e},
			&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("acceptex", e)},
		} {
			if !TemporaryAcceptError(err) {
				t.Errorf("%v (errno %d) is not retried", err, uintptr(e))
			}
		}
	}
	if TemporaryAcceptError(&net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}) {
		t.Error("a closed listener is retried")
	}
}
