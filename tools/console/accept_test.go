//go:build unix

package console

import (
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
)

// enobufsListener fails its first Accept with ENOBUFS, as accept(2) does when
// the kernel is out of socket buffers for a moment.
type enobufsListener struct {
	net.Listener
	failed bool
}

func (l *enobufsListener) Accept() (net.Conn, error) {
	if !l.failed {
		l.failed = true
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.ENOBUFS)}
	}
	return l.Listener.Accept()
}

// TestServeWaitsOutENOBUFS: one ENOBUFS from accept(2) does not end Serve, as
// net/http's Serve alone would (it waits out only EMFILE and ENFILE).
func TestServeWaitsOutENOBUFS(t *testing.T) {
	s := testServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(&enobufsListener{Listener: l}) }()
	resp, err := http.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatalf("after ENOBUFS: %v", err)
	}
	resp.Body.Close()
	s.Close()
	if err := <-served; err != ErrServerClosed {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
}
