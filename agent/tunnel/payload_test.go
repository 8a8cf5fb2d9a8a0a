package tunnel

import (
	"bytes"
	"testing"
)

// TestCopyPayload: large payloads are copied into pooled buffers that come back
// after release; small and out-of-range ones are copied to size; none aliases
// its source.
func TestCopyPayload(t *testing.T) {
	for _, n := range []int{1, pooledPayload - 1, pooledPayload, MaxPayload, MaxPayload + 1} {
		src := bytes.Repeat([]byte{byte(n)}, n)
		b := copyPayload(src)
		if !bytes.Equal(b, src) {
			t.Fatalf("%d bytes: copy differs", n)
		}
		src[0]++
		if b[0] == src[0] {
			t.Fatalf("%d bytes: copy aliases its source", n)
		}
		pooled := n >= pooledPayload && n <= MaxPayload
		if got := cap(b) == MaxPayload; got != pooled {
			t.Errorf("%d bytes: pooled = %v, want %v", n, got, pooled)
		}
		releasePayload(b) // must not panic, pooled or not
	}
}
