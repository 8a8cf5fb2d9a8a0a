package dataplane

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
)

func TestBandwidth(t *testing.T) {
	_, tun, src, dst := pair(t, "SSH")
	const rate = 200 << 10
	tun.SetBandwidth(rate)
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	dst.MustNext()
	payload := make([]byte, tunnel.MaxPayload)
	const n = 10 // ~630 KiB: the first 200 KiB pass at once, the rest take ~2.2 s
	start := time.Now()
	go func() {
		for range n {
			b, _ := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: payload})
			if err := src.WS.Write(context.Background(), websocket.MessageBinary, b); err != nil {
				return
			}
		}
	}()
	for range n {
		dst.MustNext()
	}
	if el, want := time.Since(start), 1500*time.Millisecond; el < want {
		t.Errorf("%d bytes at %d B/s took %v, want at least %v", n*len(payload), rate, el, want)
	}

	// Pings count: coder/websocket's pings carry a 1-2 digit counter, so a ping and
	// its pong cost at least 6 bytes; 25 of them at 50 B/s, from a full bucket of
	// 50, take at least 2 s.
	tun.SetBandwidth(50)
	src.WS.CloseRead(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start = time.Now()
	for range 25 {
		if err := src.WS.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Errorf("25 pings at 50 B/s took %v, want over 1.5 s", el)
	}
	tun.SetBandwidth(0)
}

func TestRotate(t *testing.T) {
	const ct = "eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee"
	s := newTestServer(t)
	tun := s.OpenTunnel("SSH")
	old := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct})
	old.WantServiceIDs("SSH")
	fresh := tun.Rotate(Destination)
	if fresh == "" || fresh == tun.DestinationToken {
		t.Fatalf("Rotate = %q, want a new token", fresh)
	}
	if st := tun.Side(Destination); st.Token != fresh || st.Used || st.ClientToken != "" || !st.Connected {
		t.Errorf("Side after Rotate = %+v, want the fresh token, unused, still connected", st)
	}
	// The old token, even with its client token, is gone.
	_, resp, err := dialRaw(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken, ClientToken: ct})
	if err == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("old token after Rotate: %v, want 400", err)
	}
	// The new one replaces the connection, and the client token is free again.
	dial(t, s, dialOpts{Mode: "destination", Token: fresh, ClientToken: ct}).WantServiceIDs("SSH")
	old.WantCut()
	tun.Close()
	if got := tun.Rotate(Source); got != "" {
		t.Errorf("Rotate of a closed tunnel = %q, want empty", got)
	}
}

// Revoke rotates and cuts the connection of the revoked token in one step; the
// connection made with the new token right after is left alone.
func TestRevoke(t *testing.T) {
	s := newTestServer(t)
	var logs testlog.Lines
	s.Server.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tlogWriter{t}), nil))
	tun := s.OpenTunnel("SSH")
	if tok, cut := tun.Revoke(Source); tok == "" || cut {
		t.Fatalf("Revoke of an unconnected side = %q, %v; want a token and no cut", tok, cut)
	}
	old := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	old.WantServiceIDs("SSH")
	fresh, cut := tun.Revoke(Destination)
	if fresh == "" || fresh == tun.DestinationToken || !cut {
		t.Fatalf("Revoke = %q, %v; want a new token and the old connection cut", fresh, cut)
	}
	old.WantCut()
	if tun.Connected(Destination) {
		t.Error("the side is still connected after Revoke")
	}
	if !strings.Contains(logs.String(), "msg=\"dropped: its access token was revoked\"") ||
		!strings.Contains(logs.String(), "msg=connected tunnel="+tun.ID()) || !strings.Contains(logs.String(), "remote=127.0.0.1:") {
		t.Errorf("the log lacks the revocation or the connection's remote address:\n%s", logs.String())
	}
	now := dial(t, s, dialOpts{Mode: "destination", Token: fresh})
	now.WantServiceIDs("SSH")
	if !tun.Connected(Destination) {
		t.Error("the connection with the new token is not the side's")
	}
	tun.Close()
	if tok, cut := tun.Revoke(Destination); tok != "" || cut {
		t.Errorf("Revoke of a closed tunnel = %q, %v; want nothing", tok, cut)
	}
}

