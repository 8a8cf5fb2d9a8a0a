package notify

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"github.com/eclipse/paho.golang/packets"
	paholog "github.com/eclipse/paho.golang/paho/log"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// sessionState is paho's in-memory session state, which every connection of a
// Run shares, with the packet identifiers of the QoS 1 PUBLISH packets it holds
// that the broker has not acknowledged: those paho sends again on the next
// connection, and the ones dropPoison counts. A Publish that gave up waiting
// leaves its message there until a PUBACK takes it out, on that connection or,
// the message sent again, on a later one (MQTT 5.0 §4.4); a Publish that gave
// up while waiting for a send-quota slot stored nothing. The methods are
// paho's session.SessionManager.
//
// A message whose Publish gave up is sent by the session alone: when the session
// discards it unacknowledged (the broker lost the session, the listener
// stopped) it is lost, and that is logged.
type sessionState struct {
	_   [0]func() // not comparable: no equality function in the binary (docs/size.md)
	st  *state.State
	log *slog.Logger

	mu sync.Mutex
	// unacked holds the identifiers of the PUBLISHes stored and not
	// acknowledged; true: its Publish gave up (ErrQueuedInSession).
	unacked   map[uint16]bool
	discards  uint64 // how many times st discarded its messages unacknowledged
	connected bool   // between ConAckReceived and ConnectionLost
	expiry    uint32 // the session expiry interval in force, as st keeps it
	// sub is the packet identifier of the last SUBSCRIBE, while it waits for
	// its SUBACK on this connection (0: none; the listener sends one at a
	// time). st keeps it across connections, unlike the broker (it is not
	// session state, MQTT 5.0 §4.1): ConnectionLost ends it.
	sub uint16
}

func newSessionState(log *slog.Logger) *sessionState {
	return &sessionState{st: state.NewInMemory(), log: log, unacked: map[uint16]bool{}}
}

// stored is what the session tells the Publish call whose message it stored.
// paho calls AddToSession from Publish, in the caller's goroutine and with a
// context derived from the caller's, which carries it under storedKey.
type stored struct {
	_        [0]func() // not comparable: no equality function in the binary (docs/size.md)
	ok       bool
	id       uint16 // the message's packet identifier
	discards uint64 // the session's discards when it was stored
}

type storedKey struct{}

// abandon is called when the Publish that stored r gave up waiting: it reports
// whether the message is in the session still, to be sent again on the next
// connection, or was answered meanwhile, rather than discarded unacknowledged.
func (s *sessionState) abandon(r *stored) bool {
	s.mu.Lock()
	kept := r.discards == s.discards
	if _, ok := s.unacked[r.id]; kept && ok {
		s.unacked[r.id] = true
	}
	s.mu.Unlock()
	return kept
}

// unackedCount is how many messages the session holds unacknowledged.
func (s *sessionState) unackedCount() int {
	s.mu.Lock()
	n := len(s.unacked)
	s.mu.Unlock()
	return n
}

// discardLocked forgets the unacknowledged messages, which st has just
// discarded, and logs those whose Publish had given up, lost now (why says
// how; "": the caller logs it). A Publish still waiting gets an error and its
// caller may send it again.
func (s *sessionState) discardLocked(why string) {
	if len(s.unacked) == 0 {
		return
	}
	lost := 0
	for _, abandoned := range s.unacked {
		if abandoned {
			lost++
		}
	}
	clear(s.unacked)
	s.discards++
	if lost > 0 && why != "" {
		s.log.Warn("mqtt: messages left to the session unacknowledged, after their Publish gave up, are lost: "+why,
			"messages", lost)
	}
}

func (s *sessionState) ConAckReceived(w io.Writer, cp *packets.Connect, ca *packets.Connack) error {
	err := s.st.ConAckReceived(w, cp, ca)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = true
	// The expiry that st keeps, from the CONNACK or else the CONNECT (MQTT
	// 5.0 §3.2.2.3.2).
	s.expiry = 0
	if ca.Properties != nil && ca.Properties.SessionExpiryInterval != nil {
		s.expiry = *ca.Properties.SessionExpiryInterval
	} else if cp.Properties != nil && cp.Properties.SessionExpiryInterval != nil {
		s.expiry = *cp.Properties.SessionExpiryInterval
	}
	if !ca.SessionPresent {
		// The broker has no session: st cleans its own, sending nothing again
		// (MQTT 5.0 §4.1).
		s.discardLocked("the broker no longer had the session when the agent reconnected (it expired, or the broker lost its state)")
	}
	return err
}

func (s *sessionState) ConnectionLost(dp *packets.Disconnect) error {
	err := s.st.ConnectionLost(dp)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sub != 0 {
		// A SUBACK of packet type 0 is what st answers a request with when
		// it drops it: the Subscribe still waiting returns ErrConnectionLost.
		_ = s.st.PacketReceived(&packets.ControlPacket{Content: &packets.Suback{PacketID: s.sub}}, nil)
		s.sub = 0
	}
	if !s.connected {
		return err // called again for the same loss
	}
	s.connected = false
	if dp != nil && dp.Properties != nil && dp.Properties.SessionExpiryInterval != nil {
		s.expiry = *dp.Properties.SessionExpiryInterval
	}
	if s.expiry == 0 { // st cleans the session: it ended with the connection (MQTT-3.1.2-23)
		s.discardLocked("the broker keeps no session after the connection ends (a session expiry interval of 0)")
	}
	return err
}

func (s *sessionState) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	if err := s.st.AddToSession(ctx, p, resp); err != nil {
		return err
	}
	if pub, ok := p.(*packets.Publish); ok {
		s.mu.Lock()
		s.unacked[pub.PacketID] = false
		discards := s.discards
		s.mu.Unlock()
		if r, ok := ctx.Value(storedKey{}).(*stored); ok {
			*r = stored{ok: true, id: pub.PacketID, discards: discards}
		}
	} else if sub, ok := p.(*packets.Subscribe); ok {
		s.mu.Lock()
		s.sub = sub.PacketID
		s.mu.Unlock()
	}
	return nil
}

func (s *sessionState) PacketReceived(cp *packets.ControlPacket, pubs chan<- *packets.Publish) error {
	// Publish sends QoS 1 only: a PUBACK, whatever its reason code, ends the
	// message's life in the session. Taken out first, so that the count is
	// right by the time the waiting Publish returns.
	s.mu.Lock()
	if ack, ok := cp.Content.(*packets.Puback); ok {
		delete(s.unacked, ack.PacketID)
	} else if ack, ok := cp.Content.(*packets.Suback); ok && ack.PacketID == s.sub {
		s.sub = 0
	}
	s.mu.Unlock()
	return s.st.PacketReceived(cp, pubs)
}

// drop answers every Publish still waiting and forgets what the session holds,
// logging the messages lost with why.
func (s *sessionState) drop(why string) {
	_ = s.st.Close()
	s.mu.Lock()
	s.discardLocked(why)
	s.mu.Unlock()
}

// Close is drop for paho, which calls it only for a session it made itself.
func (s *sessionState) Close() error {
	s.drop("the session was closed")
	return nil
}

func (s *sessionState) Ack(pb *packets.Publish) error   { return s.st.Ack(pb) }
func (s *sessionState) SetErrorLogger(l paholog.Logger) { s.st.SetErrorLogger(l) }
func (s *sessionState) SetDebugLogger(l paholog.Logger) { s.st.SetDebugLogger(l) }
