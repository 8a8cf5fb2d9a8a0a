package notify

import (
	"fmt"
	"testing"
)

func TestDedupe(t *testing.T) {
	var d dedupe
	p := func(i int) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, i)) }

	if d.seen(p(0)) {
		t.Fatal("seen(p0) = true on first sight")
	}
	if !d.seen(p(0)) {
		t.Fatal("seen(p0) = false on the second sight")
	}
	// Fill the window: p0 stays remembered until dedupeSize newer payloads.
	for i := 1; i < dedupeSize; i++ {
		if d.seen(p(i)) {
			t.Fatalf("seen(p%d) = true on first sight", i)
		}
	}
	if !d.seen(p(0)) {
		t.Fatal("p0 forgotten while still in the window")
	}
	if d.seen(p(dedupeSize)) {
		t.Fatalf("seen(p%d) = true on first sight", dedupeSize)
	}
	// p0 was the oldest and is now evicted; p1 is still there.
	if !d.seen(p(1)) {
		t.Fatal("p1 forgotten too early")
	}
	if d.seen(p(0)) {
		t.Fatal("p0 still remembered past the window")
	}
	if len(d.set) != dedupeSize || d.n != dedupeSize {
		t.Fatalf("dedupe holds %d hashes (n=%d), want %d", len(d.set), d.n, dedupeSize)
	}
}

func BenchmarkDedupe(b *testing.B) {
	var d dedupe
	payload := []byte(`{"clientAccessToken":"` + testToken + `","clientMode":"destination","region":"us-east-1","services":["SSH"]}`)
	for i := 0; b.Loop(); i++ {
		payload[len(payload)-3] = byte(i)
		d.seen(payload)
	}
}