// A connection this side closed with a Close frame, which the client answered
// (its echo of the status), ended cleanly: its "ended" line has no error. It
// said "failed to get reader: received close frame" at every rotation and
// CloseTunnel, which reads as a failure to whoever greps the log for errors.
func TestClosedByServerEndsWithoutError(t *testing.T) {
	s, logs := loggedServer(t)
	tun := s.OpenTunnel("SSH")
	old := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	old.WantServiceIDs("SSH")
	tun.RevokeClose(Destination, "token revoked")
	if _, err := old.Next(); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("after RevokeClose: %v, want the Close frame", err)
	}
	if line := endedLine(t, logs, Destination, 10*time.Second); !strings.HasSuffix(line, " error=<nil>") {
		t.Errorf("the end of a connection closed with a Close frame the client answered is logged with an error: %s", line)
	}
}

// RevokeClose rotates and closes the connection of the revoked token with a
// Close frame, 1008 and the reason, which a client takes as the end of its
// token (a cut makes it reconnect with it). What was queued for the side is
// dropped, not written before the Close frame: its holder is who the rotation
// shuts out. The new token connects.
func TestRevokeClose(t *testing.T) {
	s, gates := gatedServer(t)
	tun := s.OpenTunnel("SSH")
	old := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	old.WantServiceIDs("SSH")
	// The client reads nothing: the writer waits at the gate, the queue fills,
	// and the sender waits for room. Through a socket's buffers instead, the
	// queue could be found full while the writer still wrote, and empty by
	// the time RevokeClose came: the client got all.
	gate := gates.conn(0)
	gate.hold()
	var sent atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		payload := make([]byte, 60000)
		for tun.Send(Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: payload}) == nil {
			sent.Add(1)
		}
	}()
	// Until the queue is full: the sender waits for room.
	for deadline := time.Now().Add(20 * time.Second); !tun.queueFull(Destination); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the queue did not fill (%d frames sent)", sent.Load())
		}
	}
	fresh, closed := tun.RevokeClose(Destination, "token revoked")
	if fresh == "" || fresh == tun.DestinationToken || !closed {
		t.Fatalf("RevokeClose = %q, %v; want a new token and the old connection closed", fresh, closed)
	}
	<-done
	if tun.Connected(Destination) {
		t.Error("the side is still connected after RevokeClose")
	}
	gate.open() // the client reads again
	got := 0
	for {
		m, err := old.Next()
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "token revoked" {
				t.Errorf("after %d frames, connection ended with %v, want a Close frame 1008 %q", got, err, "token revoked")
			}
			break
		}
		if m.Type == tunnel.TypeData {
			got++
		}
	}
	if n := int(sent.Load()); got >= n {
		t.Errorf("the revoked client got all %d frames queued for it, want those still queued dropped", n)
	} else {
		t.Logf("%d of %d frames reached the revoked client", got, n)
	}
	now := dial(t, s, dialOpts{Mode: "destination", Token: fresh})
	now.WantServiceIDs("SSH")
	if !tun.Connected(Destination) {
		t.Error("the connection with the new token is not the side's")
	}
}

// A tunnel registered closed (restored after a restart) refuses its tokens as
// a closed tunnel's and leaves its client token free, without logging a close
// or calling OnChange: nobody has just closed it.
func TestOpenTunnelClosed(t *testing.T) {
	const ct = "ffffffff-ffff-ffff-ffff-ffffffffffff"
	s := newTestServer(t)
	var logs testlog.Lines
	s.Server.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tlogWriter{t}), nil))
	var changes atomic.Int32
	s.OnChange = func(*Tunnel) { changes.Add(1) }
	tun, err := s.Server.OpenTunnel(TunnelConfig{ID: "t1", Tokens: [2]string{"src-token", "dst-token"},
		Used: [2]bool{false, true}, ClientTokens: [2]string{"", ct}, Closed: true})
	if err != nil {
		t.Fatal(err)
	}
	if !tun.Closed() {
		t.Error("a tunnel registered closed is not Closed")
	}
	_, resp, _ := dialRaw(t, s, dialOpts{Mode: "source", Token: "src-token"})
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "closed") {
		t.Errorf("token of a tunnel registered closed: %d %q, want 400, the tunnel is closed", resp.StatusCode, b)
	}
	if _, err := s.Server.OpenTunnel(TunnelConfig{ClientTokens: [2]string{"", ct}}); err != nil {
		t.Errorf("the client token of a tunnel registered closed is not free: %v", err)
	}
	if n := logs.Count("msg=closed"); n != 0 || changes.Load() != 0 {
		t.Errorf("registering a tunnel closed logged %d close lines and called OnChange %d times, want none", n, changes.Load())
	}
}

