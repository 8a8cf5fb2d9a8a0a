package dataplane

import (
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// A first handshake whose use could not be recorded gives its token back and
// says so through OnChange, with the side unused by then: a service that
// saves the tokens' use (tunneld) may have written it used meanwhile (another
// call's save, while this one's failed), and would keep the file saying so,
// refusing the token after a restart, until something else changed.
func TestGivenBackTokenCallsOnChange(t *testing.T) {
	s := newTestServer(t)
	tun := s.OpenTunnel("SSH")
	s.OnFirstUse = func(*Tunnel) error { return errors.New("disk full") }
	changed := make(chan SideState, 4)
	s.OnChange = func(got *Tunnel) {
		if got == tun.Tunnel {
			changed <- got.Side(Destination)
		}
	}
	if _, resp, err := dialRaw(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("handshake, its use not recorded: %v, want 503", err)
	}
	select {
	case st := <-changed:
		if st.Used {
			t.Errorf("OnChange saw the side %+v, want its token given back", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the token was given back without OnChange")
	}
}

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
