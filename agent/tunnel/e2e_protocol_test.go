package tunnel_test

import (
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// waitFrames waits until side has sent at least n recorded frames.
func waitFrames(t *testing.T, tun *tunneltest.Tunnel, side tunneltest.Side, n int) []tunneltest.Frame {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := tun.Received(side)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v sent %d frames, want %d: %+v", side, len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The destination drops DATA for stale streams and unknown connections, and
// answers only the live one (spec §3.2).
func TestDestinationDropsStaleFrames(t *testing.T) {
	addr := echoServer(t, 0)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true})
	h.tun.Record(true)
	send := func(m tunnel.Message) {
		if err := h.tun.Send(tunneltest.Destination, &m); err != nil {
			t.Fatal(err)
		}
	}
	send(tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 5, ServiceID: "SSH", ConnectionID: 1})
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 4, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("stale stream")})
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 5, ServiceID: "SSH", ConnectionID: 9, Payload: []byte("unknown connection")})
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 5, ServiceID: "WEB", ConnectionID: 1, Payload: []byte("unknown service")})
	send(tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 4, ServiceID: "SSH"}) // stale: ignored
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 5, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("ok")})
	got := waitFrames(t, h.tun, tunneltest.Destination, 1)
	time.Sleep(100 * time.Millisecond)
	got = h.tun.Received(tunneltest.Destination)
	if len(got) != 1 || got[0].Message.Type != tunnel.TypeData || got[0].PayloadLen != 2 ||
		got[0].Message.StreamID != 5 || got[0].Message.ConnectionID != 1 || got[0].Message.ServiceID != "SSH" {
		t.Fatalf("destination sent %+v, want one 2-byte DATA on stream 5 conn 1", got)
	}

	// A duplicate CONNECTION_START ends that connection on both sides.
	send(tunnel.Message{Type: tunnel.TypeConnectionStart, StreamID: 5, ServiceID: "SSH", ConnectionID: 1})
	got = waitFrames(t, h.tun, tunneltest.Destination, 2)
	if m := got[1].Message; m.Type != tunnel.TypeConnectionReset || m.ConnectionID != 1 || m.StreamID != 5 {
		t.Fatalf("after a duplicate CONNECTION_START the destination sent %+v, want CONNECTION_RESET 5/1", m)
	}
	send(tunnel.Message{Type: tunnel.TypeData, StreamID: 5, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("after reset")})
	time.Sleep(100 * time.Millisecond)
	if n := len(h.tun.Received(tunneltest.Destination)); n != 2 {
		t.Fatalf("destination answered data for a reset connection: %+v", h.tun.Received(tunneltest.Destination))
	}

	// Mixing formats in one session is a protocol error: the destination reconnects.
	send(tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 6})
	if err := h.tun.WaitConnects(ctxTimeout(t, 5*time.Second), tunneltest.Destination, 2); err != nil {
		t.Fatalf("destination did not reconnect after a V1 STREAM_START in a V3 session: %v", err)
	}
}

// A source that receives STREAM_START tears the session down and reconnects.
func TestSourceRejectsStreamStart(t *testing.T) {
	addr := echoServer(t, 0)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}})
	if err := h.tun.Send(tunneltest.Source, &tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"}); err != nil {
		t.Fatal(err)
	}
	if err := h.tun.WaitConnects(ctxTimeout(t, 5*time.Second), tunneltest.Source, 2); err != nil {
		t.Fatalf("source did not reconnect: %v", err)
	}
	if err := roundTrip(h.addr("SSH"), 0, 1000); err != nil {
		t.Fatal(err)
	}
}