// OnFirstUse sees the side dated at its connect, the time it is then reported
// connected since: tunneld saves the first use, and a crash after the 101 must
// leave no earlier time on disk. A first use that fails gives the time back.
func TestFirstUseCarriesConnectTime(t *testing.T) {
	var ticks atomic.Int64
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := newTestServer(t)
	s.now = func() time.Time { return base.Add(time.Duration(ticks.Add(1)) * time.Second) } // every reading later
	tun := s.OpenTunnel("SSH")
	opened := tun.Side(Source).LastUpdated
	seen := make(chan time.Time, 2) // the side's time at each OnFirstUse
	var calls atomic.Int32
	s.OnFirstUse = func(t *Tunnel) error {
		seen <- t.Side(Source).LastUpdated
		if calls.Add(1) == 1 {
			return errors.New("disk full") // its time must not stay
		}
		return nil
	}
	if _, resp, err := dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("handshake whose use is not recorded: %v, want 503", err)
	}
	<-seen
	if got := tun.Side(Source).LastUpdated; !got.Equal(opened) {
		t.Errorf("after a first use that failed, the side is dated %v, want %v (its open)", got, opened)
	}
	ws, _, err := dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if saved, got := <-seen, tun.Side(Source); !got.Connected || !got.LastUpdated.Equal(saved) {
		t.Errorf("Side(Source) = %+v, want connected since %v, the time OnFirstUse saw", got, saved)
	}
}

// TestReconnectAfterClockSetBack: a side restored with a time ahead of the
// clock (saved before it was set back) that reconnects with its client token
// is dated by that connect, not by the restored time in the future.
func TestReconnectAfterClockSetBack(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := newTestServer(t)
	s.now = func() time.Time { return now }
	const ct = "11111111-1111-1111-1111-111111111111"
	later := now.Add(time.Hour)
	tun, err := s.Server.OpenTunnel(TunnelConfig{ID: "t1", Services: []string{"SSH"}, Tokens: [2]string{"src-token", "dst-token"},
		Used: [2]bool{true, false}, ClientTokens: [2]string{ct, ""}, LastUpdated: [2]time.Time{later, later}})
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := dialRaw(t, s, dialOpts{Mode: "source", Token: "src-token", ClientToken: ct})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if got := tun.Side(Source); !got.Connected || !got.LastUpdated.Equal(now) {
		t.Errorf("Side(Source) = %+v, want connected since %v, its connect", got, now)
	}
}

