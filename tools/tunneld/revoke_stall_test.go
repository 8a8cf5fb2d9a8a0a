package tunneld

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// A holder of a rotated token that has stopped reading does not hold up
// tunneld: the rotation detaches its connection and closes it without waiting.
// Closing the TLS connection in the rotation waited up to close_notify's 5 s
// write deadline under tunneld's lock, and every API call and handshake waited
// with it (found in review).
func TestRotationCutsAStalledReaderAtOnce(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	ts := startServer(t, Config{TLS: pki.ServerTLS(t, "tunneld")})
	out, dp, _, sender := stalledDestination(t, ts, pki)
	ctx := context.Background()
	waitStalled(t, sender) // the buffers fill and the data plane's writer blocks

	start := time.Now()
	if _, err := ts.RotateTunnelAccessToken(ctx, &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: ClientModeDestination}); err != nil {
		t.Fatal(err)
	}
	// Not a performance bound: the fixed cut takes milliseconds, the old one the
	// full 5 s deadline.
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the rotation took %v: the cut waited on the stalled reader", d)
	}
	if dp.Connected(dataplane.Destination) {
		t.Error("the stalled destination is still connected after the rotation")
	}
}

// A rotation of the source token answers at once even when the destination has
// stopped reading and its queue in the data plane is full: the SESSION_RESET the
// rotation sends it must not wait for room in that queue.
func TestRotateDoesNotWaitForAStalledPeer(t *testing.T) {
	ts := startServer(t, Config{})
	out := ts.open(t, "", "SSH")
	dst, _, _ := dialWS(t, ts.addr, "destination", out.DestinationAccessToken, "") // never read
	src, _, _ := dialWS(t, ts.addr, "source", out.SourceAccessToken, "")
	go func() { // the source reads whatever comes
		for {
			if _, _, err := src.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	dp := ts.Dataplane(out.TunnelID)
	ctx := context.Background()
	if err := dp.WaitConnects(ctx, dataplane.Destination, 1); err != nil {
		t.Fatal(err)
	}
	if err := dp.WaitConnects(ctx, dataplane.Source, 1); err != nil {
		t.Fatal(err)
	}
	fill := make(chan struct{})
	go func() { // what the source would relay to the stalled destination
		defer close(fill)
		payload := make([]byte, 60000)
		for dp.Send(dataplane.Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: payload}) == nil {
		}
	}()
	time.Sleep(2 * time.Second) // the socket buffers and the queue fill up

	done := make(chan error, 1)
	go func() {
		_, err := ts.RotateTunnelAccessToken(ctx, &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: ClientModeSource})
		done <- err
	}()
	answered := false
	select {
	case err := <-done:
		answered = true
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Error("RotateTunnelAccessToken(SOURCE) has not answered after 5 s: it waits for room in the stalled destination's queue")
	}
	dst.CloseNow() // the data plane's writer fails, and everything blocked on it ends
	<-fill
	if !answered {
		<-done
	}
}

// stalledDestination opens a tunnel on ts (served over TLS with pki's
// certificate) and connects its destination, which never reads, while DATA is
// sent to it until the data plane refuses: its socket buffers fill and the
// data plane's writer blocks in a socket write (waitStalled waits for that).
// It returns the client's WebSocket too, for a test that reads again. The
// client is closed and the sending has ended when the test ends.
func stalledDestination(t *testing.T, ts *testServer, pki *mqtttest.PKI) (*OpenTunnelOutput, *dataplane.Tunnel, *websocket.Conn, *sender) {
	t.Helper()
	out := ts.open(t, "", "SSH")
	h := http.Header{}
	h.Set("access-token", out.DestinationAccessToken)
	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, "wss://"+ts.addr+"/tunnel?local-proxy-mode=destination", &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLS(t)}},
		HTTPHeader:   h,
		Subprotocols: []string{"aws.iot.securetunneling-3.0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dp := ts.Dataplane(out.TunnelID)
	if err := dp.WaitConnects(ctx, dataplane.Destination, 1); err != nil {
		ws.CloseNow()
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	s := &sender{}
	go func() {
		defer close(done)
		payload := make([]byte, 60000)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.sending.Store(time.Now().UnixNano())
			err := dp.Send(dataplane.Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: payload})
			s.sending.Store(0)
			if err != nil {
				return
			}
			s.sent.Add(1)
		}
	}()
	t.Cleanup(func() {
		close(stop)
		ws.CloseNow()
		<-done
	})
	return out, dp, ws, s
}

