//go:build unix

package console

import (
	"net"
	"net/http"
	"syscall"
	"testing"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// TestServeWaitsOutENOBUFS: one ENOBUFS from accept(2) does not end Serve, as
// net/http's Serve alone would (it waits out only EMFILE and ENFILE).
func TestServeWaitsOutENOBUFS(t *testing.T) {
	s := testServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(testenv.ErrnoListener(l, syscall.ENOBUFS, 1)) }()
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