func TestSideStateAndOnChange(t *testing.T) {
	var changes atomic.Int32
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := newTestServer(t)
	s.now = func() time.Time { return now }
	s.OnChange = func(*Tunnel) { changes.Add(1) }
	restored := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tun, err := s.Server.OpenTunnel(TunnelConfig{ID: "t1", Services: []string{"SSH"}, Tokens: [2]string{"src-token", "dst-token"},
		Used: [2]bool{false, true}, ClientTokens: [2]string{"", "ffffffff-ffff-ffff-ffff-ffffffffffff"}, LastUpdated: [2]time.Time{restored}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Server.OpenTunnel(TunnelConfig{ID: "t1"}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("second t1: %v, want ErrDuplicate", err)
	}
	if _, err := s.Server.OpenTunnel(TunnelConfig{Tokens: [2]string{"src-token"}}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("reused token: %v, want ErrDuplicate", err)
	}
	if got := tun.Side(Source); got.LastUpdated != restored || got.Connected {
		t.Errorf("Side(Source) = %+v, want restored time, disconnected", got)
	}
	// A restored used token takes only its client token.
	_, resp, _ := dialRaw(t, s, dialOpts{Mode: "destination", Token: "dst-token"})
	if b, _ := io.ReadAll(resp.Body); string(b) != BodyTokenUsed {
		t.Errorf("restored used token: %q, want %q", b, BodyTokenUsed)
	}
	now = now.Add(time.Minute)
	c := dial(t, s, dialOpts{Mode: "destination", Token: "dst-token", ClientToken: "ffffffff-ffff-ffff-ffff-ffffffffffff"})
	c.WantServiceIDs("SSH")
	if got := tun.Side(Destination); !got.Connected || got.LastUpdated != now || got.Connects != 1 {
		t.Errorf("Side(Destination) = %+v, want connected at %v", got, now)
	}
	now = now.Add(time.Minute)
	tun.Drop(Destination)
	c.WantCut()
	if got := tun.Side(Destination); got.Connected || got.LastUpdated != now {
		t.Errorf("Side(Destination) after Drop = %+v, want disconnected at %v", got, now)
	}
	for deadline := time.Now().Add(5 * time.Second); changes.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("OnChange called %d times, want 2 (connect, disconnect)", changes.Load())
		}
	}
	if s.Tunnel("t1") != tun {
		t.Errorf("Tunnel(t1) is not the tunnel")
	}
	s.Remove(tun)
	if s.Tunnel("t1") != nil || !tun.Closed() {
		t.Errorf("after Remove: Tunnel(t1) = %v, Closed = %v", s.Tunnel("t1"), tun.Closed())
	}
	_, resp, _ = dialRaw(t, s, dialOpts{Mode: "source", Token: "src-token"})
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "not valid") {
		t.Errorf("removed tunnel's token: %q, want not valid", b)
	}
}

func TestCloseReasonAndServerClosed(t *testing.T) {
	s, tun, src, dst := pair(t, "SSH")
	tun.CloseReason("tunnel expired")
	for _, c := range []*client{src, dst} {
		if r := c.WantClose(websocket.StatusNormalClosure); r != "tunnel expired" {
			t.Errorf("close reason %q, want %q", r, "tunnel expired")
		}
	}
	_, resp, _ := dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "closed") {
		t.Errorf("closed tunnel's token: %q, want closed", b)
	}
	s.Server.Close()
	_, resp, _ = dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("after Server.Close: %v, want 503", resp)
	}
}

func TestKeepHandshakes(t *testing.T) {
	s := newTestServer(t)
	s.KeepHandshakes = 2
	tun := s.OpenTunnel()
	for range 3 {
		dialRaw(t, s, dialOpts{Mode: "source", Token: "unknown"})
	}
	dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken})
	hs := s.Handshakes()
	if len(hs) != 2 || hs[0].Status != 400 || hs[1].Status != 101 {
		t.Errorf("Handshakes() = %d entries, want the last two (400, 101)", len(hs))
	}
}

func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// A side that has stopped reading must not outlive the tunnel: Close (CloseTunnel,
// expiry) writes the queue and a Close frame, but a writer blocked on the stalled
// client never gets there, and nothing else ends the connection.
func TestCloseEndsAStalledReader(t *testing.T) {
	s := newTestServer(t)
	s.closeGrace = time.Second
	tun := s.OpenTunnel("SSH")
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	_ = dst // never read: its socket buffers fill up
	if err := tun.WaitConnects(context.Background(), Destination, 1); err != nil {
		t.Fatal(err)
	}
	go func() {
		payload := make([]byte, 60000)
		for tun.Send(Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: payload}) == nil {
		}
	}()
	time.Sleep(2 * time.Second) // the buffers fill and the writer blocks
	tun.Close()
	deadline := time.Now().Add(4 * time.Second)
	for s.connCount() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.connCount(); n > 0 {
		t.Errorf("%d WebSocket(s) still served after the tunnel closed", n)
	}
}

// pausingWriter holds the handshake at its first Header call, which the data
// plane makes right after admit has taken the access token.
type pausingWriter struct {
	http.ResponseWriter
	admitted, resume chan struct{}
	once             sync.Once
}

func (w *pausingWriter) Header() http.Header {
	w.once.Do(func() {
		close(w.admitted)
		<-w.resume
	})
	return w.ResponseWriter.Header()
}

