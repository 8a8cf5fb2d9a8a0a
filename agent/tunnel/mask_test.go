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
	c := newWSConn(discardConn{}, nil, [32]byte{})
	p := make([]byte, MaxPayload)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if err := c.writeFrame(opBinary, p); err != nil {
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
	c := &Conn{ws: newWSConn(discardConn{}, nil, [32]byte{})}
	m := &Message{Type: TypeData, StreamID: 1, ConnectionID: 1, ServiceID: "SSH", Payload: make([]byte, MaxPayload-16)}
	b.SetBytes(int64(len(m.Payload)))
	for b.Loop() {
		if err := c.WriteMessage(context.Background(), m); err != nil {
			b.Fatal(err)
		}
	}
}
