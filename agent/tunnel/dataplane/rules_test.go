package dataplane

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/internal/wstest"
)

func TestHandshakeRules(t *testing.T) {
	const clientToken = "0123456789abcdef-0123456789abcdef"
	type tokens struct{ src, dst string }
	tests := []struct {
		name     string
		opts     func(tk tokens) dialOpts
		wantBody string // substring; "" = success
	}{
		{"ok source", func(tk tokens) dialOpts { return dialOpts{Mode: "source", Token: tk.src} }, ""},
		{"ok destination with client token", func(tk tokens) dialOpts {
			return dialOpts{Mode: "destination", Token: tk.dst, ClientToken: clientToken}
		}, ""},
		{"ok cookie", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Header: http.Header{"Cookie": {"awsiot-tunnel-token=" + tk.src}}}
		}, ""},
		{"wrong path", func(tk tokens) dialOpts { return dialOpts{Path: "/tunnel/", Mode: "source", Token: tk.src} }, "Invalid path"},
		{"root path", func(tk tokens) dialOpts { return dialOpts{Path: "/", Mode: "source", Token: tk.src} }, "Invalid path"},
		{"no mode", func(tk tokens) dialOpts { return dialOpts{Query: "x=1", Token: tk.src} }, "local-proxy-mode"},
		{"bad mode", func(tk tokens) dialOpts { return dialOpts{Mode: "src", Token: tk.src} }, "local-proxy-mode"},
		{"repeated mode", func(tk tokens) dialOpts {
			return dialOpts{Query: "local-proxy-mode=source&local-proxy-mode=source", Token: tk.src}
		}, "local-proxy-mode"},
		{"mode mismatch", func(tk tokens) dialOpts { return dialOpts{Mode: "destination", Token: tk.src} }, "for source mode"},
		{"no token", func(tk tokens) dialOpts { return dialOpts{Mode: "source"} }, "Missing access token"},
		{"unknown token", func(tk tokens) dialOpts { return dialOpts{Mode: "source", Token: "nope"} }, "Invalid access token"},
		{"repeated header", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, Header: http.Header{"Access-Token": {tk.src}}}
		}, "more than one access token"},
		{"header and cookie", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, Header: http.Header{"Cookie": {"awsiot-tunnel-token=" + tk.src}}}
		}, "more than one access token"},
		{"repeated cookie", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Header: http.Header{"Cookie": {"awsiot-tunnel-token=" + tk.src + "; awsiot-tunnel-token=" + tk.src}}}
		}, "more than one access token"},
		{"short client token", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, ClientToken: "abc"}
		}, "Invalid client token"},
		{"client token bad char", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, ClientToken: strings.Repeat("a", 40) + "_"}
		}, "Invalid client token"},
		{"client token too long", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, ClientToken: strings.Repeat("a", 129)}
		}, "Invalid client token"},
		{"repeated client token", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, ClientToken: clientToken, Header: http.Header{"Client-Token": {clientToken}}}
		}, "more than one client-token"},
		{"no subprotocol", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, Subprotocols: []string{}}
		}, "Sec-WebSocket-Protocol"},
		{"unknown subprotocol", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, Subprotocols: []string{"aws.iot.securetunneling-4.0"}}
		}, "Sec-WebSocket-Protocol"},
		{"request over 4 KB", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, Header: http.Header{"X-Pad": {strings.Repeat("p", 4000)}}}
		}, "Request too large"},
		{"request just under 4 KB", func(tk tokens) dialOpts {
			return dialOpts{Mode: "source", Token: tk.src, Header: http.Header{"X-Pad": {strings.Repeat("p", 3400)}}}
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			tun := s.OpenTunnel("SSH")
			ws, resp, err := dialRaw(t, s, tc.opts(tokens{tun.SourceToken, tun.DestinationToken}))
			hs := s.Handshakes()
			if len(hs) != 1 {
				t.Fatalf("Handshakes() has %d entries, want 1", len(hs))
			}
			if tc.wantBody == "" {
				if err != nil {
					t.Fatalf("dial: %v, want success", err)
				}
				ws.CloseNow()
				if hs[0].Status != http.StatusSwitchingProtocols {
					t.Errorf("Handshake.Status = %d, want 101", hs[0].Status)
				}
				return
			}
			if err == nil {
				t.Fatalf("dial succeeded, want 400 %q", tc.wantBody)
			}
			if resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("dial: %v, response %v, want 400", err, resp)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.Header.Get("channel-id") == "" || resp.Header.Get("channel-id") != hs[0].ChannelID {
				t.Errorf("channel-id = %q, Handshake.ChannelID = %q: want the same, not empty", resp.Header.Get("channel-id"), hs[0].ChannelID)
			}
			if !strings.Contains(string(b), tc.wantBody) {
				t.Errorf("body = %q, want it to contain %q", b, tc.wantBody)
			}
			if hs[0].Status != 400 || hs[0].Body != string(b) {
				t.Errorf("Handshake = %d %q, want 400 %q", hs[0].Status, hs[0].Body, b)
			}
			if tun.Connects(Source)+tun.Connects(Destination) != 0 {
				t.Errorf("Connects = %d+%d after a refused handshake", tun.Connects(Source), tun.Connects(Destination))
			}
		})
	}
}

