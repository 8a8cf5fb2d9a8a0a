package tunnel

import "testing"

// TestOverBufferedManyLinks: with thousands of live links the session's
// payload budget still holds. The count of links times what one may hold was
// taken first, and it overflows a 32-bit int (mips, arm: tools/qemu-test.sh
// runs this there) past 6,657 links, which turned the budget off.
func TestOverBufferedManyLinks(t *testing.T) {
	s := &session{live: map[*link]struct{}{}}
	for range 7000 {
		l := &link{}
		l.held.Store(64 << 10)
		s.live[l] = struct{}{}
	}
	if !s.overBuffered() {
		t.Errorf("7000 links holding 64 KiB each are not over the session's %d bytes", sessionBuffered)
	}
	s.live = map[*link]struct{}{}
	for range 3 {
		l := &link{}
		l.held.Store((linkQueue + 1) * MaxPayload)
		s.live[l] = struct{}{}
	}
	if s.overBuffered() {
		t.Errorf("3 links, each holding all it may, are over the session's %d bytes", sessionBuffered)
	}
}

// TestCrowdedAtTheLimit: a session is crowded once it holds MaxConnections
// local connections for each service and MaxConnections more closing, not one
// link later: with 2 services and MaxConnections 3, at 9 live links.
func TestCrowdedAtTheLimit(t *testing.T) {
	s := &session{opt: engineOptions{maxConns: 3}, services: []string{"SSH", "HTTP"}, live: map[*link]struct{}{}}
	for range 8 {
		s.live[&link{}] = struct{}{}
	}
	if s.crowdedLocked() {
		t.Fatalf("crowded at %d live links, limit (2+1)×3", len(s.live))
	}
	s.live[&link{}] = struct{}{}
	if !s.crowdedLocked() {
		t.Fatalf("not crowded at %d live links, limit (2+1)×3", len(s.live))
	}
}
