package tunnel

import "testing"

// Consecutive sources (a `porthole connect --stdio` per ssh connection) do not
// start their streams with the same id: a reset the device sent for the last
// one's stream, still on its way, ended the next one's new connection before
// the device answered it (found with a chaos relay between the processes:
// docs/benchmarks.md, twenty-third round).
func TestStreamIDsDifferAcrossSources(t *testing.T) {
	a, b := &Source{}, &Source{}
	x, y := a.nextStreamID("SSH"), b.nextStreamID("SSH")
	if x == y {
		t.Fatalf("two sources both start service SSH's streams at id %d", x)
	}
	if x <= 0 || y <= 0 {
		t.Fatalf("first stream ids %d and %d: want positive", x, y)
	}
	if n := a.nextStreamID("SSH"); n != x+1 {
		t.Errorf("next stream id %d after %d, want %d", n, x, x+1)
	}
}