func TestViolationsClose(t *testing.T) {
	data := func(svc string) *tunnel.Message {
		return &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: svc, Payload: []byte("x")}
	}
	start := func(id int32, svc string) *tunnel.Message {
		return &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: id, ServiceID: svc}
	}
	tests := []struct {
		name    string
		prelude []*tunnel.Message // from the source, relayed
		from    Side
		bad     []byte // raw frames, or
		badMsg  *tunnel.Message
		text    bool
		code    websocket.StatusCode // default 1008
		reason  string
		cut     bool // no Close frame
	}{
		{name: "type 0", from: Source, bad: rawFrame(varintField(2, 1)), reason: "type 0"},
		{name: "empty frame", from: Destination, bad: rawFrame(), reason: "type 0"},
		{name: "unknown type", from: Source, badMsg: &tunnel.Message{Type: 42, StreamID: 1}, reason: "unknown message type 42"},
		{name: "DATA stream 0", from: Source, prelude: []*tunnel.Message{start(1, "SSH")},
			bad: rawFrame(varintField(1, 1), bytesField(5, []byte("SSH"))), reason: "stream id 0"},
		{name: "STREAM_RESET stream 0", from: Destination, bad: rawFrame(varintField(1, 3)), reason: "stream id 0"},
		{name: "destination STREAM_START", from: Destination, badMsg: start(1, "SSH"), reason: "destination may not send STREAM_START"},
		{name: "destination CONNECTION_START", from: Destination,
			badMsg: &tunnel.Message{Type: tunnel.TypeConnectionStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 2}, reason: "destination may not send CONNECTION_START"},
		{name: "source SESSION_RESET", from: Source, badMsg: &tunnel.Message{Type: tunnel.TypeSessionReset}, reason: "SESSION_RESET"},
		{name: "destination SESSION_RESET", from: Destination, badMsg: &tunnel.Message{Type: tunnel.TypeSessionReset}, reason: "SESSION_RESET"},
		{name: "source SERVICE_IDS", from: Source, badMsg: &tunnel.Message{Type: tunnel.TypeServiceIDs, AvailableServiceIDs: []string{"SSH"}}, reason: "SERVICE_IDS"},
		{name: "destination SERVICE_IDS", from: Destination, badMsg: &tunnel.Message{Type: tunnel.TypeServiceIDs}, reason: "SERVICE_IDS"},
		{name: "payload over 64512", from: Source, prelude: []*tunnel.Message{start(1, "SSH")},
			bad: rawFrame(varintField(1, 1), varintField(2, 1), bytesField(4, make([]byte, tunnel.MaxPayload+1)), bytesField(5, []byte("SSH"))), reason: "payload of 64513 bytes"},
		{name: "ignorable unknown type, payload over 64512", from: Source,
			bad: rawFrame(varintField(1, 42), varintField(3, 1), bytesField(4, make([]byte, tunnel.MaxPayload+1))), reason: "payload of 64513 bytes"},
		{name: "undeclared service", from: Source, badMsg: start(1, "FTP"), reason: `service "FTP"`},
		{name: "service id after V1 start, source", from: Source, prelude: []*tunnel.Message{start(1, "")}, badMsg: data("SSH"), reason: "started without one"},
		{name: "V2 start after V1 start", from: Source, prelude: []*tunnel.Message{start(1, "")}, badMsg: start(2, "WEB"), reason: "started without one"},
		// One WebSocket keeps one format (V2 guide, backward compatibility):
		// ending the V1 stream first does not make the switch legal, nor the
		// other way round.
		{name: "V2 start after a V1 stream ended", from: Source, prelude: []*tunnel.Message{start(1, ""), {Type: tunnel.TypeStreamReset, StreamID: 1}},
			badMsg: start(2, "SSH"), reason: "started without one"},
		{name: "V1 start after a V2 start", from: Source, prelude: []*tunnel.Message{start(1, "SSH")}, badMsg: start(2, ""), reason: "started with one"},
		{name: "DATA without STREAM_START", from: Source, prelude: []*tunnel.Message{start(1, "SSH")}, badMsg: data("WEB"), reason: `DATA for service "WEB"`},
		{name: "DATA without any stream", from: Destination, badMsg: data("SSH"), reason: `DATA for service "SSH"`},
		{name: "V1 DATA without STREAM_START", from: Source, prelude: []*tunnel.Message{start(1, "SSH")}, badMsg: data(""), reason: `DATA for service ""`},
		{name: "unknown field 8", from: Source, prelude: []*tunnel.Message{start(1, "SSH")},
			bad: rawFrame(varintField(1, 1), varintField(2, 1), bytesField(5, []byte("SSH")), varintField(8, 1)), reason: "field 8"},
		{name: "unknown field 1000", from: Destination,
			bad: rawFrame(varintField(1, 3), varintField(2, 1), bytesField(1000, []byte("x"))), reason: "field 1000"},
		{name: "wrong wire type", from: Source, bad: rawFrame(varintField(1, 3), bytesField(2, []byte{1})), reason: "wire type"},
		{name: "truncated field", from: Source, bad: rawFrame(varintField(1, 3), []byte{0x22, 10, 1}), reason: "malformed"},
		{name: "text message", from: Source, text: true, code: websocket.StatusUnsupportedData, reason: "text"},
		// A message over the read limit is refused whole: none of the frames in it
		// reach the peer, not even those that were complete before the limit.
		// Spec §1.3: cut, without a Close frame.
		{name: "message over 131076 bytes", from: Source, prelude: []*tunnel.Message{start(1, "SSH")},
			bad: dataFrames(t, 3*(tunnel.MaxPayload+12)), cut: true},
		{name: "message of 131077 bytes", from: Destination, prelude: []*tunnel.Message{start(1, "SSH")},
			bad: dataFrames(t, tunnel.MaxWebSocketMessage+1), cut: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, tun, src, dst := pair(t, "SSH", "WEB")
			clients := [2]*client{src, dst}
			if len(tc.prelude) > 0 {
				src.Send(tc.prelude...)
				for range tc.prelude {
					dst.MustNext()
				}
			}
			bad, other := clients[tc.from], clients[tc.from.other()]
			switch {
			case tc.text:
				if err := bad.WS.Write(context.Background(), websocket.MessageText, []byte("hi")); err != nil {
					t.Fatal(err)
				}
			case tc.badMsg != nil:
				bad.Send(tc.badMsg)
			case tc.cut:
				// The service may cut while the message is still being written.
				bad.WS.Write(context.Background(), websocket.MessageBinary, tc.bad)
			default:
				bad.SendRaw(tc.bad)
			}
			code := tc.code
			if code == 0 {
				code = websocket.StatusPolicyViolation
			}
			if tc.cut {
				bad.WantCut()
			} else if reason := bad.WantClose(code); !strings.Contains(reason, tc.reason) {
				t.Errorf("close reason %q, want it to mention %q", reason, tc.reason)
			}
			if tun.Connected(tc.from) || !tun.Connected(tc.from.other()) {
				t.Errorf("Connected(%v), Connected(%v) = %v, %v; want false, true", tc.from, tc.from.other(), tun.Connected(tc.from), tun.Connected(tc.from.other()))
			}
			// The offending frame was not relayed: the other side's next frame is a marker.
			if err := tun.Send(tc.from.other(), &tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 99, ServiceID: "SSH"}); err != nil {
				t.Fatal(err)
			}
			if m := other.MustNext(); m.StreamID != 99 {
				t.Errorf("%v got %v, want the marker", tc.from.other(), m)
			}
		})
	}
}

