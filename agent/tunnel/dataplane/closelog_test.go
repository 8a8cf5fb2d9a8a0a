package dataplane

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/internal/wstest"
)

// loggedServer is newTestServer with its log kept in logs too.
func loggedServer(t *testing.T) (*testServer, *testlog.Lines) {
	s := newTestServer(t)
	logs := new(testlog.Lines)
	s.Server.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, tlogWriter{t}), nil))
	return s, logs
}

// pairOn connects both sides of tun (V3), past SERVICE_IDS.
func pairOn(t *testing.T, s *testServer, tun *testTunnel) (src, dst *client) {
	t.Helper()
	return wstest.Pair(t, s.URL, tun.SourceToken, tun.DestinationToken, tun.Services()...)
}

// endedLine waits for the "ended" line of side's connection and returns it.
func endedLine(t *testing.T, logs *testlog.Lines, side Side, d time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "msg=ended ") && strings.Contains(line, " side="+side.String()+" ") {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no \"ended\" line for the %v:\n%s", side, logs.String())
		}
	}
}

// queueFull reports whether the frames queued for side's connection fill its
// queue, so that a relay to it waits.
func (t *Tunnel) queueFull(side Side) bool {
	t.s.mu.Lock()
	c := t.sides[side].conn
	t.s.mu.Unlock()
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fullLocked()
}

// fillDestination starts a stream and sends DATA from src until the queue of
// frames for dst, which does not read, is full, with the reader idle: the
// next frame's relay waits. It returns the DATA frame it sends, and the
// number of frames the tunnel has recorded from src (Record is on).
func fillDestination(t *testing.T, tun *testTunnel, src, dst *client) (*tunnel.Message, int) {
	t.Helper()
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	dst.MustNext()
	tun.Record(true)
	// dst reads no more: its socket buffers fill, then its queue. The
	// queue is not full before a frame, so its relay does not wait.
	data := &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: make([]byte, tunnel.MaxPayload)}
	sent := 0
	for deadline := time.Now().Add(20 * time.Second); !tun.queueFull(Destination); {
		if time.Now().After(deadline) {
			t.Fatal("the destination's queue did not fill")
		}
		src.Send(data)
		sent++
		waitReceived(t, tun, sent)
	}
	return data, sent
}

// waitReceived waits until the tunnel has recorded n frames from the source.
func waitReceived(t *testing.T, tun *testTunnel, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(tun.Received(Source)) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d frames received from the source, want %d", len(tun.Received(Source)), n)
		}
	}
}

// A connection the service closed with a Close frame, which the client
// answered, while its reader was waiting to relay a frame to a peer that does
// not read: the close handshake completes without the reader, which finds the
// connection closed (or cut, after the grace) once the relay gives up. That
// is a clean end, logged without an error, as when the reader reads the
// answer itself (TestClosedByServerEndsWithoutError).
func TestClosedWhileRelayingEndsWithoutError(t *testing.T) {
	s, logs := loggedServer(t)
	tun := s.OpenTunnel("SSH")
	src, dst := pairOn(t, s, tun)
	data, n := fillDestination(t, tun, src, dst)
	src.Send(data) // its relay waits for room that never comes
	waitReceived(t, tun, n+1)
	tun.RevokeClose(Source, "token revoked")
	if _, err := src.Next(); websocket.CloseStatus(err) != StatusRevoked {
		t.Fatalf("after RevokeClose: %v, want the Close frame", err)
	}
	if line := endedLine(t, logs, Source, 10*time.Second); !strings.HasSuffix(line, " error=<nil>") {
		t.Errorf("a connection closed with a Close frame the client answered, while its reader relayed, is logged with an error: %s", line)
	}
}

// A connection the service closed with a Close frame while its reader waited
// for the bandwidth limit in the middle of a message: the close handshake
// completes without the reader, which then finds the connection closed. A
// clean end, logged without an error.
func TestClosedWhileReadingEndsWithoutError(t *testing.T) {
	s, logs := loggedServer(t)
	tun := s.OpenTunnel("SSH")
	src, dst := pairOn(t, s, tun)
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	dst.MustNext()
	const rate = 64 << 10
	tun.SetBandwidth(rate)
	data := &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: make([]byte, rate/2)}
	// Two frames pass from the full bucket of one second; the third waits
	// for half a second, the fourth for one more.
	src.Send(data, data, data, data)
	time.Sleep(200 * time.Millisecond)
	tun.Close()
	if err := src.Closed(); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after Close: %v, want the Close frame", err)
	}
	if line := endedLine(t, logs, Source, 10*time.Second); !strings.HasSuffix(line, " error=<nil>") {
		t.Errorf("a connection closed with a Close frame the client answered, while its reader read a message, is logged with an error: %s", line)
	}
}

// A frame handed to the tunnel after CloseTunnel detached the connection
// stops the reader ("stopped by the tunnel"): here the second of a message's
// two frames, the first having waited to be relayed to a destination that
// does not read until CloseTunnel ended the wait. The writer's close
// handshake completes without the reader: a clean end, logged without an
// error.
func TestFrameDuringCloseTunnelEndsWithoutError(t *testing.T) {
	s, logs := loggedServer(t)
	tun := s.OpenTunnel("SSH")
	src, dst := pairOn(t, s, tun)
	data, n := fillDestination(t, tun, src, dst)
	src.Send(data, data)
	waitReceived(t, tun, n+1) // the first waits to be relayed
	tun.Close()
	if err := src.Closed(); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after Close: %v, want the Close frame", err)
	}
	if line := endedLine(t, logs, Source, 10*time.Second); !strings.HasSuffix(line, " error=<nil>") {
		t.Errorf("a connection closed by CloseTunnel with a Close frame the client answered is logged with an error: %s", line)
	}
}

// The service's close does not hide a client's failure: a client that cuts
// the connection instead of answering the Close frame, closes it with a
// status of its own, or does not answer within the grace (the connection is
// cut) ends with an error in the log.
func TestClosedByServerClientFailureLogged(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(c *client)
	}{
		{"cut", func(c *client) { c.WS.CloseNow() }},
		{"own status", func(c *client) { c.WS.Close(websocket.StatusGoingAway, "bye") }},
		{"no answer", func(*client) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := loggedServer(t)
			tun := s.OpenTunnel("SSH")
			src, _ := pairOn(t, s, tun)
			tun.RevokeClose(Source, "token revoked")
			tc.close(src)
			if line := endedLine(t, logs, Source, 10*time.Second); strings.HasSuffix(line, " error=<nil>") {
				t.Errorf("a client that did not answer the Close frame is logged without an error: %s", line)
			}
		})
	}
}
