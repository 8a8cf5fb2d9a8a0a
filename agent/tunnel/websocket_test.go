package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serverFrame encodes an unmasked server frame.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// wsFromBytes is a client wsConn reading in; what it writes goes to out.
func wsFromBytes(in []byte) (*wsConn, *bytes.Buffer) {
	out := &bytes.Buffer{}
	c := newWSConn(fakeConn{Reader: bytes.NewReader(in), w: out}, bufio.NewReader(bytes.NewReader(in)), [32]byte{})
	return c, out
}

type fakeConn struct {
	io.Reader
	w io.Writer
}

func (f fakeConn) Write(p []byte) (int, error)      { return f.w.Write(p) }
func (f fakeConn) Close() error                     { return nil }
func (f fakeConn) LocalAddr() net.Addr              { return nil }
func (f fakeConn) RemoteAddr() net.Addr             { return nil }
func (f fakeConn) SetDeadline(time.Time) error      { return nil }
func (f fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f fakeConn) SetWriteDeadline(time.Time) error { return nil }

// unmask decodes one client frame from b: it must be masked.
func unmask(t *testing.T, b []byte) (op byte, payload []byte, rest []byte) {
	t.Helper()
	if len(b) < 6 || b[1]&0x80 == 0 {
		t.Fatalf("client frame %x is not masked", b)
	}
	n, off := int(b[1]&0x7f), 2
	switch n {
	case 126:
		n, off = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		n, off = int(binary.BigEndian.Uint64(b[2:])), 10
	}
	key := b[off : off+4]
	p := append([]byte(nil), b[off+4:off+4+n]...)
	for i := range p {
		p[i] ^= key[i&3]
	}
	return b[0] & 0x0f, p, b[off+4+n:]
}

func TestWebSocketRead(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70000)
	in := bytes.Join([][]byte{
		serverFrame(true, opBinary, []byte("one")),
		serverFrame(true, opPing, []byte("p1")),
		serverFrame(false, opBinary, []byte("tw")),
		serverFrame(true, opPong, nil),
		serverFrame(true, opContinuation, []byte("o")),
		serverFrame(true, opBinary, big),
		serverFrame(true, opBinary, nil),
		serverFrame(true, opClose, append([]byte{0x03, 0xe8}, "bye"...)),
	}, nil)
	c, out := wsFromBytes(in)
	pongs := 0
	c.onPong = func() { pongs++ }
	got, err := io.ReadAll(c)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 1000 || ce.Reason != "bye" {
		t.Fatalf("read ended with %v, want CloseError 1000 bye", err)
	}
	if want := "onetwo" + string(big); string(got) != want {
		t.Fatalf("read %d bytes, want %d", len(got), len(want))
	}
	if pongs != 1 {
		t.Fatalf("%d pongs reported, want 1", pongs)
	}
	op, p, rest := unmask(t, out.Bytes())
	if op != opPong || string(p) != "p1" {
		t.Fatalf("answer to ping: op %d %q", op, p)
	}
	if op, p, _ := unmask(t, rest); op != opClose || binary.BigEndian.Uint16(p) != 1000 {
		t.Fatalf("answer to close: op %d %x", op, p)
	}
}

func TestWebSocketReadRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		code uint16
	}{
		{"text", serverFrame(true, opText, []byte("hi")), 1003},
		{"masked", []byte{0x82, 0x81, 1, 2, 3, 4, 'x'}, 1002},
		{"reserved bits", []byte{0xc2, 0x00}, 1002},
		{"unknown opcode", serverFrame(true, 0x3, nil), 1002},
		{"continuation first", serverFrame(true, opContinuation, []byte("x")), 1002},
		{"new message inside fragmented", append(serverFrame(false, opBinary, []byte("a")), serverFrame(true, opBinary, []byte("b"))...), 1002},
		{"fragmented control", serverFrame(false, opPing, nil), 1002},
		{"long control", serverFrame(true, opPing, make([]byte, 126)), 1002},
		{"too big", serverFrame(true, opBinary, make([]byte, MaxWebSocketMessage+1)), 1009},
		{"too big in pieces", append(serverFrame(false, opBinary, make([]byte, MaxWebSocketMessage)), serverFrame(true, opContinuation, []byte("x"))...), 1009},
		{"huge length", []byte{0x82, 127, 0xff, 0, 0, 0, 0, 0, 0, 0}, 1002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, out := wsFromBytes(tc.in)
			_, err := io.ReadAll(c)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("read error %v, want ErrProtocol", err)
			}
			op, p, _ := unmask(t, out.Bytes())
			if op != opClose || binary.BigEndian.Uint16(p) != tc.code {
				t.Fatalf("close sent: op %d payload %x, want code %d", op, p, tc.code)
			}
		})
	}
}