func (w *pausingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.ResponseWriter.(http.Hijacker).Hijack()
}

// A rotation between the check of a token and the attach of its WebSocket must
// not leave a connection made with the revoked token attached: Revoke is how a
// leaked token is taken back (tunneld's RotateTunnelAccessToken).
func TestRevokeDuringHandshake(t *testing.T) {
	pw := &pausingWriter{admitted: make(chan struct{}), resume: make(chan struct{})}
	ts, tun := serveThrough(t, func(w http.ResponseWriter) http.ResponseWriter {
		pw.ResponseWriter = w
		return pw
	})
	leaked := tun.Side(Destination).Token
	done := make(chan error, 1)
	go func() {
		_, _, err := dialRaw(t, ts, dialOpts{Mode: "destination", Token: leaked})
		done <- err
	}()
	<-pw.admitted
	fresh, _ := tun.Revoke(Destination)
	close(pw.resume)
	err := <-done
	time.Sleep(100 * time.Millisecond)
	if tun.Connected(Destination) {
		t.Errorf("after Revoke, a WebSocket made with the revoked token is connected (dial err %v); the fresh token %.4s... is unused", err, fresh)
	}
}

// A side that reconnects while its peer has stopped reading, with the peer's
// queue full, gets its 101 at once: the STREAM_RESETs the service sends the peer
// for the streams of the replaced connection do not wait for room in that queue.
func TestReconnectDoesNotWaitForAStalledPeer(t *testing.T) {
	s := newTestServer(t)
	tun := s.OpenTunnel("SSH")
	ct := strings.Repeat("a", 32)
	dst := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken}) // never read
	src := dial(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: ct})
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1})
	fill := make(chan struct{})
	go func() { // what the source would relay to the stalled destination
		defer close(fill)
		payload := make([]byte, 60000)
		for tun.Send(Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: payload}) == nil {
		}
	}()
	time.Sleep(2 * time.Second) // the socket buffers and the queue fill up

	start := time.Now()
	ws, _, err := dialRaw(t, s, dialOpts{Mode: "source", Token: tun.SourceToken, ClientToken: ct})
	if err != nil {
		t.Errorf("reconnect with the client token after %v: %v", time.Since(start).Round(time.Millisecond), err)
	} else {
		ws.CloseNow()
	}
	dst.WS.CloseNow()
	<-fill
}

// A frame the revoked client sends as RevokeClose comes does not get its
// connection cut: it still gets the Close frame. The conn was detached before
// its Close was under way, and its reader, given a frame then, stopped and cut
// it; the client, with no Close frame, reconnected with the revoked token
// (tools/e2e's TestRotationWithAgentAndConnect, once in CI).
func TestRevokeCloseWhileTheClientSends(t *testing.T) {
	s := newTestServer(t)
	tun := s.OpenTunnel("SSH")
	old := dial(t, s, dialOpts{Mode: "destination", Token: tun.DestinationToken})
	old.WantServiceIDs("SSH")
	revokeStep = func() {
		b, err := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 1, ServiceID: "SSH"})
		if err != nil {
			t.Error(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := old.WS.Write(ctx, websocket.MessageBinary, b); err != nil {
			t.Errorf("writing a frame as the rotation comes: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // for the server's reader to take it
	}
	t.Cleanup(func() { revokeStep = nil })
	tun.RevokeClose(Destination, "token revoked")
	if reason := old.WantClose(websocket.StatusPolicyViolation); reason != "token revoked" {
		t.Errorf("Close frame's reason %q, want %q", reason, "token revoked")
	}
	if tun.Connected(Destination) {
		t.Error("the side is still connected after RevokeClose")
	}
}

// A frame of the revoked side that waits to be relayed to a peer whose queue
// is full when RevokeClose comes is dropped, not relayed once the peer reads:
// tunneld follows the rotation with a SESSION_RESET to the peer, and a frame
// of the revoked holder after it (a STREAM_START here) would start a stream
// at the destination for the client the rotation shut out.
func TestRevokeCloseDropsAFrameWaitingForThePeer(t *testing.T) {
	s, logs := loggedServer(t)
	tun := s.OpenTunnel("SSH")
	src, dst := pairOn(t, s, tun)
	_, n := fillDestination(t, tun, src, dst)
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 2, ServiceID: "SSH"})
	waitReceived(t, tun, n+1) // its relay waits for room
	tun.RevokeClose(Source, "token revoked")
	tun.SessionReset(Destination) // as tunneld's rotation does
	src.WantClose(StatusRevoked)
	for {
		m := dst.MustNext()
		if m.Type == tunnel.TypeSessionReset {
			break
		}
		if m.Type != tunnel.TypeData {
			t.Fatalf("before SESSION_RESET, the destination got %v, want the source's DATA", m)
		}
	}
	// Once the source's reader has ended, its frame has been relayed or
	// dropped: a marker sent now comes after it, if it was relayed.
	endedLine(t, logs, Source, 10*time.Second)
	marker := &tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 99, ServiceID: "SSH"}
	if err := tun.Send(Destination, marker); err != nil {
		t.Fatal(err)
	}
	if m := dst.MustNext(); m.Type != marker.Type || m.StreamID != marker.StreamID {
		t.Errorf("after SESSION_RESET, the destination got %v from the revoked source, want nothing before the marker", m)
	}
}

