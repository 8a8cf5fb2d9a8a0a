package dataplane

import (
	"bytes"
	"testing"
)

// TestCopyFrame: copies never alias the reader's buffer; only full-size pool
// buffers go back to the pool.
func TestCopyFrame(t *testing.T) {
	for _, n := range []int{2, 4<<10 - 1, 4 << 10, maxFrame, maxFrame + 1} {
		raw := bytes.Repeat([]byte{byte(n)}, n)
		b := copyFrame(raw)
		if !bytes.Equal(b, raw) {
			t.Fatalf("%d bytes: copy differs", n)
		}
		raw[0]++
		if b[0] == raw[0] {
			t.Fatalf("%d bytes: copy aliases the reader's buffer", n)
		}
		pooled := n >= 4<<10 && n <= maxFrame
		if got := cap(b) == maxFrame; got != pooled {
			t.Errorf("%d bytes: pooled = %v, want %v", n, got, pooled)
		}
		releaseFrame(b)
	}
}
