package notify

import (
	"context"
	"io"
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
type sessionState struct {
	_  [0]func() // not comparable: no equality function in the binary (docs/size.md)
	st *state.State

	mu        sync.Mutex
	unacked   map[uint16]struct{} // identifiers of the PUBLISHes stored and not acknowledged
	connected bool                // between ConAckReceived and ConnectionLost
	expiry    uint32              // the session expiry interval in force, as st keeps it
}

func newSessionState() *sessionState {
	return &sessionState{st: state.NewInMemory(), unacked: map[uint16]struct{}{}}
}

// unackedCount is how many messages the session holds unacknowledged.
func (s *sessionState) unackedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unacked)
}

// discardLocked forgets the unacknowledged messages, which st has just
// discarded.
func (s *sessionState) discardLocked() {
	clear(s.unacked)
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
		s.discardLocked()
	}
	return err
}

func (s *sessionState) ConnectionLost(dp *packets.Disconnect) error {
	err := s.st.ConnectionLost(dp)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.connected {
		return err // called again for the same loss
	}
	s.connected = false
	if dp != nil && dp.Properties != nil && dp.Properties.SessionExpiryInterval != nil {
		s.expiry = *dp.Properties.SessionExpiryInterval
	}
	if s.expiry == 0 { // st cleans the session: it ended with the connection (MQTT-3.1.2-23)
		s.discardLocked()
	}
	return err
}

func (s *sessionState) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	if err := s.st.AddToSession(ctx, p, resp); err != nil {
		return err
	}
	if pub, ok := p.(*packets.Publish); ok {
		s.mu.Lock()
		s.unacked[pub.PacketID] = struct{}{}
		s.mu.Unlock()
	}
	return nil
}

func (s *sessionState) PacketReceived(cp *packets.ControlPacket, pubs chan<- *packets.Publish) error {
	// Publish sends QoS 1 only: a PUBACK, whatever its reason code, ends the
	// message's life in the session. Taken out first, so that the count is
	// right by the time the waiting Publish returns.
	if ack, ok := cp.Content.(*packets.Puback); ok {
		s.mu.Lock()
		delete(s.unacked, ack.PacketID)
		s.mu.Unlock()
	}
	return s.st.PacketReceived(cp, pubs)
}

// Close answers every Publish still waiting and forgets what the session holds.
func (s *sessionState) Close() error {
	err := s.st.Close()
	s.mu.Lock()
	s.discardLocked()
	s.mu.Unlock()
	return err
}

func (s *sessionState) Ack(pb *packets.Publish) error   { return s.st.Ack(pb) }
func (s *sessionState) SetErrorLogger(l paholog.Logger) { s.st.SetErrorLogger(l) }
func (s *sessionState) SetDebugLogger(l paholog.Logger) { s.st.SetDebugLogger(l) }