// TestMessagesWithinTheLimit: the frames of a message of up to 131076 bytes are
// relayed once it has ended, without waiting for the next message; a frame that
// straddles two messages goes once the second has ended.
func TestMessagesWithinTheLimit(t *testing.T) {
	_, _, src, dst := pair(t, "SSH")
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	dst.MustNext()
	whole := dataFrames(t, tunnel.MaxWebSocketMessage) // three frames
	src.SendRaw(whole)
	for i := range 3 {
		if m := dst.MustNext(); m.Type != tunnel.TypeData {
			t.Fatalf("frame %d: got %v, want DATA", i, m)
		}
	}
	split := dataFrames(t, 40000) // one frame, in two messages
	src.SendRaw(split[:20000])
	src.SendRaw(split[20000:])
	if m := dst.MustNext(); m.Type != tunnel.TypeData || len(m.Payload) != 40000-15 {
		t.Fatalf("got %v, want DATA with a payload of %d bytes", m, 40000-15)
	}
}

// TestUnfinishedMessageHoldsLittle: the frames of a message wait for its end,
// which a client need never send; what they hold per connection stays a few
// times the message limit, whatever their size. Each frame from 4 KiB up was
// read into a 64 KiB buffer: a message of 4 KiB frames, within the limit, held
// 2 MiB.
func TestUnfinishedMessageHoldsLittle(t *testing.T) {
	s := newTestServer(t)
	frame, err := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: make([]byte, 4<<10)})
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat(frame, maxWebSocketMessage/len(frame))
	const conns = 16
	srcs := make([]*client, conns)
	for i := range srcs {
		tun := s.OpenTunnel("SSH")
		srcs[i] = dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
		srcs[i].WantServiceIDs("SSH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := heapInUse()
	for _, src := range srcs {
		w, err := src.WS.Writer(ctx, websocket.MessageBinary)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(msg); err != nil { // not closed: the message goes on
			t.Fatal(err)
		}
		// The ping follows the message's frames: its pong says the server
		// has read them all.
		src.WS.CloseRead(ctx)
		if err := src.WS.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	per := (heapInUse() - base) / conns
	t.Logf("%d connections, each in a message of %d frames of %d bytes: the heap grew by %d KiB per connection", conns, len(msg)/len(frame), len(frame), per>>10)
	if per > 1<<20 {
		t.Errorf("an unfinished message of %d frames of %d bytes grew the heap by %d KiB per connection; want at most 1 MiB (maxHeld is %d KiB)",
			len(msg)/len(frame), len(frame), per>>10, maxHeld>>10)
	}
}

// heapInUse is the heap in use after collections that also empty sync.Pools:
// what is held.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// dataFrames returns DATA frames of stream 1 of service SSH that add up to exactly
// n bytes, each with a payload of 16384 to 64512 bytes, so that each costs its
// payload plus the same overhead.
func dataFrames(t *testing.T, n int) []byte {
	t.Helper()
	frame := func(payload int) []byte {
		b, err := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: make([]byte, payload)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	overhead := len(frame(16384)) - 16384
	k := (n + tunnel.MaxPayload + overhead - 1) / (tunnel.MaxPayload + overhead)
	var b []byte
	for i := range k {
		size := (n - len(b)) / (k - i)
		b = append(b, frame(size-overhead)...)
	}
	if len(b) != n {
		t.Fatalf("dataFrames(%d) made %d bytes", n, len(b))
	}
	return b
}

var (
	rawFrame    = wstest.RawFrame
	varintField = wstest.VarintField
	bytesField  = wstest.BytesField
)

// A connection replaced by a reconnect (or cut by Revoke or Drop) while its
// reader waits for room in a stalled peer's queue must end: its frame is
// stale, and nothing else wakes it until the peer reads again. Otherwise each
// reconnect leaves a handler goroutine, with the frames of its last message,
// for as long as the peer stalls: a source that reconnects in a loop grows the
// service without bound.
func TestReplacedConnDoesNotWaitForAStalledPeer(t *testing.T) {
	s := newTestServer(t)
	tun := s.OpenTunnel("SSH")
	ct := strings.Repeat("a", 32)
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken}) // never read
	if err := tun.WaitConnects(context.Background(), Destination, 1); err != nil {
		t.Fatal(err)
	}
	fill := make(chan struct{})
	go func() { // the stalled destination's socket buffers and queue fill up
		defer close(fill)
		payload := make([]byte, 60000)
		for tun.Send(Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: payload}) == nil {
		}
	}()
	defer func() { dst.WS.CloseNow(); <-fill }()
	time.Sleep(2 * time.Second)

	const reconnects = 10
	for i := range reconnects {
		src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: ct})
		if err := tun.WaitConnects(context.Background(), Source, i+1); err != nil {
			t.Fatal(err)
		}
		src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: int32(i + 1), ServiceID: "SSH", ConnectionID: 1},
			&tunnel.Message{Type: tunnel.TypeData, StreamID: int32(i + 1), ServiceID: "SSH", ConnectionID: 1, Payload: make([]byte, 1000)})
		time.Sleep(100 * time.Millisecond) // its reader now waits for room in the destination's queue
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.connCount() > 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.connCount(); n > 2 {
		t.Errorf("after %d reconnects of the source, %d WebSockets are still served (want 2: the destination and the last source); the replaced ones wait for the stalled destination", reconnects, n)
	}
}

