package tunneltest

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/internal/wstest"
)

var (
	rawFrame    = wstest.RawFrame
	varintField = wstest.VarintField
	bytesField  = wstest.BytesField
)

func frame(t *testing.T, m *tunnel.Message) []byte {
	t.Helper()
	b, err := tunnel.AppendFrame(nil, m)
	if err != nil {
		t.Fatalf("AppendFrame(%v): %v", m, err)
	}
	return b
}

func TestRelayOneFramePerMessage(t *testing.T) {
	_, tun, src, dst := pair(t, "SSH", "WEB")
	tun.Record(true)
	want := []*tunnel.Message{
		{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1},
		{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("hello")},
		{Type: tunnel.TypeConnectionStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 2},
		{Type: tunnel.TypeConnectionReset, StreamID: 1, ServiceID: "SSH", ConnectionID: 1},
		{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: bytes.Repeat([]byte{7}, tunnel.MaxPayload)},
	}
	src.Send(want...) // one message, five frames
	for i, w := range want {
		typ, b, err := dst.WS.Read(context.Background())
		if err != nil || typ != websocket.MessageBinary {
			t.Fatalf("message %d: %v %v", i, typ, err)
		}
		if !bytes.Equal(b, frame(t, w)) {
			t.Errorf("message %d = %d bytes, want exactly the frame %v", i, len(b), w)
		}
	}
	dst.Send(&tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: []byte("back")})
	if m := src.MustNext(); m.Type != tunnel.TypeData || string(m.Payload) != "back" {
		t.Errorf("source got %v, want DATA back", m)
	}
	got := tun.Received(Source)
	if len(got) != len(want) {
		t.Fatalf("Received(Source) has %d frames, want %d", len(got), len(want))
	}
	for i, f := range got {
		w := *want[i]
		if f.PayloadLen != len(w.Payload) || f.Message.Payload != nil {
			t.Errorf("Received(Source)[%d]: PayloadLen %d, Payload %v; want %d, nil", i, f.PayloadLen, f.Message.Payload != nil, len(w.Payload))
		}
		w.Payload = nil
		if f.Message.String() != w.String() {
			t.Errorf("Received(Source)[%d] = %v, want %v", i, &f.Message, &w)
		}
	}
	if n := len(tun.Received(Destination)); n != 1 {
		t.Errorf("Received(Destination) has %d frames, want 1", n)
	}
}

// streamReader reads a client's binary messages raw until it has n bytes.
type streamReader struct {
	data  []byte
	sizes []int
	err   error
}

func readStream(ws *websocket.Conn, n int) <-chan *streamReader {
	ch := make(chan *streamReader, 1)
	go func() {
		r := new(streamReader)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for len(r.data) < n {
			typ, b, err := ws.Read(ctx)
			if err == nil && typ != websocket.MessageBinary {
				err = errors.New("text message")
			}
			if err != nil {
				r.err = err
				break
			}
			r.data = append(r.data, b...)
			r.sizes = append(r.sizes, len(b))
		}
		ch <- r
	}()
	return ch
}

// frameStarts returns the offsets at which frames start in a stream of whole frames.
func frameStarts(b []byte) map[int]bool {
	starts := make(map[int]bool)
	for off := 0; off+2 <= len(b); off += 2 + (int(b[off])<<8 | int(b[off+1])) {
		starts[off] = true
	}
	return starts
}

// sendChunked writes b as messages of random sizes.
func sendChunked(t *testing.T, ws *websocket.Conn, b []byte, rng *rand.Rand) {
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN([]int{10, 3000, 100000}[rng.IntN(3)]))
		if err := ws.Write(context.Background(), websocket.MessageBinary, b[:n]); err != nil {
			t.Errorf("writing: %v", err)
			return
		}
		b = b[n:]
	}
}

