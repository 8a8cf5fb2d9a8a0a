package console

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// serveTest serves s on a loopback port until the test ends and returns its
// address. At the end it waits for its connections' goroutines, which Close
// does not (one that answered 431 lingers for 500 ms).
func serveTest(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	hook := s.http.ConnState
	s.http.ConnState = func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			conns.Done()
		}
		if hook != nil {
			hook(c, st)
		}
	}
	served := make(chan struct{})
	go func() { defer close(served); s.Serve(ln) }()
	t.Cleanup(func() { s.Close(); <-served; conns.Wait() })
	return ln.Addr().String()
}

// TestHeldConnectionsAreCut: anyone who reaches the console can open a
// connection without the access token (the page is public, the token is checked
// once the headers are read). The console must not hold one for as long as its
// client likes, a goroutine and a descriptor each: enough of them and it served
// nobody, the operators' page included.
func TestHeldConnectionsAreCut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cfg := Config{readTimeout: timeout, idleTimeout: timeout}
	stalledPost := "POST /api/tunnels HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"

	t.Run("idle after GET /", func(t *testing.T) {
		c := testenv.IdleAfterGet(t, serveTest(t, newTestServer(t, cfg)))
		defer c.Close()
		testenv.MustBeCut(t, c, timeout)
	})

	// The token is refused before the body is read; net/http then reads what
	// is left of it before the next request.
	t.Run("body never sent", func(t *testing.T) {
		addr := serveTest(t, newTestServer(t, cfg))
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, stalledPost, addr)
		testenv.MustBeCut(t, c, timeout)
	})

	t.Run("body never sent over TLS", func(t *testing.T) {
		cert := httptest.NewUnstartedServer(nil) // for its certificate for 127.0.0.1
		cert.StartTLS()
		cert.Close()
		cfg := cfg
		cfg.TLS = &tls.Config{Certificates: cert.TLS.Certificates}
		addr := serveTest(t, newTestServer(t, cfg))
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, stalledPost, addr)
		testenv.MustBeCut(t, c, timeout)
	})
}

// TestUnreadResponsesAreCut: a client that pipelines requests and never reads
// the answers fills the socket buffers, and the console's write of the next
// answer blocks. Without a write timeout it held that connection for as long as
// the client liked (zero-window probes are answered): the read timeouts do not
// help, the console is not reading.
func TestUnreadResponsesAreCut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	// xterm.js of 1 MiB: 100 MiB of answers, far more than the socket buffers hold.
	vendor := standInVendor()
	vendor["xterm.js"] = &fstest.MapFile{Data: []byte(strings.Repeat("/", 1<<20))}
	s, err := New(Config{AccessToken: "the-access-token", Vendor: vendor, writeTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	s.http.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			close(closed)
		}
	}
	addr := serveTest(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := fmt.Sprintf("GET /vendor/xterm.js HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	if _, err := io.WriteString(c, strings.Repeat(req, 100)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(timeout + 10*time.Second):
		t.Fatalf("a connection whose client does not read its answers is still open after %v (write timeout %v)", timeout+10*time.Second, timeout)
	}
}

// TestLargeHeadersRefused: a request's headers are held in memory until its
// body has been read; net/http's limit (1 MiB) let each stalled request hold a
// MiB. A browser's request, with some other site's cookies for the host, passes.
func TestLargeHeadersRefused(t *testing.T) {
	addr := serveTest(t, testServer(t))
	for _, tc := range []struct {
		name string
		size int
		want int
	}{
		{"a browser's", 16 << 10, http.StatusOK},
		{"100 KiB", 100 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
			for i := 0; i < tc.size/1024; i++ {
				req.AddCookie(&http.Cookie{Name: fmt.Sprintf("c%d", i), Value: strings.Repeat("v", 1000)})
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("GET / with %d KiB of cookies: %s, want %d", tc.size>>10, resp.Status, tc.want)
			}
		})
	}
}
