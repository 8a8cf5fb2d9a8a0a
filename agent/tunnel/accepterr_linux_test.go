//go:build linux

package tunnel

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// accept(2) on Linux passes a new connection's pending network error as its own
// (man 2 accept: "treat them like EAGAIN by retrying": ENETDOWN, EPROTO,
// ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH), and an
// LSM or firewall may refuse one connection with EPERM. None of them is about the
// listener: acceptLoop returned on one, and left porthole connect's -L port open
// and never accepted again (reproduced with strace -e inject=accept4:error=EPROTO:when=1).
func TestTemporaryAcceptErrorPerConnectionErrnos(t *testing.T) {
	for _, e := range []syscall.Errno{syscall.EPROTO, syscall.ENETDOWN, syscall.ENOPROTOOPT, syscall.EHOSTDOWN,
		syscall.ENONET, syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ENETUNREACH, syscall.EPERM} {
		err := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", e)}
		if !TemporaryAcceptError(err) {
			t.Errorf("%v: not retried; the accept loop stops for good", e)
		}
	}
	if TemporaryAcceptError(&net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}) {
		t.Error("a closed listener is retried")
	}
}
