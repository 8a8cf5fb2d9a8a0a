package notify

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// The session counts a message from when it is stored until its PUBACK: a
// Publish that gave up waiting for a send-quota slot stored nothing, and was
// counted as outstanding for ever.
func TestSessionCountsStoredMessagesOnly(t *testing.T) {
	s := newSessionState(slog.New(slog.DiscardHandler))
	recvMax, expiry := uint16(1), uint32(60)
	cp := &packets.Connect{Properties: &packets.Properties{SessionExpiryInterval: &expiry}}
	ca := &packets.Connack{SessionPresent: true, Properties: &packets.Properties{ReceiveMaximum: &recvMax}}
	if err := s.ConAckReceived(io.Discard, cp, ca); err != nil {
		t.Fatal(err)
	}
	add := func() (*packets.Publish, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		p := &packets.Publish{QoS: 1, Topic: "porthole/events/thing-a"}
		return p, s.AddToSession(ctx, p, make(chan packets.ControlPacket, 1))
	}
	first, err := add()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := add(); !errors.Is(err, context.DeadlineExceeded) { // the broker's Receive Maximum is 1
		t.Fatalf("a second message with a send quota of 1 = %v, want a timeout", err)
	}
	if n := s.unackedCount(); n != 1 {
		t.Errorf("%d messages unacknowledged, want 1: the one that waited for a slot was not stored", n)
	}
	ack := packets.NewControlPacket(packets.PUBACK)
	ack.Content.(*packets.Puback).PacketID = first.PacketID
	if err := s.PacketReceived(ack, nil); err != nil {
		t.Fatal(err)
	}
	if n := s.unackedCount(); n != 0 {
		t.Errorf("%d messages unacknowledged after the PUBACK, want 0", n)
	}
}

// A Publish that gave up waiting asks abandon whether its message is still in
// the session, to go again on the next connection (ErrQueuedInSession: its
// caller does not send it again), or was discarded meanwhile: the broker had
// lost the session when the agent reconnected. Told "kept" for a discarded
// message, the caller dropped an event no one would send.
func TestAbandonAfterDiscardIsNotKept(t *testing.T) {
	s := newSessionState(slog.New(slog.DiscardHandler))
	expiry := uint32(60)
	cp := &packets.Connect{Properties: &packets.Properties{SessionExpiryInterval: &expiry}}
	connack := func(present bool) {
		t.Helper()
		if err := s.ConAckReceived(io.Discard, cp, &packets.Connack{SessionPresent: present, Properties: &packets.Properties{}}); err != nil {
			t.Fatal(err)
		}
	}
	store := func() *stored {
		t.Helper()
		r := new(stored)
		ctx := context.WithValue(context.Background(), storedKey{}, r)
		if err := s.AddToSession(ctx, &packets.Publish{QoS: 1, Topic: "porthole/events/thing-a"}, make(chan packets.ControlPacket, 1)); err != nil {
			t.Fatal(err)
		}
		if !r.ok {
			t.Fatal("AddToSession did not say it stored the message")
		}
		return r
	}
	connack(true)
	kept := store()
	if !s.abandon(kept) {
		t.Errorf("abandon of a message the session holds = false, want true (kept)")
	}
	lost := store()
	if err := s.ConnectionLost(nil); err != nil { // expiry 60 s: the session stays
		t.Fatal(err)
	}
	connack(false) // the broker no longer had it: the session discards both
	if s.abandon(lost) {
		t.Errorf("abandon of a message discarded with the session = true, want false")
	}
	if n := s.unackedCount(); n != 0 {
		t.Errorf("%d messages unacknowledged after the session was discarded, want 0", n)
	}
}

// A SUBSCRIBE whose connection ends before its SUBACK (a broker that drops the
// client at its SUBSCRIBE, a link lost at that moment) leaves the session. paho
// keeps its packet identifier, and a channel, across connections where the
// broker kept the session: one more at each such connection, until after 65535
// of them (45 days of a broker dropping each connection at its SUBSCRIBE, two
// minutes apart) no SUBSCRIBE or PUBLISH got an identifier any more, and the
// device heard no notification until restarted.
func TestLostSubscribeFreesItsPacketID(t *testing.T) {
	s := newSessionState(slog.New(slog.DiscardHandler))
	expiry := uint32(60)
	cp := &packets.Connect{Properties: &packets.Properties{SessionExpiryInterval: &expiry}}
	connack := func() {
		t.Helper()
		if err := s.ConAckReceived(io.Discard, cp, &packets.Connack{SessionPresent: true, Properties: &packets.Properties{}}); err != nil {
			t.Fatal(err)
		}
	}
	subscribe := func() (*packets.Subscribe, chan packets.ControlPacket, error) {
		sp := &packets.Subscribe{Subscriptions: []packets.SubOptions{{Topic: Topic("thing-a"), QoS: 1}}}
		resp := make(chan packets.ControlPacket, 1)
		return sp, resp, s.AddToSession(context.Background(), sp, resp)
	}
	connack()
	lost, resp, err := subscribe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ConnectionLost(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-resp: // the Subscribe waiting for it returns
	default:
		t.Errorf("the SUBSCRIBE lost with its connection was not answered")
	}
	connack() // the broker kept the session
	for id := 1; id <= 65535; id++ {
		if uint16(id) != lost.PacketID {
			s.st.AllocateClientPacketIDForTest(uint16(id), packets.PUBLISH, make(chan packets.ControlPacket, 1))
		}
	}
	if sp, _, err := subscribe(); err != nil || sp.PacketID != lost.PacketID {
		t.Errorf("a SUBSCRIBE with every other identifier in use got identifier %d, %v; want %d, the one of the SUBSCRIBE lost with its connection", sp.PacketID, err, lost.PacketID)
	}
}
