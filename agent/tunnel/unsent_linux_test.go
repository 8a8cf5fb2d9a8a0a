package tunnel

import (
	"net"
	"syscall"
	"testing"
)

// wrapped is a connection in a wrapper that names it, as the agent's
// countingConn.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// TestBoundUnsentReachesWrappedConnection: the bound is set on a TCP
// connection under a wrapper that names it, as the agent's target
// connections are.
func TestBoundUnsentReachesWrappedConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	boundUnsent(wrapped{c}, true)
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	rc.Control(func(fd uintptr) {
		got, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotsentLowat)
	})
	if gerr != nil || got != unsentBound {
		t.Fatalf("TCP_NOTSENT_LOWAT is %d (%v); want %d", got, gerr, unsentBound)
	}
}
