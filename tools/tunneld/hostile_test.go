package tunneld

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// countingWriter counts the bytes and lines written to the log.
type countingWriter struct {
	mu           sync.Mutex
	bytes, lines int
	longest      int
	last         string // the last line
	all          strings.Builder
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bytes += len(p)
	w.lines += strings.Count(string(p), "\n")
	w.longest = max(w.longest, len(p))
	w.last = string(p)
	w.all.Write(p)
	return len(p), nil
}

func (w *countingWriter) get() (int, int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bytes, w.lines, w.longest
}

func rawRequest(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return strings.TrimSpace(line)
}

// TestRefusedRequestLogIsBounded: the values a client chose (the operation,
// the access key ID) are cut in the log line of a refused request: anyone who
// reaches the server may send them, before any signature is checked, and the
// text handler writes each byte over 0x7f as four. Headers over 64 KiB are
// refused by net/http (431) before they reach tunneld.
func TestRefusedRequestLogIsBounded(t *testing.T) {
	w := &countingWriter{}
	ts := startServer(t, Config{
		Credentials: map[string]string{"AKIDEXAMPLE": "secret"},
		Logger:      slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})), // as porthole-tunneld
	})
	request := func(junk string) string {
		return "POST / HTTP/1.1\r\nHost: " + ts.addr + "\r\nContent-Length: 0\r\n" +
			"X-Amz-Target: " + targetPrefix + junk + "\r\n" +
			"Authorization: AWS4-HMAC-SHA256 Credential=" + junk + "/20261130/us-east-1/IoTSecuredTunneling/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n"
	}
	req := request(strings.Repeat("\xff", 30<<10))
	if status := rawRequest(t, ts.addr, req); !strings.Contains(status, " 403 ") {
		t.Fatalf("answer %q, want 403 (unrecognized client)", status)
	}
	eventuallyTrue(t, func() bool { _, lines, _ := w.get(); return lines == 1 })
	if n, _, longest := w.get(); longest > 2<<10 {
		t.Errorf("one refused, unauthenticated request of %d bytes wrote a log line of %d bytes: header values reach the log uncut", len(req), n)
	}
	if status := rawRequest(t, ts.addr, request(strings.Repeat("x", 800<<10))); !strings.Contains(status, " 431 ") {
		t.Errorf("answer to 1.6 MB of headers %q, want 431", status)
	}
}

// TestRefusedHandshakeLogIsBounded: a refused handshake's mode, which the
// client chose, is cut in its log line, which is one line, with the reason.
func TestRefusedHandshakeLogIsBounded(t *testing.T) {
	w := &countingWriter{}
	ts := startServer(t, Config{
		Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	junk := strings.Repeat("%FF", 15000) // the query, percent-encoded: 3 bytes on the wire per byte
	req := fmt.Sprintf("GET /tunnel?local-proxy-mode=%s HTTP/1.1\r\nHost: %s\r\naccess-token: x\r\n\r\n", junk, ts.addr)
	if status := rawRequest(t, ts.addr, req); !strings.Contains(status, " 400 ") {
		t.Fatalf("answer %q, want 400", status)
	}
	eventuallyTrue(t, func() bool { _, lines, _ := w.get(); return lines >= 1 })
	time.Sleep(100 * time.Millisecond) // a second line would be written by now
	if n, lines, longest := w.get(); lines != 1 || longest > 2<<10 {
		t.Errorf("one refused handshake of %d bytes wrote %d log lines, %d bytes, the longest %d: want one line, the mode cut", len(req), lines, n, longest)
	}
}

func queuedHeap(t *testing.T, frameSize int) (grew uint64, sent int) {
	ts := startServer(t, Config{Logger: slog.New(slog.DiscardHandler)})
	out := ts.open(t, "dev1", "SSH")
	dst, status, body := dialWS(t, ts.addr, "destination", out.DestinationAccessToken, "")
	if status != 101 {
		t.Fatalf("destination: %d %s", status, body)
	}
	_ = dst // never read
	src, status, body := dialWS(t, ts.addr, "source", out.SourceAccessToken, "")
	if status != 101 {
		t.Fatalf("source: %d %s", status, body)
	}
	go func() { // the source reads (SERVICE_IDS), so only the destination is slow
		for {
			if _, _, err := src.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	start, err := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1})
	if err != nil {
		t.Fatal(err)
	}
	probe, _ := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1})
	var data []byte
	for p := frameSize - len(probe); len(data) != frameSize && p > 0; p-- {
		if data, err = tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1,
			Payload: make([]byte, p)}); err != nil {
			t.Fatal(err)
		}
	}
	if len(data) != frameSize {
		t.Fatalf("frame of %d bytes, want %d", len(data), frameSize)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	ctx := context.Background()
	if err := src.Write(ctx, websocket.MessageBinary, start); err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(done)
		for src.Write(wctx, websocket.MessageBinary, data) == nil {
			n.Add(1)
		}
	}()
	// Until the service stops taking frames.
	for last := int64(-1); ; {
		time.Sleep(500 * time.Millisecond)
		if cur := n.Load(); cur == last {
			break
		} else {
			last = cur
		}
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	cancel()
	<-done
	src.CloseNow()
	dst.CloseNow()
	return ms.HeapAlloc - min(before, ms.HeapAlloc), int(n.Load()) * frameSize
}

