package dataplane

import (
	"sync/atomic"
	"testing"
	"time"
)

// Sides takes every tunnel's state at one instant: a client token that one
// tunnel gave back and another took is in at most one of the snapshots. Taken
// tunnel by tunnel, both could have it, and tunneld, which saves them, wrote a
// state file it then refused to load.
func TestSidesAtOneInstant(t *testing.T) {
	s := newTestServer(t)
	a, b := s.OpenTunnel("SSH"), s.OpenTunnel("SSH")
	const ct = "client-token-0123456789abcdef0123456789"
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The client token goes back and forth between the two tunnels'
		// sources, as it would with failed upgrades.
		for !stop.Load() {
			for _, tun := range []*testTunnel{a, b} {
				_, _, undo, status, body := s.admit(tun.SourceToken, ct, Source, time.Now())
				if status != 0 {
					t.Errorf("admit: %d %s", status, body)
					return
				}
				undo()
			}
		}
	}()
	defer func() { stop.Store(true); <-done }()
	for i := 0; i < 100000; i++ {
		sides := s.Sides([]*Tunnel{a.Tunnel, b.Tunnel})
		if sides[0][Source].ClientToken == ct && sides[1][Source].ClientToken == ct {
			t.Fatalf("snapshot %d has the client token in both tunnels", i)
		}
	}
}