// A first handshake whose use cannot be recorded (OnFirstUse fails) gives its
// token back, but not once another handshake with the same client token has
// connected meanwhile (the same client, reconnecting): the token is in use
// then, and a third party holding the token alone must still be refused.
func TestFailedFirstUseKeepsATokenInUse(t *testing.T) {
	s := newTestServer(t)
	tun := s.OpenTunnel("SSH")
	const ct = "client-token-0123456789abcdef0123456789"
	second := make(chan *websocket.Conn, 1)
	var calls atomic.Int32
	s.OnFirstUse = func(*Tunnel) error {
		if calls.Add(1) == 1 {
			// Another connection of the same client gets in while this
			// one's use is being recorded.
			ws, _, err := dialRaw(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct})
			if err != nil {
				t.Errorf("the same client's second handshake: %v", err)
			}
			second <- ws
		}
		return errors.New("disk full")
	}
	if _, resp, err := dialRaw(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("first handshake, its use not recorded: %v, want 503", err)
	}
	ws := <-second
	if ws == nil {
		t.FailNow()
	}
	defer ws.CloseNow()
	if !tun.Side(Destination).Used {
		t.Error("the token is no longer used while a connection made with it is up")
	}
	if _, resp, err := dialRaw(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken}); err == nil {
		t.Error("a handshake with the token alone got in")
	} else if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a handshake with the token alone: %v, want 400", err)
	}
}