// TestSlowReaderQueueIsBounded: the queue of frames for a side that does not
// read holds about its 1 MiB bound, whatever the frames' size. It counted the
// frames' lengths, while each frame from 4 KiB up is read into a 64 KiB buffer:
// 1 MiB of 4 KiB frames held 16 MiB, per side, for any token holder.
func TestSlowReaderQueueIsBounded(t *testing.T) {
	for _, size := range []int{64000, 4096} {
		grew, sent := queuedHeap(t, size)
		t.Logf("frames of %5d bytes: %d bytes sent before backpressure, heap grew by %.1f MiB", size, sent, float64(grew)/(1<<20))
		if grew > 8<<20 {
			t.Errorf("frames of %d bytes to a destination that does not read: the heap grew by %.1f MiB (%d bytes sent); want a few MiB at most (maxQueued is 1 MiB)",
				size, float64(grew)/(1<<20), sent)
		}
	}
}

// TestPipelinedRefusalsLogIsBounded: refusals, which anyone who reaches the
// server can cause with a few bytes each, are logged at a bounded rate, and the
// next line logged says how many were left out.
func TestPipelinedRefusalsLogIsBounded(t *testing.T) {
	w := &countingWriter{}
	ts := startServer(t, Config{Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 2000
	one := "GET /tunnel HTTP/1.1\r\nHost: a\r\n\r\n"
	go io.WriteString(c, strings.Repeat(one, n))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	answers, rd := 0, bufio.NewReader(c)
	for answers < n {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d answers: %v", answers, err)
		}
		if strings.Contains(line, "HTTP/1.1 400 ") { // a body ends without a newline
			answers++
		}
	}
	logged, lines, _ := w.get()
	t.Logf("%d requests, %d bytes sent on one connection: %d log lines, %d bytes", n, n*len(one), lines, logged)
	if lines > 200 {
		t.Errorf("%d refused handshakes wrote %d log lines: no rate limit", n, lines)
	}
	// The next refusal, once the rate allows one, says how many were left out.
	time.Sleep(time.Second)
	rawRequest(t, ts.addr, one)
	eventuallyTrue(t, func() bool {
		_, more, _ := w.get()
		return more > lines
	})
	// Every refusal is logged or counted on a later line: the rate lets some
	// through while the 2000 are answered, each with the count before it.
	w.mu.Lock()
	defer w.mu.Unlock()
	logged, left := 0, 0
	for _, l := range strings.Split(strings.TrimSpace(w.all.String()), "\n") {
		logged++
		if _, c, ok := strings.Cut(l, " suppressed_before="); ok {
			k, _ := strconv.Atoi(strings.Fields(c)[0])
			left += k
		}
	}
	if logged+left != n+1 || !strings.Contains(w.last, "suppressed_before=") {
		t.Errorf("%d refusals: %d logged, %d counted as left out (want %d in all, the last line with a count): last line %q",
			n+1, logged, left, n+1, w.last)
	}
}

// TestHandshakesDoNotSweepEveryTunnel: every handshake and API call runs the
// sweep of expired and retained tunnels, under the server's lock; it looked at
// every tunnel each time (1100 at the default limits), so refused handshakes
// from anyone cost the server O(tunnels) each. It now looks only when
// something is due or has changed.
func TestHandshakesDoNotSweepEveryTunnel(t *testing.T) {
	ts := startServer(t, Config{Logger: slog.New(slog.DiscardHandler)})
	for range 20 {
		out := ts.open(t, "dev1", "SSH")
		if err := ts.CloseTunnel(context.Background(), &CloseTunnelInput{TunnelID: out.TunnelID}); err != nil {
			t.Fatal(err)
		}
	}
	ts.open(t, "dev1", "SSH")
	ts.sweep()
	ts.mu.Lock()
	before := ts.sweeps
	ts.mu.Unlock()
	c := &http.Client{}
	for range 100 {
		resp, err := c.Get("http://" + ts.addr + "/tunnel")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	ts.mu.Lock()
	swept := ts.sweeps - before
	ts.mu.Unlock()
	if swept != 0 {
		t.Errorf("100 refused handshakes, nothing due: %d sweeps looked at every tunnel, want 0", swept)
	}
}

// TestRevokedTokenHandshakeLogIsBounded: a handshake with a token a rotation
// revoked (the leaked token rotation is for) is refused by refuseRevoked,
// whose log line carries the client's local-proxy-mode uncut: every such
// request of up to 64 KiB of header writes a line of up to four times that
// (and the line is not rate-limited).
func TestRevokedTokenHandshakeLogIsBounded(t *testing.T) {
	w := &countingWriter{}
	ts := startServer(t, Config{
		Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	out := ts.open(t, "dev1", "SSH")
	if _, err := ts.RotateTunnelAccessToken(context.Background(), &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: ClientModeSource}); err != nil {
		t.Fatal(err)
	}
	_, before, _ := w.get()
	junk := strings.Repeat("%FF", 15000)
	req := fmt.Sprintf("GET /tunnel?local-proxy-mode=%s HTTP/1.1\r\nHost: %s\r\naccess-token: %s\r\n\r\n", junk, ts.addr, out.SourceAccessToken)
	const n = 50
	for range n {
		if status := rawRequest(t, ts.addr, req); !strings.Contains(status, " 400 ") {
			t.Fatalf("answer %q, want 400 (token rotated)", status)
		}
	}
	eventuallyTrue(t, func() bool { _, lines, _ := w.get(); return lines >= before+1 })
	time.Sleep(100 * time.Millisecond)
	logged, lines, longest := w.get()
	if longest > 2<<10 {
		t.Errorf("%d handshakes of %d bytes with a revoked token wrote %d log lines, %d bytes in all, the longest %d: "+
			"want the mode cut, as in every other refusal's line", n, len(req), lines-before, logged, longest)
	}
}

// TestUnknownMembersLogIsBounded: the names of request members not in the
// API, which the caller chose, are logged uncut (10 of them, from a body of
// up to 1 MiB), on a line that is not rate-limited; without --credentials
// anyone who reaches the server can send them.
func TestUnknownMembersLogIsBounded(t *testing.T) {
	w := &countingWriter{}
	ts := startServer(t, Config{Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	var b strings.Builder
	b.WriteString("{")
	for i := range 10 {
		fmt.Fprintf(&b, "%q: 1,", fmt.Sprintf("%d%s", i, strings.Repeat("a", 90<<10)))
	}
	b.WriteString(`"maxResults": 1}`)
	ts.call(t, "ListTunnels", b.String())
	time.Sleep(100 * time.Millisecond)
	if _, _, longest := w.get(); longest > 4<<10 {
		t.Errorf("one ListTunnels call with 10 unknown members wrote a log line of %d bytes: member names reach the log uncut", longest)
	}
}

// TestUnsignedBodyNotRead: with Credentials, a request without a signature, or
// with an access key the server does not know, is refused before its body is
// read, as checkAuth would refuse it after: anyone who reaches the server got
// up to 1 MiB of body read and held until the read timeout (30 s), a MiB a
// connection. Here the client declares a body under the limit (bodyLimit) and
// never sends it; the answer must come all the same, and net/http must not
// wait for the body to use the connection again (hangUp).
func TestUnsignedBodyNotRead(t *testing.T) {
	ts := startServer(t, Config{Credentials: map[string]string{"AKID": "secret"}})
	for _, tc := range []struct {
		name, auth, want string
	}{
		{"no signature", "", ErrTypeMissingAuthToken},
		{"not SigV4", "Basic dXNlcjpwdw==", ErrTypeIncompleteSigature},
		{"unknown access key", "AWS4-HMAC-SHA256 Credential=AKIDOTHER/20261130/us-east-1/IoTSecuredTunneling/aws4_request, " +
			"SignedHeaders=host;x-amz-date, Signature=abc", ErrTypeUnrecognizedClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			auth := ""
			if tc.auth != "" {
				auth = "Authorization: " + tc.auth + "\r\n"
			}
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: "+contentType+"\r\nX-Amz-Target: "+targetPrefix+
				"ListTunnels\r\n%sContent-Length: %d\r\n\r\n", ts.addr, auth, bodyLimit("ListTunnels"))
			c.SetReadDeadline(time.Now().Add(5 * time.Second)) // the read timeout is 30 s
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer before the body: %v", err)
			}
			resp.Body.Close()
			if typ := resp.Header.Get("X-Amzn-ErrorType"); resp.StatusCode != http.StatusForbidden || typ != tc.want {
				t.Errorf("answer %s %s, want 403 %s", resp.Status, typ, tc.want)
			}
		})
	}
}
