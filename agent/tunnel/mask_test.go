package tunnel

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"testing"
)

// maskNaive is RFC 6455 §5.3 as written: octet i XOR key[i mod 4].
func maskNaive(b []byte, key [4]byte) {
	for i := range b {
		b[i] ^= key[i&3]
	}
}

func TestMask(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 70 {
		for _, n := range []int{n, n + MaxPayload - 35} {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			key := [4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
			want := bytes.Clone(b)
			maskNaive(want, key)
			mask(b, key)
			if !bytes.Equal(b, want) {
				t.Fatalf("mask of %d bytes with key %x differs from the RFC's octet loop", n, key)
			}
		}
	}
}

func BenchmarkWriteFrame(b *testing.B) {
	c := &wsConn{conn: discardConn{}, rng: rand.NewChaCha8([32]byte{})}
	p := make([]byte, MaxPayload)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if err := c.writeBinary(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMask(b *testing.B) {
	p := make([]byte, MaxPayload)
	key := [4]byte{1, 2, 3, 4}
	b.Run("octets", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			maskNaive(p, key)
		}
	})
	b.Run("words", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			mask(p, key)
		}
	})
}

type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkWriteMessage: a full DATA frame from Message to masked WebSocket frame.
func BenchmarkWriteMessage(b *testing.B) {
	c := &Conn{ws: &wsConn{conn: discardConn{}, rng: rand.NewChaCha8([32]byte{})}}
	m := &Message{Type: TypeData, StreamID: 1, ConnectionID: 1, ServiceID: "SSH", Payload: make([]byte, MaxPayload-16)}
	b.SetBytes(int64(len(m.Payload)))
	for b.Loop() {
		if err := c.WriteMessage(context.Background(), m); err != nil {
			b.Fatal(err)
		}
	}
}

// recordingConn records every Write it gets.
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// TestRecordBatcher: between begin and end, writes are gathered and sent as one,
// in order; outside, they pass straight through.
func TestRecordBatcher(t *testing.T) {
	under := &recordingConn{}
	b := &recordBatcher{Conn: under}
	b.Write([]byte("alert"))
	b.begin()
	for _, r := range []string{"rec1", "rec2", "rec3"} {
		if n, err := b.Write([]byte(r)); n != len(r) || err != nil {
			t.Fatalf("batched write = %d, %v", n, err)
		}
	}
	if len(under.writes) != 1 {
		t.Fatalf("records reached the socket before end: %q", under.writes)
	}
	if err := b.end(); err != nil {
		t.Fatal(err)
	}
	b.Write([]byte("after"))
	want := []string{"alert", "rec1rec2rec3", "after"}
	if len(under.writes) != len(want) {
		t.Fatalf("writes %q, want %q", under.writes, want)
	}
	for i, w := range want {
		if string(under.writes[i]) != w {
			t.Errorf("write %d = %q, want %q", i, under.writes[i], w)
		}
	}
	if err := b.end(); err != nil || len(under.writes) != 3 {
		t.Errorf("an empty batch wrote: %v, %q", err, under.writes)
	}
}
