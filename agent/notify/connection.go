package notify

import (
	"context"
	"crypto/tls"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// disconnectTimeout bounds writing the DISCONNECT when Run ends, so that a
// connection whose peer stopped reading cannot hold Run up.
const disconnectTimeout = 5 * time.Second

// link is one MQTT connection.
type link struct {
	_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
	cli  *paho.Client
	conn *tls.Conn     // under cli; for the write deadline of the DISCONNECT
	lost chan struct{} // closed once the connection failed or the broker ended it
	once sync.Once
}

// end is called from paho's OnClientError and OnServerDisconnect, each of
// which runs after paho has begun shutting the client down (and may run
// more than once): the first call runs f and closes lost.
func (lk *link) end(f func()) {
	lk.once.Do(func() {
		if f != nil {
			f()
		}
		close(lk.lost)
	})
}

// maintain connects, keeps a connection up and reconnects with backoff
// until ctx ends, then disconnects cleanly; it returns once the last
// client has shut down, with the session state its connections used.
//
// One session state serves every connection, as the broker keeps one: a QoS 1
// PUBLISH whose PUBACK was lost with a connection is sent again on the next
// one with its packet identifier (MQTT 5.0 §4.4), and a Publish still waiting
// gets the PUBACK. But a message the broker answers by closing the connection
// (one it will not take: AWS IoT Core does so for a topic the policy does not
// allow, under MQTT 3.1.1; Mosquitto for a malformed one) would end every
// later connection as it comes up: after poisonedConnections such connections
// in a row the unacknowledged messages are dropped with the state (dropPoison).
func (l *Listener) maintain(ctx context.Context) *sessionState {
	sess := l.newSession()
	// The first connection of a Run is made at once; every later one waits
	// reconnectDelay.
	for attempt, start := 0, true; ; attempt, start = attempt+1, false {
		if ctx.Err() != nil || !start && !sleep(ctx, l.reconnectDelay(attempt)) {
			return sess
		}
		if l.dropPoison() {
			sess.drop("") // dropPoison said so; a Publish still waiting returns (ErrRefused)
			sess = l.newSession()
		}
		lk, ca, err := l.connect(ctx, sess)
		if err != nil {
			if ctx.Err() != nil {
				return sess
			}
			l.connectError(err)
			continue
		}
		l.connectionUp(ctx, lk.cli, ca)
		select {
		case <-lk.lost:
		case <-ctx.Done():
			l.disconnect(lk)
			return sess
		}
		<-lk.cli.Done() // paho closed the connection before reporting it lost
		if ctx.Err() != nil {
			return sess
		}
		l.connectionDown()
		attempt = -1 // the first reconnect waits up to min, more after short connections
	}
}

// newSession makes the session state the next connections use.
func (l *Listener) newSession() *sessionState {
	s := newSessionState(l.log)
	l.mu.Lock()
	l.sess = s
	l.mu.Unlock()
	return s
}

// unackedLocked is how many messages the session holds unacknowledged.
func (l *Listener) unackedLocked() int {
	if l.sess == nil {
		return 0
	}
	return l.sess.unackedCount()
}

// disconnect sends a DISCONNECT (reason 0: the broker keeps the session
// and discards no will) and waits for the client's goroutines to end.
func (l *Listener) disconnect(lk *link) {
	l.mu.Lock()
	l.cli = nil // Publish fails fast from here on
	if l.connCancel != nil {
		l.connCancel()
		l.connCancel = nil
	}
	l.mu.Unlock()
	_ = lk.conn.SetWriteDeadline(time.Now().Add(disconnectTimeout))
	if err := lk.cli.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		l.log.Debug("mqtt disconnect", "error", err)
	}
	<-lk.cli.Done()
}

// reconnectDelay is the wait before connection attempt number attempt
// (0 = the first after a lost connection, which waits a random time up to
// ConnectRetryMin if the connections before lasted, so that a fleet the broker
// dropped at once does not come back in step): flaps adds the connections that
// ended before stableConnection.
func (l *Listener) reconnectDelay(attempt int) time.Duration {
	l.mu.Lock()
	flaps := l.flaps
	l.mu.Unlock()
	return l.backoff.delay(attempt + flaps)
}