func TestRelayRechunk(t *testing.T) {
	s := NewServer(t)
	tun := s.OpenTunnel("SSH")
	tun.Rechunk(42)
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	serviceIDs := frame(t, &tunnel.Message{Type: tunnel.TypeServiceIDs, AvailableServiceIDs: []string{"SSH"}})

	rng := rand.New(rand.NewPCG(1, 2))
	// Source → destination: a STREAM_START, then DATA of mixed sizes, an ignorable
	// unknown type and frames whose fields are in an unusual order, which a relay that
	// re-encoded would normalize.
	up := frame(t, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	for i := range 400 {
		size := rng.IntN(300)
		if i%4 == 0 {
			size = rng.IntN(tunnel.MaxPayload + 1)
		}
		payload := make([]byte, size)
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		switch i % 50 {
		case 7:
			up = append(up, rawFrame(varintField(3, 1), varintField(1, 42), bytesField(4, payload[:min(size, 100)]))...)
		case 9:
			up = append(up, rawFrame(bytesField(5, []byte("SSH")), bytesField(4, payload), varintField(2, 1), varintField(1, 1))...)
		default:
			up = append(up, frame(t, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: payload})...)
		}
	}
	var down []byte
	for i := range 100 {
		down = append(down, frame(t, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: bytes.Repeat([]byte{byte(i)}, i*50)})...)
	}

	wantDst := append(append([]byte(nil), serviceIDs...), up...)
	wantSrc := append(append([]byte(nil), serviceIDs...), down...)
	gotDst := readStream(dst.WS, len(wantDst))
	gotSrc := readStream(src.WS, len(wantSrc))
	sendChunked(t, src.WS, up[:len(up)/2], rng)
	// The destination speaks once the stream has started.
	if err := tun.WaitConnects(context.Background(), Destination, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(10 * time.Millisecond)
		sendChunked(t, dst.WS, down, rand.New(rand.NewPCG(3, 4)))
	}()
	sendChunked(t, src.WS, up[len(up)/2:], rng)
	<-done

	for _, tc := range []struct {
		name string
		got  *streamReader
		want []byte
	}{
		{"destination", <-gotDst, wantDst},
		{"source", <-gotSrc, wantSrc},
	} {
		if tc.got.err != nil {
			t.Fatalf("%s: reading: %v", tc.name, tc.got.err)
		}
		if !bytes.Equal(tc.got.data, tc.want) {
			t.Fatalf("%s received %d bytes that differ from the %d sent", tc.name, len(tc.got.data), len(tc.want))
		}
		starts := frameStarts(tc.want)
		if want := map[string]int{"destination": 402, "source": 101}[tc.name]; len(starts) != want {
			t.Fatalf("%s: %d frames in the stream, want %d", tc.name, len(starts), want)
		}
		straddle, multi, off := 0, 0, 0
		for _, n := range tc.got.sizes {
			if n > tunnel.MaxWebSocketMessage {
				t.Errorf("%s: message of %d bytes", tc.name, n)
			}
			k := 0
			for i := off; i < off+n; i++ {
				if starts[i] {
					k++
				}
			}
			if k >= 2 {
				multi++
			}
			off += n
			if !starts[off] && off < len(tc.want) {
				straddle++
			}
		}
		t.Logf("%s: %d messages, %d with several frames, %d boundaries inside a frame", tc.name, len(tc.got.sizes), multi, straddle)
		if multi == 0 || straddle == 0 {
			t.Errorf("%s: %d messages with several frames, %d cut inside a frame: want both > 0", tc.name, multi, straddle)
		}
	}
}

func TestFramesToAbsentSideAreDropped(t *testing.T) {
	s := NewServer(t)
	s.Logf = t.Logf
	tun := s.OpenTunnel("SSH")
	src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	src.WantServiceIDs("SSH")
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	if err := tun.Send(Destination, &tunnel.Message{Type: tunnel.TypeSessionReset}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send to an absent side: %v, want ErrNotConnected", err)
	}
	tun.Record(true)
	src.Send(&tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: []byte("lost")})
	// Until the DATA itself is in: the STREAM_START sent before Record may be
	// recorded first, and the DATA, still on its way, then reached the
	// destination connected below.
	for deadline := time.Now().Add(5 * time.Second); !receivedType(tun, Source, tunnel.TypeData); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the source's DATA was not received within 5 s")
		}
	}
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	dst.WantServiceIDs("SSH")
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 2, ServiceID: "SSH"})
	if m := dst.MustNext(); m.Type != tunnel.TypeStreamStart || m.StreamID != 2 {
		t.Errorf("destination got %v first, want STREAM_START 2", m)
	}
}

