package bufpool

import (
	"bytes"
	"testing"
)

// TestCopy: copies never alias their source and are equal to it; only copies of
// Min to Size octets come from (and go back to) the pool.
func TestCopy(t *testing.T) {
	const size, min = 64 << 10, 4 << 10
	p := New(size, min)
	for _, n := range []int{0, 1, min - 1, min, size - 1, size, size + 1} {
		src := bytes.Repeat([]byte{byte(n) | 1}, n)
		b := p.Copy(src)
		if !bytes.Equal(b, src) {
			t.Fatalf("%d octets: copy differs", n)
		}
		if n > 0 {
			src[0]++
			if b[0] == src[0] {
				t.Fatalf("%d octets: copy aliases its source", n)
			}
		}
		pooled := n >= min && n <= size
		if got := cap(b) == size; got != pooled {
			t.Errorf("%d octets: pooled = %v, want %v", n, got, pooled)
		}
		p.Release(b)
	}
	// A released buffer comes back whole, whatever length it was released at.
	b := p.Copy(make([]byte, min))
	p.Release(b)
	if c := p.Copy(make([]byte, size)); len(c) != size || cap(c) != size {
		t.Errorf("copy after release: len %d cap %d, want %d", len(c), cap(c), size)
	}
}

func TestGet(t *testing.T) {
	p := New(1024, 16)
	b := p.Get()
	if len(b) != 0 || cap(b) != 1024 {
		t.Fatalf("Get: len %d cap %d, want 0 and 1024", len(b), cap(b))
	}
	p.Release(append(b, "x"...))
}
