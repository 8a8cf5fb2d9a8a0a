package tunneld

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingListener counts the connections accepted and not yet closed, and
// the most at once.
type countingListener struct {
	net.Listener
	mu        sync.Mutex
	open, max int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.open++
	l.max = max(l.max, l.open)
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

func (l *countingListener) most() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.max
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// TestConnectionCap: with MaxConnections 2, a tunnel's two WebSockets
// (hijacked connections) hold both places: a third connection, an API
// request, is not served while they are open (accepted, it waits for a place,
// and no other is accepted), and is served once one of them ends and gives its
// place back. No more than 2 connections are ever served at once, and 3 (the
// cap and the one waiting) accepted; without the cap, the third is served at
// once, beside the two.
func TestConnectionCap(t *testing.T) {
	const maxConns = 2
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &countingListener{Listener: inner}
	ts := serveOn(t, Config{MaxConnections: maxConns}, l)
	out := ts.open(t, "dev1", "SSH")
	src, status, body := dialWS(t, ts.addr, "source", out.SourceAccessToken, "")
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("source: %d %s", status, body)
	}
	if _, status, body := dialWS(t, ts.addr, "destination", out.DestinationAccessToken, ""); status != http.StatusSwitchingProtocols {
		t.Fatalf("destination: %d %s", status, body)
	}

	c, err := net.Dial("tcp", ts.addr) // finished by the kernel, in the backlog
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nX-Amz-Target: %sListTunnels\r\n"+
		"Authorization: AWS4-HMAC-SHA256 Credential=x/20261130/us-east-1/IoTSecuredTunneling/aws4_request, SignedHeaders=host, Signature=00\r\n"+
		"Content-Length: 2\r\n\r\n{}", ts.addr, contentType, targetPrefix)
	br := bufio.NewReader(c)
	// Not served while both places are taken. (A wait that can only let the
	// test pass wrongly, on a machine too slow to serve the request within
	// it, never fail it wrongly; the count below does not wait.)
	c.SetReadDeadline(time.Now().Add(time.Second))
	if resp, err := http.ReadResponse(br, nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("%s", resp.Status)
		}
		t.Fatalf("a third connection with 2 WebSockets open and MaxConnections 2: answered (%v), want it to wait", err)
	}

	src.CloseNow() // its place is given back when the server closes its end
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the waiting request after a WebSocket ended: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the waiting request after a WebSocket ended: %s", resp.Status)
	}
	if n := l.most(); n > maxConns+1 {
		t.Errorf("%d connections were accepted at once, over MaxConnections %d and the one waiting for a place", n, maxConns)
	}
}

// TestConnectionCapListenersShareNoIdlePlace: the places are shared by all the
// listeners Serve is given, and a listener with no connection holds none: with
// MaxConnections 1 and two listeners, a request on the second is served while
// nobody connects to the first. (A place taken before the wait in accept left
// each quiet listener holding one for good.)
func TestConnectionCapListenersShareNoIdlePlace(t *testing.T) {
	s, err := New(Config{MaxConnections: 1, AllowUnsigned: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ls [2]*countingListener
	for i := range ls {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls[i] = &countingListener{Listener: inner}
	}
	go s.Serve(ls[0])
	// After a request, the first listener waits in accept again; the second
	// starts serving only then.
	for i, l := range []*countingListener{ls[0], ls[1], ls[0]} {
		if i == 1 {
			go s.Serve(ls[1])
		}
		req, err := http.NewRequest("POST", "http://"+l.Addr().String()+"/", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Amz-Target", targetPrefix+"ListTunnels")
		req.Header.Set("Content-Type", contentType)
		req.Close = true // gives its place back as it ends
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("a request on %s with MaxConnections 1 and no other connection open: %v", l.Addr(), err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("a request on %s: %s", l.Addr(), resp.Status)
		}
	}
}

// TestLimitListenerCloseEndsWait: Close ends an Accept waiting for a place,
// as Shutdown needs.
func TestLimitListenerCloseEndsWait(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sem := make(chan struct{}, 1)
	sem <- struct{}{} // the one place is taken
	var logs syncBuffer
	l := newLimitListener(inner, sem, slog.New(slog.NewTextHandler(&logs, nil)))
	c, err := net.Dial("tcp", inner.Addr().String()) // accepted, then waits for a place
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "connection cap reached"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Accept does not wait for a place")
		}
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the connection accepted while no place was free, after Close: read %v, want EOF", err)
	}
}

// TestLimitListenerWarnsOnceAMinute: reaching the cap is logged at Warn at
// most once a minute (doc.go), so that a flood that keeps the cap reached does
// not fill the log, and again once a minute has passed. warn reads time.Now,
// with no clock to inject, so the minute passes by moving the time of the last
// line back.
func TestLimitListenerWarnsOnceAMinute(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	var logs syncBuffer
	l := newLimitListener(inner, make(chan struct{}, 1), slog.New(slog.NewTextHandler(&logs, nil)))
	back := func(d time.Duration) {
		l.mu.Lock()
		l.warned = l.warned.Add(-d)
		l.mu.Unlock()
	}
	for _, step := range []struct {
		ago  time.Duration // how far the last line is moved back first
		want int           // Warn lines so far
	}{
		{0, 1}, {0, 1}, {0, 1},
		{50 * time.Second, 1},
		{15 * time.Second, 2}, // 65 s after the first line
		{0, 2},
		{30 * time.Second, 2},
		{time.Minute, 3},
	} {
		back(step.ago)
		l.warn()
		if n := strings.Count(logs.String(), "connection cap reached"); n != step.want {
			t.Fatalf("after the cap was reached again with the last line moved %v back: %d Warn lines, want %d:\n%s", step.ago, n, step.want, logs.String())
		}
	}
}
