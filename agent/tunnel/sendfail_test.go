package tunnel

import (
	"context"
	"errors"
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
	s.mu.Lock()
	s.version = V3
	st := &stream{id: 1, target: "SSH", links: map[uint32]*link{}}
	s.streams["SSH"] = st
	l := s.newLinkLocked(st, "SSH", 1)
	s.mu.Unlock()
	l.start(agentEnd, nil)

	// The target answers; the link reads it and cannot send it on.
	if _, err := targetEnd.Write([]byte("42% done\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the link did not end after its send failed")
	}
	targetEnd.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := targetEnd.Read(make([]byte, 64))
	s.teardown()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the target's read after the failed send: %v; want ECONNRESET (a FIN: a cut upload looks whole)", err)
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
	select {
	case <-l.idle:
	case <-time.After(10 * time.Second):
		t.Fatal("the link did not end after its STREAM_START failed")
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := client.Read(make([]byte, 64))
	s.teardown()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the client's read after the failed STREAM_START: %v; want ECONNRESET (a FIN: an empty download looks whole)", err)
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

// failingSession is a session over a WebSocket whose writes fail, as a lost
// one's do.
func failingSession() *session {
	life, cancel := context.WithCancelCause(context.Background())
	ws := newWSConn(fakeConn{w: failAfter{syscall.EPIPE}}, nil, [32]byte{})
	c := &Conn{ws: ws, life: life, cancel: cancel, log: slog.New(slog.DiscardHandler)}
	return newSession(context.Background(), c, engineOptions{chunk: MaxPayload, maxConns: 8, stall: time.Minute,
		log: slog.New(slog.DiscardHandler)})
}