func TestWriteFrameIsMasked(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 65535, 65536, 70000} {
		c, out := wsFromBytes(nil)
		payload := bytes.Repeat([]byte{0xab}, n)
		if err := c.writeFrame(opBinary, payload); err != nil {
			t.Fatal(err)
		}
		op, p, rest := unmask(t, out.Bytes())
		if op != opBinary || !bytes.Equal(p, payload) || len(rest) != 0 || out.Bytes()[0]&0x80 == 0 {
			t.Fatalf("n=%d: op %d, %d bytes back, %d left", n, op, len(p), len(rest))
		}
	}
}

func TestWriteFrameWithFailureSendsNothing(t *testing.T) {
	c, out := wsFromBytes(nil)
	boom := errors.New("boom")
	err := c.writeFrameWith(opBinary, func(b []byte) ([]byte, error) { return append(b, "half"...), boom })
	if !errors.Is(err, boom) || out.Len() != 0 {
		t.Fatalf("err %v, %d bytes sent; want boom and nothing", err, out.Len())
	}
	m := &Message{Type: TypeData, StreamID: 1, Payload: []byte("x")}
	if err := c.writeFrameWith(opBinary, func(b []byte) ([]byte, error) { return AppendFrame(b, m) }); err != nil {
		t.Fatal(err)
	}
	op, p, rest := unmask(t, out.Bytes())
	want, _ := AppendFrame(nil, m)
	if op != opBinary || !bytes.Equal(p, want) || len(rest) != 0 {
		t.Fatalf("the frame after the failure: op %d payload %x, want %x", op, p, want)
	}
}

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		err  string
	}{
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-A: 1\r\nx-a: 2\r\n\r\n", 101, ""},
		{"HTTP/1.0 400 Bad Request\r\n\r\n", 400, ""},
		{"HTTP/1.1 200\r\n\r\n", 200, ""},
		{"HTTP/2 101 x\r\n\r\n", 0, "status line"},
		{"HTTP/1.1 1xx\r\n\r\n", 0, "status line"},
		{"HTTP/1.1 101 ok\r\nno colon\r\n\r\n", 0, "header line"},
		{"HTTP/1.1 101 ok\r\nUpgrade: websocket\r\n", 0, "EOF"},
		{"HTTP/1.1 101 ok\r\nX: " + strings.Repeat("a", 20000) + "\r\n\r\n", 0, "too large"},
	} {
		r, err := readResponse(bufio.NewReader(strings.NewReader(tc.in)))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("readResponse(%.30q) = %v, want error %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.status != tc.code {
			t.Errorf("readResponse(%.30q) = %v, %v; want %d", tc.in, r, err, tc.code)
		}
	}
	r, _ := readResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 101 x\r\nX-A: 1\r\nx-a: 2\r\n\r\n")))
	if got := r.header["x-a"]; len(got) != 2 || r.get("X-A") != "1" {
		t.Fatalf("repeated header: %q", got)
	}
}

