package tunnel

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/porthole-iot/porthole/agent/tunnel/pb"
)

// toPB converts m to the generated reference type.
func toPB(m *Message) *pb.Message {
	return &pb.Message{
		Type:                pb.Message_Type(m.Type),
		StreamId:            m.StreamID,
		Ignorable:           m.Ignorable,
		Payload:             m.Payload,
		ServiceId:           m.ServiceID,
		AvailableServiceIds: m.AvailableServiceIDs,
		ConnectionId:        m.ConnectionID,
	}
}

func fromPB(p *pb.Message) *Message {
	m := &Message{
		Type:                Type(p.GetType()),
		StreamID:            p.GetStreamId(),
		Ignorable:           p.GetIgnorable(),
		Payload:             p.GetPayload(),
		ServiceID:           p.GetServiceId(),
		AvailableServiceIDs: p.GetAvailableServiceIds(),
		ConnectionID:        p.GetConnectionId(),
	}
	if len(m.Payload) == 0 {
		m.Payload = nil
	}
	return m
}

var validMessages = []struct {
	name string
	msg  Message
}{
	{"data", Message{Type: TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("hello")}},
	{"data v1", Message{Type: TypeData, StreamID: 7, Payload: []byte{0, 1, 2}}},
	{"stream start", Message{Type: TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1}},
	{"stream reset", Message{Type: TypeStreamReset, StreamID: 2147483647, ServiceID: "WEB"}},
	{"negative stream", Message{Type: TypeStreamReset, StreamID: -5}},
	{"session reset", Message{Type: TypeSessionReset}},
	{"service ids", Message{Type: TypeServiceIDs, AvailableServiceIDs: []string{"SSH", "WEB", "VNC"}}},
	{"connection start", Message{Type: TypeConnectionStart, StreamID: 3, ServiceID: "SSH", ConnectionID: 4294967295}},
	{"connection reset", Message{Type: TypeConnectionReset, StreamID: 3, ServiceID: "SSH", ConnectionID: 2}},
	{"ignorable known", Message{Type: TypeData, StreamID: 1, Ignorable: true}},
	{"max payload", Message{Type: TypeData, StreamID: 1, ServiceID: "SSH", Payload: bytes.Repeat([]byte{0xaa}, MaxPayload)}},
}

func TestAppendFrameMatchesGenerated(t *testing.T) {
	for _, tc := range validMessages {
		t.Run(tc.name, func(t *testing.T) {
			frame, err := AppendFrame(nil, &tc.msg)
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(toPB(&tc.msg))
			if err != nil {
				t.Fatalf("proto.Marshal: %v", err)
			}
			if n := int(frame[0])<<8 | int(frame[1]); n != len(frame)-2 {
				t.Fatalf("length prefix %d, body %d bytes", n, len(frame)-2)
			}
			if !bytes.Equal(frame[2:], want) {
				t.Fatalf("AppendFrame body = %x, want %x", frame[2:], want)
			}
			var got Message
			if err := NewFrameReader(bytes.NewReader(frame)).Next(&got); err != nil {
				t.Fatalf("Next: %v", err)
			}
			if diff := cmp.Diff(&tc.msg, &got); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAppendFrameRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  Message
		want string
	}{
		{"type 0", Message{StreamID: 1}, "type 0"},
		{"payload too big", Message{Type: TypeData, StreamID: 1, Payload: make([]byte, MaxPayload+1)}, "exceeds 64512"},
		{"data stream 0", Message{Type: TypeData, Payload: []byte("x")}, "stream id 0"},
		{"start stream 0", Message{Type: TypeStreamStart, ServiceID: "SSH"}, "stream id 0"},
		{"conn reset stream 0", Message{Type: TypeConnectionReset, ConnectionID: 1}, "stream id 0"},
		{"bad utf8", Message{Type: TypeStreamStart, StreamID: 1, ServiceID: "\xff"}, "UTF-8"},
		{"message too big", Message{Type: TypeServiceIDs, AvailableServiceIDs: []string{strings.Repeat("a", 40000), strings.Repeat("b", 40000)}}, "exceeds 65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := AppendFrame([]byte("keep"), &tc.msg)
			if err == nil || !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AppendFrame(%v) error = %v, want ErrProtocol containing %q", &tc.msg, err, tc.want)
			}
			if string(b) != "keep" {
				t.Fatalf("AppendFrame changed the buffer on error: %q", b)
			}
		})
	}
}

// rawFrame prefixes body with its 2-byte length.
func rawFrame(body ...byte) []byte {
	return append([]byte{byte(len(body) >> 8), byte(len(body))}, body...)
}