// A handshake whose token was checked before CloseTunnel and whose 101 goes
// out after it gets the Close frame (1000 and the reason), as a connection
// made just before the close does, not a cut: a client takes a cut as a
// reason to reconnect, and learns only from the refusal of that reconnect
// that the tunnel is closed.
func TestCloseDuringHandshake(t *testing.T) {
	pw := &pausingWriter{admitted: make(chan struct{}), resume: make(chan struct{})}
	ts, tun := serveThrough(t, func(w http.ResponseWriter) http.ResponseWriter {
		pw.ResponseWriter = w
		return pw
	})
	type dialed struct {
		ws  *websocket.Conn
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		ws, _, err := dialRaw(t, ts, dialOpts{Mode: "destination", Token: tun.Side(Destination).Token})
		done <- dialed{ws, err}
	}()
	<-pw.admitted
	tun.CloseReason("tunnel expired")
	close(pw.resume)
	d := <-done
	if d.err != nil {
		t.Fatalf("dial: %v", d.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, _, err := d.ws.Read(ctx) // SERVICE_IDS, then the close
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "tunnel expired" {
			t.Errorf("connection ended with %v, want a Close frame 1000 %q", err, "tunnel expired")
		}
		break
	}
}

// failingHijack is a ResponseWriter whose Hijack fails, after the 101 was
// written to it.
type failingHijack struct{ http.ResponseWriter }

func (w failingHijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errors.New("hijack failed (test)")
}

// An upgrade whose hijack fails after the 101 leaves nothing behind: the conn
// attached at the 101 is detached, and forgotten by the server too (Close
// would otherwise go on cutting a conn that never ran).
func TestFailedHijackForgotten(t *testing.T) {
	ts, tun := serveThrough(t, func(w http.ResponseWriter) http.ResponseWriter { return failingHijack{w} })
	if ws, _, err := dialRaw(t, ts, dialOpts{Mode: "destination", Token: tun.Side(Destination).Token}); err == nil {
		ws.CloseNow()
		t.Error("dial succeeded through a failed hijack")
	}
	if tun.Connected(Destination) {
		t.Error("the destination is connected after its hijack failed")
	}
	if n := ts.connCount(); n != 0 {
		t.Errorf("%d conns held by the server after the hijack failed, want 0", n)
	}
}

// serveThrough serves a new data plane over HTTP, with each handshake's
// ResponseWriter wrapped by wrap, and opens a tunnel with service SSH on it;
// both are closed at the end of the test.
func serveThrough(t *testing.T, wrap func(http.ResponseWriter) http.ResponseWriter) (*testServer, *Tunnel) {
	t.Helper()
	s := &Server{Logger: testLogger(t)}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(wrap(w), r)
	}))
	hs.Config.ConnContext = s.ConnContext
	hs.Start()
	t.Cleanup(func() { s.Close(); hs.Close() })
	tun, err := s.OpenTunnel(TunnelConfig{Services: []string{"SSH"}})
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{Server: s, URL: "ws://" + strings.TrimPrefix(hs.URL, "http://")}, tun
}