// TestReadBody: a refusal's body is read as far as its framing says, and a
// 1xx, 204 or 304 answer has none whatever its headers say (RFC 9112 §6.3):
// the bytes after its head are not read. Read until close, such an answer on
// a connection the server kept open made Dial wait for its handshake timeout.
func TestReadBody(t *testing.T) {
	const next = "next answer"
	for _, tc := range []struct {
		head, want string
	}{
		{"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\n", "next"},
		{"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n", "body"},
		{"HTTP/1.0 403 Forbidden\r\n\r\n", next}, // until close
		{"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n", ""},
		{"HTTP/1.1 304 Not Modified\r\n\r\n", ""},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n", ""},
		{"HTTP/1.1 100 Continue\r\n\r\n", ""},
	} {
		br := bufio.NewReader(strings.NewReader(tc.head + next))
		r, err := readResponse(br)
		if err != nil {
			t.Fatalf("readResponse(%q): %v", tc.head, err)
		}
		if got := readBody(br, r); got != tc.want {
			t.Errorf("readBody after %q = %q, want %q", tc.head, got, tc.want)
		}
	}
}

// FuzzWebSocketRead feeds arbitrary server bytes to the client's frame reader: it
// must return data or an error, never panic, and never deliver more than the
// stream holds.
func FuzzWebSocketRead(f *testing.F) {
	f.Add(serverFrame(true, opBinary, []byte("hello")))
	f.Add(append(serverFrame(false, opBinary, []byte("a")), serverFrame(true, opContinuation, []byte("b"))...))
	f.Add(serverFrame(true, opClose, []byte{0x03, 0xe8}))
	f.Add(serverFrame(true, opPing, []byte("x")))
	f.Add([]byte{0x82, 126, 0xff, 0xff})
	f.Add(append(serverFrame(false, opBinary, []byte("ab")), append(serverFrame(true, opPing, []byte("p")), serverFrame(true, opContinuation, []byte("c"))...)...))
	f.Add(append(serverFrame(true, opBinary, []byte("ab")), serverFrame(true, opContinuation, []byte("c"))...))
	f.Add(append(serverFrame(true, opBinary, make([]byte, 300)), serverFrame(true, opPong, nil)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, out := wsFromBytes(in)
		got, err := io.ReadAll(c)
		want, pings := refWSRead(in)
		if !bytes.Equal(got, want) {
			t.Fatalf("read %x (%v) from %x, want %x", got, err, in, want)
		}
		checkPongs(t, out, pings)
	})
}

// checkPongs checks that out, what the client wrote, answers every ping of
// pings, in order, with a pong carrying its payload.
func checkPongs(t *testing.T, out *bytes.Buffer, pings [][]byte) {
	t.Helper()
	for _, p := range pings {
		op, payload, rest := unmask(t, out.Bytes())
		if op != opPong || !bytes.Equal(payload, p) {
			t.Fatalf("ping %x answered with opcode %d %x", p, op, payload)
		}
		out = bytes.NewBuffer(rest)
	}
}

// refWSRead is what a client reads from the server frames in, by RFC 6455
// read plainly: the payloads of binary messages (fragmented or not) up to the
// first frame that breaks a rule, a Close, or the end; and the pings on the way.
func refWSRead(in []byte) (data []byte, pings [][]byte) {
	inMessage, msgLen := false, uint64(0)
	for len(in) >= 2 {
		fin, op, n, hdr := in[0]&0x80 != 0, in[0]&0x0f, uint64(in[1]&0x7f), 2
		if in[0]&0x70 != 0 || in[1]&0x80 != 0 {
			return
		}
		switch n {
		case 126:
			if len(in) < 4 {
				return
			}
			n, hdr = uint64(binary.BigEndian.Uint16(in[2:])), 4
		case 127:
			if len(in) < 10 {
				return
			}
			n, hdr = binary.BigEndian.Uint64(in[2:]), 10
		}
		in = in[hdr:]
		switch op {
		case opPing, opPong, opClose:
			if n > 125 || !fin || uint64(len(in)) < n || op == opClose {
				return
			}
			if op == opPing {
				pings = append(pings, in[:n])
			}
			in = in[n:]
			continue
		case opBinary:
			if inMessage {
				return
			}
			msgLen = 0
		case opContinuation:
			if !inMessage {
				return
			}
		default:
			return
		}
		inMessage = !fin
		if msgLen += n; n > MaxWebSocketMessage || msgLen > MaxWebSocketMessage {
			return
		}
		take := min(n, uint64(len(in)))
		data = append(data, in[:take]...)
		in = in[take:]
	}
	return
}