func TestFrameReaderRules(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		want    *Message // nil: expect an error containing err
		wantErr string
	}{
		{"type 0", rawFrame(0x10, 0x01), nil, "type 0"},
		{"empty body is type 0", rawFrame(), nil, "type 0"},
		{"unknown type", rawFrame(0x08, 0x09, 0x10, 0x01), nil, "unknown message type 9"},
		{"negative type", rawFrame(0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), nil, "unknown message type -1"},
		{"data stream 0", rawFrame(0x08, 0x01, 0x22, 0x01, 'x'), nil, "DATA with stream id 0"},
		{"stream start stream 0", rawFrame(0x08, 0x02, 0x2a, 0x01, 'S'), nil, "STREAM_START with stream id 0"},
		{"truncated varint", rawFrame(0x08), nil, "field 1"},
		{"truncated bytes", rawFrame(0x08, 0x01, 0x10, 0x01, 0x22, 0x05, 'a'), nil, "field 4"},
		{"bad utf8 service", rawFrame(0x08, 0x02, 0x10, 0x01, 0x2a, 0x01, 0xff), nil, "UTF-8"},
		{"field number 0", rawFrame(0x00, 0x01), nil, "tag"},
		{"truncated frame", []byte{0x00, 0x05, 0x08, 0x01}, nil, "unexpected EOF"},
		{"unknown field skipped", rawFrame(0x08, 0x01, 0x10, 0x01, 0x40, 0x05, 0x4a, 0x01, 'z'), &Message{Type: TypeData, StreamID: 1}, ""},
		{"wrong wire type skipped", rawFrame(0x08, 0x01, 0x10, 0x01, 0x25, 1, 2, 3, 4), &Message{Type: TypeData, StreamID: 1}, ""},
		{"last scalar wins", rawFrame(0x08, 0x03, 0x10, 0x01, 0x10, 0x02), &Message{Type: TypeStreamReset, StreamID: 2}, ""},
		{"session reset", rawFrame(0x08, 0x04), &Message{Type: TypeSessionReset}, ""},
		{"ignorable unknown dropped", append(rawFrame(0x08, 0x63, 0x18, 0x01), rawFrame(0x08, 0x04)...), &Message{Type: TypeSessionReset}, ""},
		{"ignorable unknown then clean end", rawFrame(0x08, 0x63, 0x18, 0x01), nil, "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got Message
			err := NewFrameReader(bytes.NewReader(tc.in)).Next(&got)
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Next(%x) = %v, %v; want error containing %q", tc.in, &got, err, tc.wantErr)
				}
				if tc.wantErr != "EOF" && tc.wantErr != "unexpected EOF" && !errors.Is(err, ErrProtocol) {
					t.Fatalf("Next(%x) error %v does not wrap ErrProtocol", tc.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Next(%x) error = %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, &got); diff != "" {
				t.Fatalf("Next(%x) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestFrameReaderOversizedPayload(t *testing.T) {
	// A 64 513-byte payload fits the 2-byte prefix but breaks the payload limit.
	m := Message{Type: TypeData, StreamID: 1, Payload: make([]byte, MaxPayload+1)}
	body := m.appendMarshal(nil)
	in := append([]byte{byte(len(body) >> 8), byte(len(body))}, body...)
	var got Message
	err := NewFrameReader(bytes.NewReader(in)).Next(&got)
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "exceeds 64512") {
		t.Fatalf("Next(oversized payload) = %v, want ErrProtocol exceeds 64512", err)
	}
}

// chunkReader returns its chunks one per Read, like WebSocket messages.
type chunkReader struct{ chunks [][]byte }

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	return n, nil
}

// splitAt cuts b at the offsets taken from cuts (each byte picks the next chunk length).
func splitAt(b, cuts []byte) [][]byte {
	var out [][]byte
	for i := 0; len(b) > 0; i++ {
		n := len(b)
		if len(cuts) > 0 {
			n = int(cuts[i%len(cuts)]) + 1
			if i >= 4*len(cuts) { // keep the number of pieces bounded
				n = len(b)
			}
		}
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func TestFrameReaderReassembles(t *testing.T) {
	var stream []byte
	for _, tc := range validMessages {
		var err error
		if stream, err = AppendFrame(stream, &tc.msg); err != nil {
			t.Fatal(err)
		}
	}
	for _, cuts := range [][]byte{nil, {0}, {1}, {2, 200, 7}, {255}} {
		fr := NewFrameReader(&chunkReader{chunks: splitAt(stream, cuts)})
		for _, tc := range validMessages {
			var got Message
			if err := fr.Next(&got); err != nil {
				t.Fatalf("cuts %v: Next for %s: %v", cuts, tc.name, err)
			}
			if diff := cmp.Diff(&tc.msg, &got); diff != "" {
				t.Fatalf("cuts %v: %s (-want +got):\n%s", cuts, tc.name, diff)
			}
		}
		var m Message
		if err := fr.Next(&m); err != io.EOF {
			t.Fatalf("cuts %v: Next at end = %v, want io.EOF", cuts, err)
		}
	}
}

// FuzzFrameReader feeds arbitrary bytes, split at arbitrary points, to the frame
// reader. Every frame it accepts must decode identically with the generated protobuf
// type and re-encode to a frame that decodes to the same message.
func FuzzFrameReader(f *testing.F) {
	for _, tc := range validMessages {
		frame, _ := AppendFrame(nil, &tc.msg)
		f.Add(frame, []byte{3, 17})
	}
	f.Add(rawFrame(0x08, 0x63, 0x18, 0x01), []byte{0})
	f.Add(rawFrame(0x08, 0x01, 0x10, 0x01, 0x40, 0x05, 0x4a, 0x01, 'z'), []byte{1})
	f.Add([]byte{0x00, 0x05, 0x08, 0x01}, []byte{})
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		fr := NewFrameReader(&chunkReader{chunks: splitAt(in, cuts)})
		for {
			var m Message
			err := fr.Next(&m)
			if err != nil {
				return
			}
			// The accepted body must mean the same to protobuf-go.
			var p pb.Message
			if err := proto.Unmarshal(fr.buf[:int(fr.hdr[0])<<8|int(fr.hdr[1])], &p); err != nil {
				t.Fatalf("FrameReader accepted %v, proto.Unmarshal refused: %v", &m, err)
			}
			if diff := cmp.Diff(fromPB(&p), &m); diff != "" {
				t.Fatalf("decoders disagree (-proto +ours):\n%s", diff)
			}
			out, err := AppendFrame(nil, &m)
			if err != nil {
				t.Fatalf("AppendFrame of an accepted message %v: %v", &m, err)
			}
			var again Message
			if err := NewFrameReader(bytes.NewReader(out)).Next(&again); err != nil {
				t.Fatalf("re-decoding %x: %v", out, err)
			}
			if diff := cmp.Diff(&m, &again); diff != "" {
				t.Fatalf("re-encode changed the message (-first +again):\n%s", diff)
			}
		}
	})
}

// FuzzUnmarshal checks the hand-written decoder against protobuf-go on raw bodies:
// both must accept or refuse the same input and agree on every field.
func FuzzUnmarshal(f *testing.F) {
	for _, tc := range validMessages {
		f.Add(tc.msg.appendMarshal(nil))
	}
	f.Add([]byte{0x08, 0x01, 0x25, 1, 2, 3, 4})
	f.Add([]byte{0x2a, 0x01, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		var m Message
		ourErr := m.unmarshal(body)
		var p pb.Message
		theirErr := proto.Unmarshal(body, &p)
		if (ourErr == nil) != (theirErr == nil) {
			t.Fatalf("unmarshal(%x): ours %v, protobuf-go %v", body, ourErr, theirErr)
		}
		if ourErr != nil {
			return
		}
		if diff := cmp.Diff(fromPB(&p), &m); diff != "" {
			t.Fatalf("unmarshal(%x) (-proto +ours):\n%s", body, diff)
		}
		if m.checkEncodable() == nil {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(toPB(&m))
			if err != nil {
				t.Fatal(err)
			}
			if got := m.appendMarshal(nil); !bytes.Equal(got, want) {
				t.Fatalf("marshal %v = %x, protobuf-go %x", &m, got, want)
			}
		}
	})
}

// TestFrameReaderCutInsideFrame: a stream that ends inside a frame's body, or
// inside its length prefix, is io.ErrUnexpectedEOF, never the io.EOF of a
// clean end between frames (Next's contract).
func TestFrameReaderCutInsideFrame(t *testing.T) {
	frame, err := AppendFrame(nil, &Message{Type: TypeData, StreamID: 1, Payload: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 3, len(frame) - 1} {
		var m Message
		err := NewFrameReader(bytes.NewReader(frame[:n])).Next(&m)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("stream cut after %d of %d bytes: Next = %v, want io.ErrUnexpectedEOF", n, len(frame), err)
		}
	}
}

// TestAppendFrameSizeBoundary: a message of MaxMessageSize bytes is framed
// with the largest length the prefix holds; one byte more is refused, not
// framed with a length that wraps to 0 and corrupts the stream.
func TestAppendFrameSizeBoundary(t *testing.T) {
	ids := func(n int) *Message { // tag, 3-byte length, n bytes
		return &Message{Type: TypeServiceIDs, AvailableServiceIDs: []string{strings.Repeat("a", n)}}
	}
	b, err := AppendFrame(nil, ids(MaxMessageSize-4-2)) // type field: 2 bytes
	if err != nil {
		t.Fatalf("message of %d bytes: %v", MaxMessageSize, err)
	}
	if len(b) != 2+MaxMessageSize || b[0] != 0xff || b[1] != 0xff {
		t.Fatalf("message of %d bytes framed as %d bytes with prefix %x", MaxMessageSize, len(b), b[:2])
	}
	if b, err := AppendFrame(nil, ids(MaxMessageSize-4-2+1)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("message of %d bytes: framed (%d bytes, prefix %x), error %v; want ErrProtocol", MaxMessageSize+1, len(b), b[:min(2, len(b))], err)
	}
}
