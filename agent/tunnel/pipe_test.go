package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// TestPipeConn runs x/net's net.Conn conformance suite: basic I/O, ping-pong,
// racing reads and writes, deadlines in the past, future and while blocked,
// concurrent method calls, Close unblocking.
func TestPipeConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2 = Pipe()
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

// TestPipeTransfer moves 8 MiB each way at once in odd-sized writes and reads and
// checks both by hash; then a closed end's peer reads what was left, then io.EOF,
// and its writes fail.
func TestPipeTransfer(t *testing.T) {
	a, b := Pipe()
	const size = 8 << 20
	send := func(c net.Conn, data []byte, errc chan<- error) {
		for len(data) > 0 {
			n := min(len(data), 1+len(data)%70001)
			if _, err := c.Write(data[:n]); err != nil {
				errc <- err
				return
			}
			data = data[n:]
		}
		errc <- nil
	}
	recv := func(c net.Conn, want [32]byte, errc chan<- error) {
		h := sha256.New()
		buf := make([]byte, 12345)
		for got := 0; got < size; {
			n, err := c.Read(buf)
			h.Write(buf[:n])
			got += n
			if err != nil {
				errc <- err
				return
			}
		}
		if !bytes.Equal(h.Sum(nil), want[:]) {
			errc <- errors.New("data differs")
			return
		}
		errc <- nil
	}
	ab, ba := make([]byte, size), make([]byte, size)
	rand.Read(ab)
	rand.Read(ba)
	errc := make(chan error, 4)
	go send(a, ab, errc)
	go send(b, ba, errc)
	go recv(b, sha256.Sum256(ab), errc)
	go recv(a, sha256.Sum256(ba), errc)
	for range 4 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}

	if _, err := a.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	got, err := io.ReadAll(b)
	if string(got) != "last words" || err != nil {
		t.Errorf("after the peer's Close: read %q, %v; want the last words, then EOF", got, err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write to a closed peer: %v, want io.ErrClosedPipe", err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read of a closed end: %v, want net.ErrClosed", err)
	}
}

// TestPipeSmallWrites: many small writes share pooled chunks instead of taking a
// chunk each, so a full buffer holds about pipeBuffer octets of memory.
func TestPipeSmallWrites(t *testing.T) {
	a, b := Pipe()
	defer a.Close()
	defer b.Close()
	readOnce(t, a, b)
	piece := bytes.Repeat([]byte("x"), 5000)
	for range pipeBuffer / len(piece) {
		if _, err := a.Write(piece); err != nil {
			t.Fatal(err)
		}
	}
	buf := a.(*pipeEnd).out
	buf.mu.Lock()
	chunks, n := len(buf.chunks), buf.n
	buf.mu.Unlock()
	if want := (n + MaxPayload - 1) / MaxPayload; chunks != want {
		t.Errorf("%d octets buffered in %d chunks, want %d", n, chunks, want)
	}
}

// readOnce writes a byte to a and reads it from b: b's reader has read, so
// the direction may buffer pipeBuffer.
func readOnce(t *testing.T, a, b net.Conn) {
	t.Helper()
	if _, err := a.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

// Until its reader has read, a direction holds pipeUnread octets in a buffer of
// its own, not a pooled payload: an SSH connection waiting for a login slot is
// not read, and a peer could open a hundred of them. Once read, it buffers
// pipeBuffer.
func TestPipeUnreadHoldsLittle(t *testing.T) {
	a, b := Pipe()
	defer a.Close()
	defer b.Close()
	a.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := a.Write(make([]byte, pipeBuffer))
	if n != pipeUnread || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to an unread pipe = %d, %v; want %d and a deadline error", n, err, pipeUnread)
	}
	buf := a.(*pipeEnd).out
	buf.mu.Lock()
	held := 0
	for _, c := range buf.chunks {
		held += cap(c)
	}
	buf.mu.Unlock()
	if held > pipeUnread {
		t.Errorf("an unread pipe holds buffers of %d octets, want at most %d", held, pipeUnread)
	}
	if _, err := io.ReadFull(b, make([]byte, pipeUnread)); err != nil {
		t.Fatal(err)
	}
	a.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := a.Write(make([]byte, pipeBuffer)); n != pipeBuffer || err != nil {
		t.Fatalf("Write to a pipe that was read = %d, %v; want %d", n, err, pipeBuffer)
	}
}
