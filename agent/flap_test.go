package agent

import (
	"io"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// TestAgentRotationsLeaveNoGoroutine: issue 8's "500 notifications (token
// rotations) within a minute: the agent ends with goroutines ... back near
// baseline". TestLoad500Rotations (tools/e2e) runs the agent binary and can
// count only its FDs and threads; here the agent runs in-process and its
// goroutines are counted while it keeps running. 200 rotations of the
// destination token (each revoking the connected one, as tunneld does), each
// notified.
func TestAgentRotationsLeaveNoGoroutine(t *testing.T) {
	e := newAgentEnv(t)
	e.startLogging(t, io.Discard)
	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	if out := e.sshThrough(t, tun, "echo before", nil); out != "before\n" {
		t.Fatalf("ssh: %q", out)
	}
	time.Sleep(500 * time.Millisecond)
	base := runtime.NumGoroutine()
	const n = 200
	for range n {
		tok, _ := tun.Dataplane().Revoke(dataplane.Destination)
		e.broker.notify(t, "dev-1", tok, "SSH")
		time.Sleep(5 * time.Millisecond)
	}
	// Connected with the last token: the last notification was handled.
	for deadline := time.Now().Add(60 * time.Second); !tun.Connected(tunneltest.Destination); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not connected with the last token")
		}
	}
	if out := e.sshThrough(t, tun, "echo after", nil); out != "after\n" {
		t.Fatalf("ssh: %q", out)
	}
	var saved []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		saved, _ = filepath.Glob(filepath.Join(e.cfg.DataDir, "tunnels", "*.json"))
		if len(saved) <= 1 || time.Now().After(deadline) {
			break
		}
	}
	g := runtime.NumGoroutine()
	for deadline := time.Now().Add(30 * time.Second); g > base+5 && time.Now().Before(deadline); g = runtime.NumGoroutine() {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d rotations: goroutines %d -> %d, saved tunnels %d", n, base, g, len(saved))
	if g > base+5 {
		t.Errorf("%d goroutines after %d rotations, %d before", g, n, base)
	}
	if len(saved) != 1 {
		t.Errorf("%d saved tunnels after the rotations, want 1", len(saved))
	}
}

// TestHostileServiceFlapEventsBounded: a service that ends every connection
// of the agent's tunnel at once with a bad frame (type 0). The agent
// reconnects, and publishes a tunnel-connected and a tunnel-disconnected
// event for each cycle: billed QoS 1 publishes that onState otherwise sums up
// (tunnel-connect-failed, after failureEventFirst). In 6 s they must stay
// bounded.
func TestHostileServiceFlapEventsBounded(t *testing.T) {
	e := newAgentEnv(t)
	e.startLogging(t, io.Discard)
	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	seen := 0
	for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if n := tun.Connects(tunneltest.Destination); n > seen && tun.Connected(tunneltest.Destination) {
			seen = n
			tun.SendRaw(tunneltest.Destination, []byte{0x00, 0x02, 0x10, 0x01})
		}
	}
	time.Sleep(500 * time.Millisecond)
	e.broker.mu.Lock()
	counts := map[string]int{}
	for _, ev := range e.broker.events {
		counts[ev.Type]++
	}
	e.broker.mu.Unlock()
	t.Logf("in 6 s: %d connects; events %v", seen, counts)
	// The reconnect backoff is full jitter (each wait anywhere from 0 to its
	// cap), so the legal count varies: 5 to 7 connects in the 6.5 s, up to 14
	// events (a connect in the last 500 ms adds an event with no pair); with
	// 10, about 4 % of runs failed. Without the backoff (restarted after every
	// short connection) there are 16 or more.
	if n := counts["tunnel-connected"] + counts["tunnel-disconnected"]; n > 14 {
		t.Errorf("%d tunnel-connected/-disconnected events published in 6 s for one tunnel that a service keeps ending (%d connects)", n, seen)
	}
}
