package wsstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns the server's end of a WebSocket on loopback, with read limit
// limit, and the client's end.
func pair(t *testing.T, limit int64) (server, client *websocket.Conn) {
	t.Helper()
	accepted := make(chan *websocket.Conn, 1)
	done := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		c.SetReadLimit(limit)
		accepted <- c
		<-done
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() {
		client.CloseNow()
		server.CloseNow()
		close(done)
		hs.Close()
	})
	return server, client
}

// TestLimitAndEndMessage: Read returns a message of Limit bytes, then calls
// EndMessage before it waits for the next message; a message of Limit+1 bytes is
// ErrTooBig, with none of its bytes past Limit returned.
func TestLimitAndEndMessage(t *testing.T) {
	const limit = 1000
	server, client := pair(t, limit)
	var ends []int // bytes read when EndMessage was called
	read := 0
	s := &Stream{Ctx: context.Background(), WS: server, Limit: limit, EndMessage: func() error {
		ends = append(ends, read)
		return nil
	}}
	ctx := context.Background()
	whole := bytes.Repeat([]byte{1}, limit)
	for _, m := range [][]byte{whole[:10], whole, append(whole, 2)} {
		if err := client.Write(ctx, websocket.MessageBinary, m); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 300)
	for {
		n, err := s.Read(buf)
		if bytes.IndexByte(buf[:n], 2) >= 0 {
			t.Fatalf("Read returned byte %d of a %d-byte message", limit+1, limit+1)
		}
		read += n
		if err != nil {
			if !errors.Is(err, ErrTooBig) {
				t.Fatalf("Read = %v, want ErrTooBig", err)
			}
			break
		}
	}
	if want := []int{10, 10 + limit}; len(ends) != 2 || ends[0] != want[0] || ends[1] != want[1] {
		t.Errorf("EndMessage called after %v bytes, want %v", ends, want)
	}
	if read > 10+2*limit {
		t.Errorf("read %d bytes, want at most %d", read, 10+2*limit)
	}
}

// TestEndMessageError: an error from EndMessage is Read's.
func TestEndMessageError(t *testing.T) {
	server, client := pair(t, 100)
	stop := errors.New("stop")
	s := &Stream{Ctx: context.Background(), WS: server, EndMessage: func() error { return stop }}
	if err := client.Write(context.Background(), websocket.MessageBinary, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(s); string(b) != "abc" || !errors.Is(err, stop) {
		t.Fatalf("ReadAll = %q, %v; want abc and the EndMessage error", b, err)
	}
}
