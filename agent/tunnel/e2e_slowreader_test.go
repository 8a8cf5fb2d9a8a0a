package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// A local connection whose reader is slow but steady moves: it must not be
// reset as stalled. Its progress once showed only when a whole payload's
// write returned, and on Linux a write blocked on a full socket buffer
// (autotuned, up to 4 MiB) wakes only once much of that buffer has drained:
// 3.8 s for a reader at 400 KiB/s, longer than the stall timeout below (and,
// at 80 KiB/s, 18 s: any reader slower than ~47 KiB/s, curl --limit-rate,
// a serial bridge, was reset under the default 30 s). The kernel's queue
// (unsent) shows what such a reader takes.

// steadyRead reads the first slowPart of what it is sent slowly, then the
// rest at once, so that each test takes a few seconds.
const slowPart = 3 << 20 / 2

// TestSteadySlowTargetIsNotStalled: an upload to a target that reads
// steadily, never idle for more than a tick, slower than whole writes show:
// before the client's end (the peer's reset) and after it, while the
// destination writes what it still holds (the drain). The destination's
// socket has a fixed send buffer of 2 MiB: its writes block with less of an
// upload than the autotuned one needs, and the reset comes while the target
// still reads slowly.
func TestSteadySlowTargetIsNotStalled(t *testing.T) {
	data := make([]byte, 3<<20)
	rand.Read(data)
	type result struct {
		got []byte
		err error
	}
	done := make(chan result, 1)
	addr := tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		got, err := steadyRead(c)
		done <- result{got, err}
	})
	fixed := tunnel.DialerFunc(func(ctx context.Context, service string) (net.Conn, error) {
		c, err := tunnel.Targets{"SSH": addr}.DialService(ctx, service)
		if err != nil {
			return nil, err
		}
		c.(*net.TCPConn).SetWriteBuffer(1 << 20) // doubled by the kernel
		return c, nil
	})
	h := newHarness(t, setup{services: []string{"SSH"}, targets: fixed,
		dstTweak: func(d *tunnel.Destination) { d.StallTimeout = time.Second }})
	c, err := net.Dial("tcp", h.addr("SSH"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.SetWriteDeadline(time.Now().Add(60 * time.Second))
		if _, err := c.Write(data); err == nil {
			c.(*net.TCPConn).CloseWrite()
		}
	}()
	select {
	case r := <-done:
		if r.err != nil || !bytes.Equal(r.got, data) {
			t.Fatalf("the steadily reading target got %d of %d bytes (equal: %v), then %v; want all of them, then EOF",
				len(r.got), len(data), bytes.Equal(r.got, data[:len(r.got)]), r.err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the target's input did not end")
	}
}

// TestSteadySlowClientIsNotStalled is the same on porthole connect's side: a
// download read steadily, and slowly, by the operator's client: 6 MiB, more
// than the kernel's buffers on the way hold (the source's socket's alone
// grows to 4 MiB), so that the writes to the client block.
func TestSteadySlowClientIsNotStalled(t *testing.T) {
	data := make([]byte, 6<<20)
	rand.Read(data)
	addr := tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		c.Write(data)
	})
	p := stallingSource(t, addr)
	c, err := net.Dial("tcp", p.Addr("SSH"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := steadyRead(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the steadily reading client got %d of %d bytes (equal: %v), then %v; want all of them, then EOF",
			len(got), len(data), bytes.Equal(got, data[:len(got)]), err)
	}
}

// steadyRead reads c to its end: slowPart of it 8 KiB each 20 ms (~400
// KiB/s, for ~4 s; never idle for longer than a tick), then the rest as fast
// as it comes. It returns what it read, and the error that ended it (nil at
// EOF).
func steadyRead(c net.Conn) ([]byte, error) {
	// A small receive buffer, as a slow reader's (the kernel grows it for
	// fast ones): its kernel then opens the window as it reads, and
	// the sender's sees the progress, every 160 ms, not in steps of near
	// a second, too coarse for the stall timeout of 1 s here.
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	var got bytes.Buffer
	buf := make([]byte, 8<<10)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for got.Len() < slowPart {
		n, err := io.ReadFull(c, buf)
		got.Write(buf[:n])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return got.Bytes(), nil
		}
		if err != nil {
			return got.Bytes(), err
		}
		<-tick.C
	}
	_, err := got.ReadFrom(c)
	return got.Bytes(), err
}
