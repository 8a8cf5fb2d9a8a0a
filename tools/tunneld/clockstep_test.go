package tunneld

import (
	"context"
	"testing"
	"time"
	"unsafe"
)

// steppedNow is what time.Now returns in a process whose wall clock was
// stepped: wall's wall-clock reading with mono's monotonic reading (both from
// time.Now, so both carry one). No exported API makes one: Add moves both
// readings together.
func steppedNow(t *testing.T, wall, mono time.Time) time.Time {
	type tm struct { // time.Time's layout
		wall uint64
		ext  int64
		loc  *time.Location
	}
	w := *(*tm)(unsafe.Pointer(&wall))
	w.ext = (*tm)(unsafe.Pointer(&mono)).ext
	stepped := *(*time.Time)(unsafe.Pointer(&w))
	if !stepped.Round(0).Equal(wall.Round(0)) || stepped.Sub(mono) != 0 {
		t.Fatalf("time.Time's layout changed: cannot make a stepped time")
	}
	return stepped
}

// TestListPagesAfterClockStepBack: the host's clock is stepped back an hour
// (NTP, a VM restored) between two OpenTunnel calls. ListTunnels sorted the
// records by their CreatedAt, which carry monotonic readings, but placed a
// page after the nextToken's key, which has none (wall clock): paging by one
// listed one tunnel twice, or never listed the other.
func TestListPagesAfterClockStepBack(t *testing.T) {
	base := time.Now()
	clock := &fakeClock{t: base}
	ts := startServer(t, Config{now: clock.now})
	a := ts.open(t, "dev1", "SSH").TunnelID
	// 30 s later by the monotonic clock, but the wall clock was stepped back 1 h.
	clock.mu.Lock()
	clock.t = steppedNow(t, base.Add(-time.Hour), base.Add(30*time.Second))
	clock.mu.Unlock()
	b := ts.open(t, "dev1", "SSH").TunnelID

	var listed []string
	next := ""
	for pages := 0; pages < 5; pages++ {
		out, err := ts.ListTunnels(context.Background(), &ListTunnelsInput{MaxResults: 1, NextToken: next})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range out.TunnelSummaries {
			listed = append(listed, s.TunnelID)
		}
		if next = out.NextToken; next == "" {
			break
		}
	}
	seen := map[string]int{}
	for _, id := range listed {
		seen[id]++
	}
	if len(listed) != 2 || seen[a] != 1 || seen[b] != 1 {
		t.Errorf("pages of one listed %v, want each of %s (created first) and %s once", listed, a, b)
	}
}

// TestExpiryFollowsTheWallClock: the host's wall clock is stepped 2 h forward
// while 30 s pass on its monotonic clock (NTP's first answer on a board that
// booted with a stale clock; a laptop resumed from sleep). A tunnel with a
// 60 min lifetime is then past the expiresAt DescribeTunnel gives it, and a
// restarted server closes it; the running one compared its expiry by the
// monotonic clock and kept it open, its tokens usable, for up to an hour more.
func TestExpiryFollowsTheWallClock(t *testing.T) {
	base := time.Now()
	clock := &fakeClock{t: base}
	ts := startServer(t, Config{DataDir: t.TempDir(), now: clock.now, tick: 10 * time.Millisecond})
	out, err := ts.OpenTunnel(context.Background(), &OpenTunnelInput{
		DestinationConfig: &DestinationConfig{Services: []string{"SSH"}},
		TimeoutConfig:     &TimeoutConfig{MaxLifetimeTimeoutMinutes: 60},
	})
	if err != nil {
		t.Fatal(err)
	}
	clock.mu.Lock()
	clock.t = steppedNow(t, base.Add(2*time.Hour), base.Add(30*time.Second))
	clock.mu.Unlock()
	d, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID})
	if err != nil {
		t.Fatal(err)
	}
	if d.Tunnel.Status != StatusClosed {
		t.Errorf("the wall clock 2 h past its opening: a 60 min tunnel is %s", d.Tunnel.Status)
	}
	if _, status, _ := dialWS(t, ts.addr, "source", out.SourceAccessToken, ""); status == 101 {
		t.Errorf("the wall clock 2 h past its opening: a 60 min tunnel's source token was taken")
	}
}