// connectionUp runs when a connection is established. The subscription
// runs in a goroutine bound to this connection: the SUBACK comes in on
// paho's receive loop, which must keep running meanwhile.
func (l *Listener) connectionUp(runCtx context.Context, cli *paho.Client, ca *paho.Connack) {
	l.repeats.Reset() // the next failure is news
	connCtx, cancel := context.WithCancel(runCtx)
	l.mu.Lock()
	l.cli = cli
	l.connCancel = cancel
	l.upAt = l.clock()
	l.maxPacket = 0
	if ca.Properties != nil && ca.Properties.MaximumPacketSize != nil {
		l.maxPacket = *ca.Properties.MaximumPacketSize
	}
	// A broker with Maximum QoS 0 (MQTT 5.0 §3.2.2.3.4; Mosquitto's max_qos 0)
	// takes no QoS 1 PUBLISH: paho refuses it locally, and the event queue
	// retried every event for ever. Events go at QoS 0 there rather than be
	// refused: the operator chose the broker's limit, and at QoS 0 they arrive
	// while the link is up, only those sent as it fails are lost, where
	// ErrRefused would have dropped every one.
	l.qos = 1
	if ca.Properties != nil && ca.Properties.MaximumQoS != nil && *ca.Properties.MaximumQoS == 0 {
		l.qos = 0
	}
	// warns are the WARN lines of this connection, logged with one call (each
	// call site costs code that sits before the tunnel's start-up code:
	// docs/size.md).
	var warns [2]string
	if l.qos == 0 && !l.qos0Warned {
		l.qos0Warned = true
		warns[0] = "mqtt: the broker takes QoS 0 only (Maximum QoS 0 in its CONNACK): events are published at QoS 0, without acknowledgement, " +
			"and those sent as the connection fails are lost"
	}
	// The broker may keep the session for less than asked (MQTT 5.0
	// §3.2.2.3.2; AWS IoT Core: the account's persistent-session limit, 1 h
	// unless raised), or have lost the one an earlier connection of this Run
	// left it: a notification published while the device is away is then
	// lost, and the agent relies on getting it (doc.go).
	kept, short := true, false // the broker keeps a session after this connection; for less than asked
	if p := ca.Properties; p != nil && p.SessionExpiryInterval != nil {
		kept = *p.SessionExpiryInterval > 0
		short = time.Duration(*p.SessionExpiryInterval)*time.Second < l.cfg.SessionExpiry
	}
	switch {
	case l.hadSession && !ca.SessionPresent:
		warns[1] = "mqtt: the broker no longer had the session on this reconnect (Session Present 0): a notification published since the last connection may be lost; " +
			"rotate the destination token of a tunnel opened meanwhile (aws iotsecuretunneling rotate-tunnel-access-token --client-mode DESTINATION) to send it again"
	case short && !l.expWarned:
		l.expWarned = true
		warns[1] = "mqtt: the broker keeps the session for less than asked (Session Expiry Interval in its CONNACK): " +
			"notifications published while the device is offline for longer are lost (AWS IoT Core keeps a session no longer than the account's persistent-session limit, 1 h unless raised)"
	}
	l.hadSession = kept
	l.mu.Unlock()
	for _, w := range warns {
		if w != "" {
			l.log.Warn(w, "broker", l.addr.hostPort())
		}
	}
	l.log.Info("mqtt connected", "broker", l.addr.hostPort(), "client_id", l.cfg.ClientID,
		"session_present", ca.SessionPresent)
	l.subWG.Add(1)
	go func() {
		defer l.subWG.Done()
		l.subscribe(connCtx, cli)
	}()
}

// connectionDown runs once the connection that connectionUp saw is gone
// and Run goes on (not when Run ends).
func (l *Listener) connectionDown() {
	l.mu.Lock()
	if l.connCancel != nil {
		l.connCancel()
		l.connCancel = nil
	}
	l.cli = nil
	if l.isReady {
		l.ready = make(chan struct{})
		l.isReady = false
	}
	lasted := l.clock().Sub(l.upAt)
	switch {
	case lasted >= stableConnection:
		l.flaps, l.poisoned = 0, 0
	case l.unackedLocked() > 0:
		l.flaps, l.poisoned = min(l.flaps+1, 16), l.poisoned+1
	default:
		l.flaps, l.poisoned = min(l.flaps+1, 16), 0
	}
	flaps := l.flaps
	l.mu.Unlock()
	attrs := []any{"connection_lasted", lasted.Round(time.Millisecond), "short_connections", flaps}
	if flaps >= flapsHint {
		// Mosquitto closes the older of two connections with one client id
		// without a DISCONNECT, so the loss reads as EOF; say what it may be.
		attrs = append(attrs, "hint", "connections keep ending within "+stableConnection.String()+
			": another client may be connecting with client id "+quoteShort(l.cfg.ClientID)+
			" (the broker drops the older one), or the broker refuses an operation (check its log and the IoT policy)")
		l.log.Warn("mqtt reconnecting", attrs...)
		return
	}
	l.log.Info("mqtt reconnecting", attrs...)
}

// poisonedConnections is how many short connections in a row, each ended with
// messages unacknowledged, make the listener drop them (dropPoison).
const poisonedConnections = 2

// dropPoison reports whether the session's unacknowledged messages are to be
// dropped before the next connection, and says so: the connections before
// ended while they were outstanding, poisonedConnections times in a row.
func (l *Listener) dropPoison() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.poisoned < poisonedConnections {
		return false
	}
	n := l.unackedLocked()
	l.poisoned = 0
	l.drops++
	l.log.Warn("mqtt: the broker closed the connection each time while messages were unacknowledged; dropping them, as it would close every connection they are sent on",
		"messages", n, "connections", poisonedConnections,
		"hint", "a message the broker will not take: check the IoT policy (iot:Publish on the event topic) and the broker's log")
	return true
}

// flapsHint is how many short connections in a row make the reconnect line
// carry a hint at their usual causes.
const flapsHint = 3

// serverDisconnect logs a DISCONNECT from the broker with the hint that
// fits its reason code, and the server it names instead, if any.
func (l *Listener) serverDisconnect(d *paho.Disconnect) {
	ref := ""
	if d.Properties != nil {
		ref = d.Properties.ServerReference
	}
	attrs := []any{"reason", reasonReferring(d.ReasonCode, ref)}
	if d.Properties != nil && d.Properties.ReasonString != "" {
		attrs = append(attrs, "reason_string", d.Properties.ReasonString)
	}
	hint := ""
	switch d.ReasonCode {
	case 0x8E:
		hint = "another client connected with client id " + quoteShort(l.cfg.ClientID) + "; each device needs its own"
	case 0x87:
		hint = "an operation was not authorized; " + subscribePolicyHint(l.cfg.ThingName, l.cfg.ClientID, l.topic) +
			"; publishing events needs iot:Publish on topic/<event topic>"
	}
	if hint != "" {
		attrs = append(attrs, "hint", hint)
	}
	l.log.Warn("mqtt broker closed the connection", attrs...)
}