// FuzzReadResponse: the upgrade/CONNECT response parser never panics and bounds
// what it keeps.
func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nhello"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		r, err := readResponse(br)
		if err != nil {
			return
		}
		if r.status < 100 || r.status > 999 {
			t.Fatalf("status %d accepted", r.status)
		}
		// The head ends at the first empty line; what follows is the body,
		// left for readBody, or the first WebSocket frames.
		rest, _ := io.ReadAll(br)
		head := in[:len(in)-len(rest)]
		end := bytes.Index(in, []byte("\n\n"))
		if e := bytes.Index(in, []byte("\n\r\n")); e >= 0 && (end < 0 || e < end) {
			end = e + 1
		}
		if end < 0 || len(head) != end+2 {
			t.Fatalf("readResponse(%q) took the head %q, leaving %q", in, head, rest)
		}
		for k, vs := range r.header {
			for _, v := range vs {
				if k != strings.ToLower(k) || strings.TrimSpace(v) != v || !bytes.Contains(bytes.ToLower(head), []byte(k)) {
					t.Fatalf("readResponse(%q) header %q: %q", in, k, v)
				}
			}
		}
	})
}

// A write that fails because the service's Close frame has closed the socket
// (the reader echoes it and drops the connection) fails with that Close: the
// session then ends as closed by the service, instead of reconnecting to a
// closed tunnel and being refused (a race seen in TestCloseTunnelEndsBothSides).
func TestWriteAfterPeerCloseIsTheClose(t *testing.T) {
	closed := errors.New("use of closed network connection")
	c := newWSConn(fakeConn{Reader: bytes.NewReader(nil), w: failAfter{closed}}, bufio.NewReader(bytes.NewReader(nil)), [32]byte{})
	if err := c.writeFrame(opBinary, []byte("x")); !errors.Is(err, closed) {
		t.Fatalf("write before any Close = %v, want the socket's error", err)
	}
	if err := c.control(opClose, binary.BigEndian.AppendUint16(nil, 1000)); err == nil {
		t.Fatal("a Close frame gave no error")
	}
	var ce *CloseError
	if err := c.writeFrame(opBinary, []byte("x")); !errors.As(err, &ce) || ce.Code != 1000 {
		t.Fatalf("write after the service's Close = %v, want its CloseError", err)
	}
}

// TestCloseAnswer: the answer to the service's Close frame is a Close that
// RFC 6455 lets a client send: the code echoed if it may be sent (§7.4), an
// empty Close to an empty one, and 1002 to a body of one octet (§5.5.1) or a
// code not for the wire (1005 and 1006 say there was none), and 1007 to a
// reason that is not UTF-8 (§8.1). Each was echoed as it came. The read ends as closed by the service all the same.
func TestCloseAnswer(t *testing.T) {
	code := func(c uint16) []byte { return binary.BigEndian.AppendUint16(nil, c) }
	for _, tc := range []struct {
		name string
		in   []byte // the service's Close body
		got  int    // the CloseError's code
		want []byte // the answer's body
	}{
		{"empty", nil, 1005, []byte{}},
		{"1000 and a reason", append(code(1000), "bye"...), 1000, code(1000)},
		{"1011", code(1011), 1011, code(1011)},
		{"1014", code(1014), 1014, code(1014)},
		{"3000", code(3000), 3000, code(3000)},
		{"4999", code(4999), 4999, code(4999)},
		{"one octet", []byte{0x03}, 1005, code(1002)},
		{"0", code(0), 0, code(1002)},
		{"999", code(999), 999, code(1002)},
		{"1004", code(1004), 1004, code(1002)},
		{"1005", code(1005), 1005, code(1002)},
		{"1006", code(1006), 1006, code(1002)},
		{"1015", code(1015), 1015, code(1002)},
		{"2999", code(2999), 2999, code(1002)},
		{"5000", code(5000), 5000, code(1002)},
		{"1000 and a reason not UTF-8", append(code(1000), "bye\xff"...), 1000, code(1007)},
		{"1011 and a cut UTF-8 reason", append(code(1011), "caf\xc3"...), 1011, code(1007)},
		{"1000 and a UTF-8 reason", append(code(1000), "café"...), 1000, code(1000)},
		{"999 and a reason not UTF-8", append(code(999), "\xff"...), 999, code(1002)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, out := wsFromBytes(serverFrame(true, opClose, tc.in))
			_, err := io.ReadAll(c)
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != tc.got {
				t.Errorf("read ended with %v, want CloseError %d", err, tc.got)
			}
			op, p, rest := unmask(t, out.Bytes())
			if op != opClose || !bytes.Equal(p, tc.want) || len(rest) != 0 {
				t.Errorf("answer to Close %x: op %d payload %x and %d bytes more, want one Close %x", tc.in, op, p, len(rest), tc.want)
			}
		})
	}
}