// receivedType reports whether a frame of type typ from side was recorded.
func receivedType(tun *Tunnel, side Side, typ tunnel.Type) bool {
	for _, f := range tun.Received(side) {
		if f.Message.Type == typ {
			return true
		}
	}
	return false
}

func TestDrop(t *testing.T) {
	_, tun, src, dst := pair(t, "SSH")
	tun.Drop(Destination)
	dst.WantCut()
	if tun.Connected(Destination) || !tun.Connected(Source) {
		t.Errorf("Connected = %v, %v after Drop(Destination), want true, false", tun.Connected(Source), tun.Connected(Destination))
	}
	// The source stays up; what it sends now goes nowhere.
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	tun.SessionReset(Source)
	if m := src.MustNext(); m.Type != tunnel.TypeSessionReset {
		t.Errorf("source got %v, want SESSION_RESET", m)
	}
}

func TestDropAfter(t *testing.T) {
	const ct = "abcdefabcdefabcdefabcdefabcdefab"
	s := NewServer(t)
	s.Logf = t.Logf
	tun := s.OpenTunnel("SSH")
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	dst.WantServiceIDs("SSH")
	src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: ct})
	src.WantServiceIDs("SSH")
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	dst.MustNext()

	tun.DropAfter(Source, 3)
	for i := 1; i <= 5; i++ {
		// Separate messages; writes after the cut may fail, which is fine.
		b := frame(t, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: []byte{byte(i)}})
		if err := src.WS.Write(context.Background(), websocket.MessageBinary, b); err != nil {
			break
		}
	}
	src.WantCut()
	for i := 1; i <= 2; i++ {
		if m := dst.MustNext(); m.Type != tunnel.TypeData || m.Payload[0] != byte(i) {
			t.Fatalf("destination got %v, want DATA %d", m, i)
		}
	}
	if tun.Connected(Source) {
		t.Errorf("source still connected after DropAfter")
	}
	// Nothing else was relayed: the next frame is one the test sends now.
	if err := tun.Send(Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 9, ServiceID: "SSH"}); err != nil {
		t.Fatal(err)
	}
	if m := dst.MustNext(); m.StreamID != 9 {
		t.Errorf("destination got %v, want the marker (stream 9)", m)
	}
	// DropAfter fired once; the reconnected source relays again.
	src = dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: ct})
	src.WantServiceIDs("SSH")
	if m := dst.MustNext(); m.Type != tunnel.TypeStreamReset || m.StreamID != 1 || m.ServiceID != "SSH" {
		t.Errorf("destination got %v after the source reconnected, want STREAM_RESET 1 SSH", m)
	}
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 2, ServiceID: "SSH"},
		&tunnel.Message{Type: tunnel.TypeData, StreamID: 2, ServiceID: "SSH"},
		&tunnel.Message{Type: tunnel.TypeData, StreamID: 2, ServiceID: "SSH"})
	for range 3 {
		if m := dst.MustNext(); m.StreamID != 2 {
			t.Errorf("destination got %v, want stream 2", m)
		}
	}
}

