package tunnel_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// readUntilFailed reads c until it fails and returns how it ended (io.EOF for a
// clean end).
func readUntilFailed(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		err = io.EOF
	}
	return err
}

// An upload the operator's client aborts (a reset) reaches the device's
// service as a reset, as it would directly, not as the upload's end: an upload
// with no length of its own (nc, HTTP ended by the close) looked whole after
// being cut short.
func TestClientResetReachesTheTarget(t *testing.T) {
	res := make(chan error, 1)
	target := tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		time.Sleep(300 * time.Millisecond) // the client's reset comes before the data is read
		res <- readUntilFailed(c)
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

// A client's connection reset while another shares its V3 stream (a browser's
// connections to one web UI) ends alone: the protocol has no reset of one
// connection, and a STREAM_RESET would cut the others.
func TestResetOfOneConnectionLeavesItsStreamsOthers(t *testing.T) {
	ended := make(chan struct{}, 2) // a target connection's end
	target := tunneltest.ServeTCP(t, func(c net.Conn) {
		io.Copy(c, c)
		c.Close()
		ended <- struct{}{}
	})
	h := newHarness(t, setup{services: []string{"WEB"}, targets: tunnel.Targets{"WEB": target}})
	echo := func(c net.Conn, s string) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(s)); err != nil {
			return err
		}
		b := make([]byte, len(s))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != s {
			return fmt.Errorf("echo %q: %v", b, err)
		}
		return nil
	}
	kept, err := net.Dial("tcp", h.addr("WEB"))
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	reset, err := net.Dial("tcp", h.addr("WEB"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{kept, reset} {
		if err := echo(c, "both open"); err != nil {
			t.Fatal(err)
		}
	}
	reset.(*net.TCPConn).SetLinger(0)
	reset.Close()
	// Until the reset has crossed: the device ended a target connection. (A
	// fixed 200 ms was too short on a slow machine, and kept's echo then
	// passed before any reset had reached the destination.)
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		t.Fatal("no target connection ended 20 s after a client's connection was reset")
	}
	if err := echo(kept, "still here"); err != nil {
		t.Fatalf("after another connection of its stream was reset: %v", err)
	}
}

// A device's service that resets its stream's only connection while the
// operator's client opens another (a browser's next request) must not cut the
// new one: its CONNECTION_START may be on its way, and a destination's
// STREAM_RESET would reset it. (The reset itself then ends plainly at the
// client: see README, "cut short".)
func TestNewConnectionNotCutByAnothersReset(t *testing.T) {
	got := make(chan net.Conn, 1)
	target := tunneltest.ServeTCP(t, func(c net.Conn) {
		b := make([]byte, 5)
		if _, err := io.ReadFull(c, b); err != nil {
			c.Close()
			return
		}
		if string(b) == "wait!" {
			c.Write([]byte("ok"))
			got <- c
			return
		}
		io.Copy(c, c)
		c.Close()
	})
	h := newHarness(t, setup{services: []string{"WEB"}, targets: tunnel.Targets{"WEB": target}})
	const rounds = 20
	cut := 0
	for i := 0; i < rounds; i++ {
		a, err := net.Dial("tcp", h.addr("WEB"))
		if err != nil {
			t.Fatal(err)
		}
		a.Write([]byte("wait!"))
		io.ReadFull(a, make([]byte, 2))
		ac := <-got
		b, err := net.Dial("tcp", h.addr("WEB"))
		if err != nil {
			t.Fatal(err)
		}
		ac.(*net.TCPConn).SetLinger(0) // the service resets the first as the second opens
		ac.Close()
		b.SetDeadline(time.Now().Add(5 * time.Second))
		b.Write([]byte("echo!hello"))
		if _, err := io.ReadFull(b, make([]byte, 5)); err != nil {
			cut++
			t.Logf("round %d: the new connection: %v", i, err)
		}
		a.Close()
		b.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if cut > 0 {
		t.Errorf("%d of %d new connections were cut by another connection's reset", cut, rounds)
	}
}
