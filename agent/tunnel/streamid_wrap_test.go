package tunnel

import (
	"math"
	"testing"
)

// TestStreamIDWrapsAfterMaxInt32: stream ids go up to math.MaxInt32, the
// largest the int32 field holds, and then wrap to 1 (spec §3.2), never to 0
// or a negative id.
func TestStreamIDWrapsAfterMaxInt32(t *testing.T) {
	src := &Source{streamIDs: map[string]int32{"SSH": math.MaxInt32 - 2}}
	for _, want := range []int32{math.MaxInt32 - 1, math.MaxInt32, 1, 2} {
		if got := src.nextStreamID("SSH"); got != want {
			t.Fatalf("nextStreamID = %d, want %d", got, want)
		}
	}
}