func TestStreamResetOnReplacement(t *testing.T) {
	const srcCT, dstCT = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa", "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"
	s := NewServer(t)
	s.Logf = t.Logf
	tun := s.OpenTunnel("SSH", "WEB", "VNC")
	services := tun.Services()
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: dstCT})
	dst.WantServiceIDs(services...)
	src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: srcCT})
	src.WantServiceIDs(services...)
	src.Send(
		&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "WEB"},
		&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 4, ServiceID: "SSH"},
		&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "VNC"},
		&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 5, ServiceID: "SSH"}, // replaces 4
		&tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 3, ServiceID: "VNC"}, // stale: VNC stays
	)
	dst.Send(&tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 1, ServiceID: "WEB"}) // WEB ends
	for range 5 {
		dst.MustNext()
	}
	src.MustNext()

	// The destination is replaced: the source hears of the active streams.
	dst2 := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: dstCT})
	dst2.WantServiceIDs(services...)
	dst.WantCut()
	for _, w := range []tunnel.Message{
		{Type: tunnel.TypeStreamReset, StreamID: 5, ServiceID: "SSH"},
		{Type: tunnel.TypeStreamReset, StreamID: 1, ServiceID: "VNC"},
	} {
		if m := src.MustNext(); m.String() != w.String() {
			t.Errorf("source got %v, want %v", m, &w)
		}
	}
	// Those streams are gone: the source reconnecting tells the destination nothing,
	// except a stream started since.
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 6, ServiceID: "SSH"})
	dst2.MustNext()
	src.WS.CloseNow()
	src2 := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: srcCT})
	src2.WantServiceIDs(services...)
	if m := dst2.MustNext(); m.Type != tunnel.TypeStreamReset || m.StreamID != 6 || m.ServiceID != "SSH" {
		t.Errorf("destination got %v, want STREAM_RESET 6 SSH", m)
	}

	// V1 streams reset with an empty service id.
	tun1 := s.OpenTunnel()
	d1 := dial(t, s, dialOpts{Mode: "destination", Token: tun1.DestinationToken, ClientToken: "cccccccc-cccc-cccc-cccc-cccccccccccc", Subprotocols: []string{SubprotocolV1}})
	s1 := dial(t, s, dialOpts{Mode: "source", Token: tun1.SourceToken, Subprotocols: []string{SubprotocolV1}})
	s1.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 3})
	d1.MustNext()
	dial(t, s, dialOpts{Mode: "destination", Token: tun1.DestinationToken, ClientToken: "cccccccc-cccc-cccc-cccc-cccccccccccc", Subprotocols: []string{SubprotocolV1}})
	if m := s1.MustNext(); m.Type != tunnel.TypeStreamReset || m.StreamID != 3 || m.ServiceID != "" {
		t.Errorf("V1 source got %v, want STREAM_RESET 3", m)
	}
}

func TestSessionResetAndSend(t *testing.T) {
	_, tun, src, dst := pair(t, "SSH")
	tun.SessionReset(Destination)
	if m := dst.MustNext(); m.Type != tunnel.TypeSessionReset {
		t.Errorf("destination got %v, want SESSION_RESET", m)
	}
	if err := tun.Send(Source, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"}); err != nil {
		t.Fatal(err)
	}
	if m := src.MustNext(); m.Type != tunnel.TypeStreamStart {
		t.Errorf("source got %v, want STREAM_START", m)
	}
	if err := tun.Send(Source, &tunnel.Message{Type: tunnel.TypeData}); !errors.Is(err, tunnel.ErrProtocol) {
		t.Errorf("Send(DATA with stream 0) = %v, want ErrProtocol", err)
	}
	// SendRaw gets what the encoder refuses to the client.
	if err := tun.SendRaw(Source, rawFrame(varintField(2, 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Next(); !errors.Is(err, tunnel.ErrProtocol) {
		t.Errorf("reading a type 0 frame: %v, want ErrProtocol", err)
	}
}

func TestClose(t *testing.T) {
	s, tun, src, dst := pair(t, "SSH")
	if err := tun.Send(Source, &tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 1, ServiceID: "SSH"}); err != nil {
		t.Fatal(err)
	}
	tun.Close()
	if m := src.MustNext(); m.Type != tunnel.TypeStreamReset {
		t.Errorf("source got %v, want the frame queued before Close", m)
	}
	src.WantClose(websocket.StatusNormalClosure)
	dst.WantClose(websocket.StatusNormalClosure)
	if tun.Connected(Source) || tun.Connected(Destination) {
		t.Errorf("still connected after Close")
	}
	_, resp, err := dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	if err == nil || resp.StatusCode != 400 {
		t.Errorf("handshake after Close: %v, want 400", err)
	}
	if err := tun.WaitConnects(context.Background(), Source, 2); !errors.Is(err, ErrTunnelClosed) {
		t.Errorf("WaitConnects after Close = %v, want ErrTunnelClosed", err)
	}
}

func TestWaitConnects(t *testing.T) {
	s := NewServer(t)
	tun := s.OpenTunnel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := tun.WaitConnects(ctx, Source, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitConnects before any connect = %v, want DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() { done <- tun.WaitConnects(context.Background(), Destination, 1) }()
	dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	if err := <-done; err != nil {
		t.Errorf("WaitConnects = %v", err)
	}
}

func TestSetPong(t *testing.T) {
	s := NewServer(t)
	tun := s.OpenTunnel()
	c := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, Subprotocols: []string{SubprotocolV1}})
	c.WS.CloseRead(context.Background()) // reads pongs; V1 gets no SERVICE_IDS
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		return c.WS.Ping(ctx)
	}
	if err := ping(); err != nil {
		t.Errorf("Ping: %v", err)
	}
	tun.SetPong(false)
	if err := ping(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping with pongs off = %v, want DeadlineExceeded", err)
	}
	tun.SetPong(true)
	if err := ping(); err != nil {
		t.Errorf("Ping after SetPong(true): %v", err)
	}
}