// A request with a good token that is no WebSocket upgrade (a curl probe, a
// proxy that strips the Upgrade headers) is refused before the token is looked
// at: it consumed the token, and OnFirstUse recorded that (tunneld saves it), so
// after a restart the token's real first handshake was refused as used.
func TestBadUpgradeConsumesNoToken(t *testing.T) {
	s := newTestServer(t)
	tun := s.OpenTunnel("SSH")
	var calls atomic.Int32
	s.OnFirstUse = func(*Tunnel) error { calls.Add(1); return nil }
	base := "http" + strings.TrimPrefix(s.URL, "ws") + "/tunnel?local-proxy-mode=destination"
	for _, tc := range []struct {
		name   string
		method string
		header http.Header
		status int
	}{
		{"no upgrade headers", "GET", http.Header{}, http.StatusUpgradeRequired},
		{"POST", "POST", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-WebSocket-Version": {"13"}, "Sec-WebSocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, http.StatusMethodNotAllowed},
		{"version 8", "GET", http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"websocket"}, "Sec-WebSocket-Version": {"8"}, "Sec-WebSocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, http.StatusBadRequest},
		{"short key", "GET", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-WebSocket-Version": {"13"}, "Sec-WebSocket-Key": {"c2hvcnQ="}}, http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(tc.method, base, nil)
		req.Header = tc.header
		req.Header.Set("access-token", tun.DestinationToken)
		req.Header.Set("Sec-WebSocket-Protocol", SubprotocolV3)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
	if n := calls.Load(); n != 0 || tun.Side(Destination).Used {
		t.Errorf("after refused upgrades: OnFirstUse called %d times, token used %v", n, tun.Side(Destination).Used)
	}
	c := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	c.WS.CloseNow()
	if calls.Load() != 1 {
		t.Errorf("the real first handshake: OnFirstUse called %d times, want 1", calls.Load())
	}
}

// The format a source's WebSocket started its streams in holds for its whole
// life: the destination reconnecting (which resets the streams) does not make a
// switch legal.
func TestFormatKeptAcrossPeerReconnect(t *testing.T) {
	s := newTestServer(t)
	tun := s.OpenTunnel("SSH")
	ct := strings.Repeat("b", 32)
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct})
	dst.WantServiceIDs("SSH")
	src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	src.WantServiceIDs("SSH")
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1})
	dst.MustNext()
	dst2 := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct})
	dst2.WantServiceIDs("SSH")
	if m := src.MustNext(); m.Type != tunnel.TypeStreamReset || m.StreamID != 1 {
		t.Fatalf("source got %v, want the service's STREAM_RESET for stream 1", m)
	}
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 2, ServiceID: "SSH"})
	if reason := src.WantClose(websocket.StatusPolicyViolation); !strings.Contains(reason, "started without one") {
		t.Errorf("close reason %q", reason)
	}
}