// TestOneCloseFrame: the service's answer to the agent's Close (closeSoon,
// the reader still running) gets no Close back, nor does a Close sent after
// the service's: an endpoint sends one (RFC 6455 §5.5.1).
func TestOneCloseFrame(t *testing.T) {
	c, out := wsFromBytes(serverFrame(true, opClose, binary.BigEndian.AppendUint16(nil, 1000)))
	c.closeSoon(1001, "going away", time.Second)
	if _, err := io.ReadAll(c); !errors.As(err, new(*CloseError)) {
		t.Fatalf("read ended with %v, want the service's Close", err)
	}
	c.closeWith(1000, "", 0)
	op, p, rest := unmask(t, out.Bytes())
	if op != opClose || binary.BigEndian.Uint16(p) != 1001 || len(rest) != 0 {
		t.Fatalf("sent op %d payload %x and %d bytes more, want one Close 1001", op, p, len(rest))
	}
}

type failAfter struct{ err error }

func (f failAfter) Write([]byte) (int, error) { return 0, f.err }

// A refusal whose body comes chunked (Transfer-Encoding: chunked, which any
// HTTP/1.1 server may use, and Go's net/http does once a handler flushes) on a
// connection the server keeps open: the body is the text, without chunk
// framing, and Dial reports it at once, not after its handshake timeout.
func TestDialRefusedChunkedBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte("Invalid access token: The access token was previously used and can not be used again."))
		w.(http.Flusher).Flush() // no Content-Length: chunked
	}))
	t.Cleanup(srv.Close)
	tok, _ := NewAccessToken("t")
	start := time.Now()
	_, err := Dial(context.Background(), &Config{Endpoint: srv.URL, AccessToken: tok, AllowInsecureWebSocket: true,
		HandshakeTimeout: 3 * time.Second}, ModeSource)
	took := time.Since(start)
	var he *HandshakeError
	if !errors.As(err, &he) || he.StatusCode != 400 {
		t.Fatalf("Dial = %v, want HandshakeError 400", err)
	}
	if want := "Invalid access token: The access token was previously used and can not be used again."; he.Body != want {
		t.Errorf("Body = %q, want %q", he.Body, want)
	}
	if took > time.Second {
		t.Errorf("Dial took %v to report a refusal the server sent at once", took)
	}
}