// sender is what stalledDestination's sender has done.
type sender struct {
	sent    atomic.Int64 // DATA frames the data plane took for the destination
	sending atomic.Int64 // when the Send in progress began (UnixNano), 0 between Sends
}

// waitStalled waits until a Send of s has been blocked for a while: the data
// plane takes no more frames for the destination, its queue full and its
// writer blocked on a client that does not read. (A count of frames that
// stopped growing would also be a sender starved of CPU between two Sends.)
// The same Send must be seen in progress at 30 looks 10 ms apart, not once
// after 300 ms of the clock: a pause of the whole process (a loaded machine,
// a stopped VM) made a Send still copying its frame look blocked, and the
// stall tests passed on a writer that was not blocked.
func waitStalled(t *testing.T, s *sender) {
	t.Helper()
	const looks = 30
	var began int64
	seen := 0
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		switch b := s.sending.Load(); {
		case b == 0 || b != began:
			began, seen = b, 0
		default:
			if seen++; seen >= looks {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sender did not stall (%d frames sent)", s.sent.Load())
		}
	}
}

// The server's map of revoked tokens stays bounded: a tunnel keeps the newest
// maxRevokedPerTunnel of its revoked tokens, and a forgotten tunnel (past
// MaxClosedTunnels) takes them with it. Either leak kept entries for as long as
// the server ran, a few more for each rotation.
func TestRevokedTokensBounded(t *testing.T) {
	ts := startServer(t, Config{MaxClosedTunnels: 1})
	ctx := context.Background()
	rotate := func(id string, n int) {
		t.Helper()
		for range n {
			if _, err := ts.RotateTunnelAccessToken(ctx, &RotateTunnelAccessTokenInput{TunnelID: id, ClientMode: ClientModeAll}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 4 {
		out := ts.open(t, "dev1", "SSH")
		rotate(out.TunnelID, 2)
		if err := ts.CloseTunnel(ctx, &CloseTunnelInput{TunnelID: out.TunnelID}); err != nil {
			t.Fatal(err)
		}
	}
	open := ts.open(t, "dev1", "SSH")
	rotate(open.TunnelID, maxRevokedPerTunnel) // two tokens revoked each time
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.tunnels) != 2 {
		t.Fatalf("%d tunnels kept, want 2: the open one and 1 closed (MaxClosedTunnels)", len(ts.tunnels))
	}
	per := map[string]int{}
	for _, id := range ts.revoked {
		per[id]++
	}
	for id, n := range per {
		switch {
		case ts.tunnels[id] == nil:
			t.Errorf("%d revoked tokens kept of tunnel %s, forgotten", n, id)
		case n > maxRevokedPerTunnel:
			t.Errorf("%d revoked tokens kept of tunnel %s, want at most %d", n, id, maxRevokedPerTunnel)
		}
	}
}

// TestWaitStalledNotFooledByAPause: a Send seen 400 ms old at the first look
// (it began before a pause of the whole process) that then ends, followed by
// Sends that do not block, is no stall: waitStalled waits for the Send that
// stays blocked.
func TestWaitStalledNotFooledByAPause(t *testing.T) {
	s := &sender{}
	s.sending.Store(time.Now().Add(-400 * time.Millisecond).UnixNano())
	var blockedAt atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(50 * time.Millisecond) // the process runs again: that Send ends
		for range 10 {
			s.sending.Store(0)
			s.sent.Add(1)
			s.sending.Store(time.Now().UnixNano())
			time.Sleep(5 * time.Millisecond)
		}
		blockedAt.Store(time.Now().UnixNano()) // the last Send stays blocked
	}()
	waitStalled(t, s)
	returned := time.Now()
	<-done
	switch b := blockedAt.Load(); {
	case b == 0:
		t.Errorf("waitStalled returned before the Send that blocks began (%d Sends ended meanwhile)", s.sent.Load())
	case returned.Sub(time.Unix(0, b)) < 250*time.Millisecond:
		t.Errorf("waitStalled returned %v after the Send that blocks began, want 300 ms or more", returned.Sub(time.Unix(0, b)))
	}
}
