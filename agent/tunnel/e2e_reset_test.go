package tunnel_test

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// readToReset reads c until it fails and returns the bytes read and how it
// ended.
func readToReset(c net.Conn) (int64, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err == nil {
		err = io.EOF
	}
	return n, err
}

// A service that resets its connection mid-answer (a CGI killed, SO_LINGER 0)
// reaches the operator's client as a reset, as it would directly: it came as
// a clean end, so an answer with no length of its own (nc, HTTP ended by the
// close) looked whole after being cut short.
func TestTargetResetReachesTheClient(t *testing.T) {
	target := tunneltest.ServeTCP(t, func(c net.Conn) {
		c.Read(make([]byte, 100))
		c.Write(make([]byte, 2<<20))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	h := newHarness(t, setup{services: []string{"WEB"}, targets: tunnel.Targets{"WEB": target}})
	c, err := net.Dial("tcp", h.addr("WEB"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET"))
	if n, err := readToReset(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the client read %d bytes of an answer its service reset, then %v; want a reset", n, err)
	}
}

// The other way: an upload the operator's client aborts (a reset) reaches the
// device's service as a reset, not as the upload's end.
func TestClientResetReachesTheTarget(t *testing.T) {
	res := make(chan error, 1)
	target := tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		time.Sleep(300 * time.Millisecond) // the client's reset comes before the data is read
		_, err := readToReset(c)
		res <- err
	})
	h := newHarness(t, setup{services: []string{"WEB"}, targets: tunnel.Targets{"WEB": target}})
	c, err := net.Dial("tcp", h.addr("WEB"))
	if err != nil {
		t.Fatal(err)
	}
	c.Write(make([]byte, 2<<20))
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	if err := <-res; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the service read an upload its client reset to %v; want a reset", err)
	}
}

// A connection reset while another shares its V3 stream (a browser's
// connections to one web UI) ends alone: the protocol has no reset of one
// connection, and a STREAM_RESET would cut the others.
func TestResetOfOneConnectionLeavesItsStreamsOthers(t *testing.T) {
	first := make(chan struct{})
	target := tunneltest.ServeTCP(t, func(c net.Conn) {
		b := make([]byte, 5)
		if _, err := io.ReadFull(c, b); err != nil {
			c.Close()
			return
		}
		if string(b) == "reset" {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			return
		}
		close(first)
		io.Copy(c, c) // the other: an echo
		c.Close()
	})
	h := newHarness(t, setup{services: []string{"WEB"}, targets: tunnel.Targets{"WEB": target}})
	echo, err := net.Dial("tcp", h.addr("WEB"))
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	echo.Write([]byte("echo!"))
	<-first
	r, err := net.Dial("tcp", h.addr("WEB"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Write([]byte("reset"))
	if _, err := readToReset(r); err == nil {
		t.Fatal("the reset connection did not end")
	}
	echo.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := echo.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len("still here"))
	if _, err := io.ReadFull(echo, b); err != nil || string(b) != "still here" {
		t.Fatalf("after another connection of its stream was reset, the echo read %q, %v", b, err)
	}
}