// FuzzReadChunked: a chunked body decodes to at most the limit, and a body
// that net/http/httputil's writer chunked (as any server would) decodes to
// its text, however it was cut into chunks.
func FuzzReadChunked(f *testing.F) {
	f.Add([]byte("Invalid access token"), uint8(7), []byte("5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte(""), uint8(1), []byte("ffffffff\r\nx"))
	f.Add(bytes.Repeat([]byte("a"), 2000), uint8(255), []byte("3;ext=1\r\nabc\r\n0\r\n"))
	f.Fuzz(func(t *testing.T, text []byte, cut uint8, raw []byte) {
		if got := readChunked(bufio.NewReader(bytes.NewReader(raw)), 1024); len(got) > 1024 {
			t.Fatalf("readChunked(%q) gave %d bytes, over the limit", raw, len(got))
		}
		var body bytes.Buffer
		w := httputil.NewChunkedWriter(&body)
		for rest, n := text, max(int(cut), 1); len(rest) > 0; rest = rest[min(n, len(rest)):] {
			w.Write(rest[:min(n, len(rest))])
		}
		w.Close()
		body.WriteString("\r\n")
		want := text[:min(len(text), 1024)]
		if got := readChunked(bufio.NewReader(&body), 1024); !bytes.Equal(got, want) {
			t.Fatalf("readChunked of %q in chunks of %d = %q", text, cut, got)
		}
	})
}

// FuzzWebSocketReadInPieces is FuzzWebSocketRead with the server's bytes
// arriving in pieces (cuts), through a small read buffer, and read into
// buffers of other sizes that are scribbled over after each read: a frame
// header, a control frame or a payload kept in a buffer past the next read
// would show as data that differs.
func FuzzWebSocketReadInPieces(f *testing.F) {
	f.Add(append(serverFrame(false, opBinary, []byte("ab")), append(serverFrame(true, opPing, []byte("ping")), serverFrame(true, opContinuation, []byte("cd"))...)...), []byte{0, 2, 5}, []byte{1, 3})
	f.Add(append(serverFrame(true, opBinary, make([]byte, 300)), []byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 3, 'a', 'b', 'c'}...), []byte{13, 200}, []byte{7, 255})
	f.Add(append(serverFrame(true, opPing, bytes.Repeat([]byte("p"), 125)), serverFrame(true, opBinary, []byte("z"))...), []byte{0}, []byte{0})
	f.Fuzz(func(t *testing.T, in, cuts, sizes []byte) {
		out := &bytes.Buffer{}
		c := newWSConn(fakeConn{Reader: bytes.NewReader(nil), w: out}, bufio.NewReaderSize(&chunkReader{chunks: splitAt(in, cuts)}, 16), [32]byte{})
		var got []byte
		buf := make([]byte, 300)
		for i := 0; ; i++ {
			p := buf
			if len(sizes) > 0 {
				p = buf[:1+int(sizes[i%len(sizes)])]
			}
			n, err := c.Read(p)
			got = append(got, p[:n]...)
			for j := range p {
				p[j] = 0xa5
			}
			if err != nil {
				break
			}
		}
		want, pings := refWSRead(in)
		if !bytes.Equal(got, want) {
			t.Fatalf("read %x from %x in pieces %v, want %x", got, in, cuts, want)
		}
		checkPongs(t, out, pings)
	})
}

// An https:// proxy named by an IPv6 address with a zone
// (https://[fe80::1%25br-lan]:3128; here ::1%lo, the one such address a test
// can listen on) presents a certificate for the address: the zone says which
// link to dial, as notify's broker address takes it, and is no part of the
// name the certificate is checked against.
func TestHTTPSProxyZonedAddress(t *testing.T) {
	srv := tlsService(t, func(r *http.Request) int { return 0 })
	ln := ipv6TLSListener(t, srv)
	var used atomic.Int32
	serveConnect(t, ln, "", &used)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	proxy, err := ParseProxyURL("https://[::1%25lo]:" + port)
	if err != nil {
		t.Fatalf("ParseProxyURL: %v", err)
	}
	tok, _ := NewAccessToken("t")
	cfg := &Config{Endpoint: srv.URL, AccessToken: tok, CAFile: writeCA(t, srv), Proxy: func(*url.URL) (*url.URL, error) { return proxy, nil }}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg, ModeSource)
	if err != nil {
		t.Fatalf("Dial through https proxy %s: %v", proxy.Host, err)
	}
	c.Close()
	if used.Load() != 1 {
		t.Fatalf("the proxy carried %d connections, want 1", used.Load())
	}
}
