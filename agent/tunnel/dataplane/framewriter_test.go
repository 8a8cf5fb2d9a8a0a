package dataplane

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// writeCounter counts the writes to the connections its listener accepts.
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{c, &l.writes}, nil
}

type countedConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestFrameWriterOneWritePerFrame: a relayed frame of the largest size goes to
// the socket in one write, with and without TLS (the library's own 4 KiB buffer
// took two; crypto/tls alone writes each 16 KiB record by itself).
func TestFrameWriterOneWritePerFrame(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) { oneWritePerFrame(t, withTLS) })
	}
}

func oneWritePerFrame(t *testing.T, withTLS bool) {
	payload := bytes.Repeat([]byte{7}, 2+tunnel.MaxMessageSize)
	var before, after int64
	done := make(chan struct{})
	srv := httptest.NewUnstartedServer(nil)
	counter := &writeCounter{Listener: srv.Listener}
	srv.Listener = counter
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		ws, err := websocket.Accept(withFrameWriter(&recorder{ResponseWriter: w}, &conn{}), r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.CloseNow()
		time.Sleep(100 * time.Millisecond) // let the 101 go out first
		before = counter.writes.Load()
		if err := ws.Write(r.Context(), websocket.MessageBinary, payload); err != nil {
			t.Error(err)
		}
		after = counter.writes.Load()
	})
	url := ""
	opts := &websocket.DialOptions{}
	if withTLS {
		srv.Listener = BatchingListener(counter)
		srv.StartTLS()
		url = "wss" + strings.TrimPrefix(srv.URL, "https")
		opts.HTTPClient = srv.Client()
	} else {
		srv.Start()
		url = "ws" + strings.TrimPrefix(srv.URL, "http")
	}
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(2 * maxWebSocketMessage)
	_, got, err := c.Read(ctx)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("read %d octets, %v; want the %d sent", len(got), err, len(payload))
	}
	<-done
	if n := after - before; n != 1 {
		t.Errorf("a %d-octet frame took %d writes, want 1", len(payload), n)
	}
}

// TestFrameWriterNeedsAHijacker: a writer that cannot be hijacked is left as it
// is, so that websocket.Accept refuses before writing a 101.
func TestFrameWriterNeedsAHijacker(t *testing.T) {
	rec := &recorder{ResponseWriter: httptest.NewRecorder()}
	if w := withFrameWriter(rec, &conn{}); w != http.ResponseWriter(rec) {
		t.Fatalf("withFrameWriter over a writer that cannot be hijacked = %T, want the recorder", w)
	}
}
