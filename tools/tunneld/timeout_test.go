package tunneld

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// TestStalledBodyIsCut sends a request's headers and one byte of its 100-byte body,
// then nothing: the server must give up on it after the read timeout, not hold the
// connection for as long as the client likes. The request passes every check made
// before the body (its Host is the server's address): one refused before its body
// is answered and closed at once (hangUp), read timeout or not, and so was this
// one while it named Host "tunneld".
func TestStalledBodyIsCut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := startServer(t, Config{AllowUnsigned: true, readTimeout: timeout})
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: "+ts.addr+"\r\nContent-Type: "+contentType+
		"\r\nX-Amz-Target: "+targetPrefix+"ListTunnels\r\nContent-Length: 100\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(timeout + 5*time.Second))
	b, err := io.ReadAll(c) // whatever the server answers, it must then hang up
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection with a stalled body still open after %v (read %q), want it cut after %v", time.Since(start), b, timeout)
	}
	if d := time.Since(start); d > timeout+2*time.Second || d < timeout/2 {
		t.Errorf("stalled body cut after %v (answer %q), want about %v: the body was waited for", d, b, timeout)
	}
	t.Logf("cut after %v: %q, %v", time.Since(start), b, err)
}

// TestWebSocketOutlivesReadTimeout guards the read timeout's known hazard: the
// data-plane WebSockets are hijacked requests that live for hours, and must not be
// cut by a timeout meant for one request. It passes without the read timeout too;
// it fails if the timeout is ever enforced in a way the hijack does not undo (a
// listener that times its connections, say: tried, both subtests fail), or if
// net/http stops clearing deadlines in http.Hijacker (conn.hijackLocked).
func TestWebSocketOutlivesReadTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := startServer(t, Config{readTimeout: timeout})

	t.Run("client", func(t *testing.T) {
		out := ts.open(t, "dev1", "SSH")
		ws, status, body := dialWS(t, ts.addr, "source", out.SourceAccessToken, "")
		if status != 101 {
			t.Fatalf("source: %d %s", status, body)
		}
		// Read, and so answer control frames, until the end of the test.
		readErr := make(chan error, 1)
		go func() {
			for {
				if _, _, err := ws.Read(context.Background()); err != nil {
					readErr <- err
					return
				}
			}
		}()
		defer func() { ws.CloseNow(); <-readErr }()
		time.Sleep(3 * timeout)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ws.Ping(ctx); err != nil {
			t.Fatalf("ping %v after the upgrade, past the read timeout of %v: %v", 3*timeout, timeout, err)
		}
	})

	// An upgrade that announces a body it never sends (Content-Length: 1): net/http
	// then has no background read to abort at the hijack (which also clears the read
	// deadline), so only the clearing of deadlines in http.Hijacker stands between
	// the WebSocket and the read timeout.
	t.Run("no background read", func(t *testing.T) {
		out := ts.open(t, "dev2", "SSH")
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /tunnel?local-proxy-mode=source HTTP/1.1\r\nHost: tunneld\r\n"+
			"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: "+dataplane.SubprotocolV3+"\r\n"+
			"access-token: "+out.SourceAccessToken+"\r\nContent-Length: 1\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.SetReadDeadline(start.Add(4 * timeout))
		b, err := io.ReadAll(c) // the 101, SERVICE_IDS, then silence until our deadline
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 101 ")) {
			t.Fatalf("handshake answered %q, %v", b, err)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("WebSocket cut after %v (%v), want it open past the read timeout of %v", time.Since(start), err, timeout)
		}
	})
}

// TestUnreadResponsesAreCut: a client that pipelines requests and never reads
// the answers fills the socket buffers, and the server's write of the next
// response blocks. Without a write timeout that connection, its goroutine and
// its descriptor are held for as long as the client likes (zero-window probes
// are answered), by anyone who can reach the port, authenticated or not: the
// read timeouts do not help, the server is not reading.
func TestUnreadResponsesAreCut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s, err := New(Config{AllowUnsigned: true, readTimeout: timeout, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	s.hs.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			close(closed)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	defer func() { s.Close(); <-done }()

	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// Each request is answered with a 404 that quotes its 16 KiB path: 16 MiB of
	// answers, far more than the socket buffers hold.
	req := fmt.Sprintf("GET /%s HTTP/1.1\r\nHost: tunneld\r\n\r\n", strings.Repeat("a", 16<<10))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for range 1000 {
			if _, err := c.Write([]byte(req)); err != nil {
				return
			}
		}
	}()
	defer func() { c.Close(); <-wrote }()
	select {
	case <-closed:
	case <-time.After(10*timeout + 5*time.Second):
		t.Fatalf("a connection whose client does not read its answers is still open after %v (read timeout %v)", 10*timeout+5*time.Second, timeout)
	}
}
