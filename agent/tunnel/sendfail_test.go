package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestFailedSendResetsTheLocalConnection: a link whose DATA cannot be sent
// (the WebSocket lost, or the agent stopping) has had its local connection
// cut short, and closes it as teardown would, with a TCP reset. It closed it
// with a FIN before teardown came: an upload to a target that answered as it
// read (an echo, progress lines) ended with a clean EOF at the target, a
// truncated upload that looked whole.
func TestFailedSendResetsTheLocalConnection(t *testing.T) {
	agentEnd, targetEnd := tcpPair(t)
	s := failingSession()
	l := startLink(s, agentEnd)

	// The target answers; the link reads it and cannot send it on.
	if _, err := targetEnd.Write([]byte("42% done\n")); err != nil {
		t.Fatal(err)
	}
	checkReset(t, s, l.done, targetEnd, "the failed send (a FIN: a cut upload looks whole)")
}

// TestFailedSendAfterPeersEndKeepsTheFIN: a link the peer has ended, all of
// whose data is with the kernel, is not cut short when its last send fails
// (the target answered as the peer's end came, and the WebSocket was lost):
// its local connection is closed with a FIN, and the target reads the data,
// then a clean EOF, as when the session's end finds it so (link.cut). Reset,
// it lost what its kernel still held.
func TestFailedSendAfterPeersEndKeepsTheFIN(t *testing.T) {
	agentEnd, targetEnd := tcpPair(t)
	ws := heldWrite{entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := sessionWriting(ws)
	l := startLink(s, agentEnd)
	defer s.teardown()
	released := false
	release := func() {
		if !released {
			released = true
			close(ws.release)
		}
	}
	defer release() // before teardown, which waits for the send

	// The target answers; the link reads it and is sending it when the
	// peer's last data and end come. The target reads none of it yet: more
	// than its socket takes, so that the rest waits in the agent's kernel.
	if _, err := targetEnd.Write([]byte("got it\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ws.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the link did not send what the target wrote")
	}
	data := make([]byte, linkQueue*MaxPayload)
	rand.Read(data)
	for b := data; len(b) > 0; b = b[MaxPayload:] {
		l.push(payloads.Copy(b[:MaxPayload]))
	}
	s.connectionReset(&Message{Type: TypeConnectionReset, StreamID: 1, ServiceID: "SSH", ConnectionID: 1})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		lingering := l.lingering
		l.mu.Unlock()
		if lingering {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the link did not write the peer's last data to its kernel")
		}
	}
	select {
	case <-l.done:
		t.Fatal("the target's kernel took all of the data before the send failed: the test needs some left in the agent's")
	default:
	}

	release() // the send fails
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the link did not end after its send failed")
	}
	targetEnd.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(targetEnd)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the target read %d of %d bytes, then %v; want all of them and a clean EOF", len(got), len(data), err)
	}
}

// TestFailedStartResetsTheLocalConnection: a source whose STREAM_START cannot
// be sent (the WebSocket lost as the client connected) turns the client away
// with a TCP reset, as it does one that comes while the tunnel is not ready
// (abortConn): closed with a FIN, a raw download (nc > file) was a whole,
// empty one.
func TestFailedStartResetsTheLocalConnection(t *testing.T) {
	client, accepted := tcpPair(t)
	s := failingSession()
	s.version, s.source, s.gotIDs = V3, true, true
	src := &Source{}
	l := src.open(s, serviceRoute{wire: "SSH", name: "SSH"}, accepted)
	if l == nil {
		t.Fatal("open refused the connection before its STREAM_START")
	}
	checkReset(t, s, l.idle, client, "the failed STREAM_START (a FIN: an empty download looks whole)")
}

// checkReset waits for a link of s to end (ended), then reads conn, its local
// connection's other end, after the failure named: the read must fail with a
// TCP reset. s is torn down after the read.
func checkReset(t *testing.T, s *session, ended <-chan struct{}, conn net.Conn, after string) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("the link did not end after %s", after)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := conn.Read(make([]byte, 64))
	s.teardown()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the read after %s: %v; want ECONNRESET", after, err)
	}
}

// tcpPair returns both ends of a loopback TCP connection, closed at the end
// of the test.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// startLink opens, in V3 session s, stream 1 of service SSH with connection
// 1 on conn, as a STREAM_START's dial would.
func startLink(s *session, conn net.Conn) *link {
	s.mu.Lock()
	s.version = V3
	st := &stream{id: 1, target: "SSH", links: map[uint32]*link{}}
	s.streams["SSH"] = st
	l := s.newLinkLocked(st, "SSH", 1)
	s.mu.Unlock()
	l.start(conn, nil)
	return l
}

// failingSession is a session over a WebSocket whose writes fail, as a lost
// one's do.
func failingSession() *session { return sessionWriting(failAfter{syscall.EPIPE}) }

// sessionWriting is a session over a WebSocket that writes to w.
func sessionWriting(w io.Writer) *session { return sessionOver(fakeConn{w: w}) }

// sessionOver is a session over a WebSocket on conn.
func sessionOver(conn net.Conn) *session {
	life, cancel := context.WithCancelCause(context.Background())
	ws := newWSConn(conn, nil, [32]byte{})
	c := &Conn{ws: ws, life: life, cancel: cancel, log: slog.New(slog.DiscardHandler)}
	return newSession(context.Background(), c, engineOptions{chunk: MaxPayload, maxConns: 8, stall: time.Minute,
		log: slog.New(slog.DiscardHandler)})
}

// heldWrite is a WebSocket's writer whose writes wait until release is
// closed, then fail, as a lost connection's do. Each write's start is
// signalled on entered (buffered), if there is room.
type heldWrite struct{ entered, release chan struct{} }

func (h heldWrite) Write([]byte) (int, error) {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	<-h.release
	return 0, syscall.EPIPE
}
