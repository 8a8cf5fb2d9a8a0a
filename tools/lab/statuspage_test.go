package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// TestStatusPageCutsIdleConnections: a keep-alive connection left idle after a
// GET / is closed after the timeout; the status page held it for good, a
// goroutine and a descriptor each, for as long as the client liked.
func TestStatusPageCutsIdleConnections(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr, stop, err := serveStatusPage(timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("GET / = %s (close %v), want 200 on a keep-alive connection", resp.Status, resp.Close)
	}
	start := time.Now()
	c.SetReadDeadline(start.Add(timeout + 5*time.Second))
	if b, err := io.ReadAll(br); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle connection still open after %v (read %q), want it cut after %v", time.Since(start), b, timeout)
	}
}