func TestIgnorableUnknownTypeIsRelayed(t *testing.T) {
	_, _, src, dst := pair(t, "SSH")
	f := frame(t, &tunnel.Message{Type: 42, Ignorable: true, StreamID: 1})
	src.SendRaw(f)
	_, b, err := dst.WS.Read(context.Background())
	if err != nil || !bytes.Equal(b, f) {
		t.Errorf("destination read %x, %v; want %x", b, err, f)
	}
}

func TestServerCloseEndsEverything(t *testing.T) {
	s := NewServer(t)
	tun := s.OpenTunnel("SSH")
	src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	tun.Rechunk(1)
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	s.Close()
	s.Close()
	for _, c := range []*client{src, dst} {
		c.Closed() // returns once the connection ends
	}
}

func TestReadLimit(t *testing.T) {
	_, _, src, dst := pair(t, "SSH")
	// A 131076-byte message is accepted, even cutting a frame in two.
	stream := frame(t, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	for len(stream) < tunnel.MaxWebSocketMessage+1000 {
		stream = append(stream, frame(t, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: make([]byte, tunnel.MaxPayload)})...)
	}
	src.SendRaw(stream[:tunnel.MaxWebSocketMessage])
	src.SendRaw(stream[tunnel.MaxWebSocketMessage:])
	for range frameStarts(stream) {
		dst.MustNext()
	}
	// One byte more cuts the connection without a Close frame (spec §1.3: an
	// abnormal close; the cut may come while the message is still written),
	// and nothing of that message is relayed.
	first := len(frame(t, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"}))
	dst.WS.Write(context.Background(), websocket.MessageBinary, stream[first:first+tunnel.MaxWebSocketMessage+1])
	dst.WantCut()
}

func TestSendCountsAsPeer(t *testing.T) {
	const ct = "dddddddd-dddd-dddd-dddd-dddddddddddd"
	s := NewServer(t)
	s.Logf = t.Logf
	tun := s.OpenTunnel("SSH")
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct})
	dst.WantServiceIDs("SSH")
	src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	src.WantServiceIDs("SSH")
	// The test plays the source: the destination may answer on the stream.
	if err := tun.Send(Destination, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 3, ServiceID: "SSH"}); err != nil {
		t.Fatal(err)
	}
	dst.MustNext()
	dst.Send(&tunnel.Message{Type: tunnel.TypeData, StreamID: 3, ServiceID: "SSH", Payload: []byte("ok")})
	if m := src.MustNext(); m.Type != tunnel.TypeData || m.StreamID != 3 {
		t.Errorf("source got %v, want DATA on stream 3", m)
	}
	// And the stream is reset when the destination is replaced.
	dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct}).WantServiceIDs("SSH")
	if m := src.MustNext(); m.Type != tunnel.TypeStreamReset || m.StreamID != 3 {
		t.Errorf("source got %v, want STREAM_RESET 3", m)
	}
}