// A source that takes another's place may start its streams without service
// ids (an operator switching to a V1-format tool mid-download). What the
// destination sent for the old stream before it read the service's
// STREAM_RESET is stale, whatever its stream id (localproxy's start at 1 in
// each process): it is dropped, and the destination, which did nothing wrong,
// stays connected. Closing it ended the tunnel for a device that takes any
// Close frame as final; relayed, a V1 source that takes an unknown service id
// for its first (localproxy) would take it for its new stream's data.
func TestDestinationInFlightFramesAcrossAFormatSwitch(t *testing.T) {
	for _, id := range []int32{1, 5} {
		s := newTestServer(t)
		tun := s.OpenTunnel("SSH")
		sct := strings.Repeat("c", 32)
		dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: strings.Repeat("d", 32)})
		dst.WantServiceIDs("SSH")
		src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: sct})
		src.WantServiceIDs("SSH")
		src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
		dst.MustNext()
		src2 := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: sct})
		src2.WantServiceIDs("SSH")
		if m := dst.MustNext(); m.Type != tunnel.TypeStreamReset || m.StreamID != 1 {
			t.Fatalf("destination got %v, want the service's STREAM_RESET for stream 1", m)
		}
		src2.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: id})
		if m := dst.MustNext(); m.Type != tunnel.TypeStreamStart || m.StreamID != id {
			t.Fatalf("destination got %v, want the V1 STREAM_START", m)
		}
		// Sent before the destination read the two frames above.
		dst.Send(&tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: []byte("late")})
		dst.Send(&tunnel.Message{Type: tunnel.TypeData, StreamID: id, Payload: []byte("v1")})
		if m := src2.MustNext(); m.ServiceID != "" || string(m.Payload) != "v1" {
			t.Fatalf("V1 stream %d: the source got %v, want the V1 stream's data only", id, m)
		}
	}
}

// TestClosedServerAnswersWithAChannelID: a handshake that comes while the
// server shuts down is refused with 503 and, as every refusal, a channel-id
// for the client to log (spec §2.2).
func TestClosedServerAnswersWithAChannelID(t *testing.T) {
	s := &Server{}
	s.Close()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/tunnel?local-proxy-mode=source", nil))
	if w.Code != http.StatusServiceUnavailable || len(w.Header().Get("channel-id")) != 36 {
		t.Fatalf("a handshake to a closed server: %d, channel-id %q; want 503 with a channel-id", w.Code, w.Header().Get("channel-id"))
	}
}
