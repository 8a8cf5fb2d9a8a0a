package notify

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// standInV5 is a stand-in MQTT v5 broker: serve runs each connection, its
// CONNECT read, with the connection's index from 0.
func standInV5(t *testing.T, p *testPKI, serve func(i int, c net.Conn)) string {
	t.Helper()
	var conns atomic.Int32
	return standInBroker(t, p.MutualTLS(t, time.Time{}), func(c net.Conn) {
		defer c.Close()
		if cp, err := packets.ReadPacket(c); err != nil || cp.Type != packets.CONNECT {
			return
		}
		serve(int(conns.Add(1))-1, c)
	})
}

func writeConnack(c net.Conn, present bool, props *packets.Properties) {
	if props == nil {
		props = &packets.Properties{}
	}
	(&packets.Connack{SessionPresent: present, Properties: props}).WriteTo(c)
}

// ackSubscribes grants every SUBSCRIBE at QoS 1 and answers PINGREQ until the
// connection ends.
func ackSubscribes(c net.Conn) {
	for {
		cp, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		switch cp.Type {
		case packets.SUBSCRIBE:
			s := cp.Content.(*packets.Subscribe)
			(&packets.Suback{PacketID: s.PacketID, Reasons: []byte{1}, Properties: &packets.Properties{}}).WriteTo(c)
		case packets.PINGREQ:
			packets.NewControlPacket(packets.PINGRESP).WriteTo(c)
		}
	}
}

// TestSessionNotKeptWarned: the agent relies on its persistent session to get
// a notification published while it is offline (doc.go). A broker that keeps
// the session for less than asked (a CONNACK Session Expiry Interval lower
// than the CONNECT's, 0 included: MQTT 5.0 §3.2.2.3.2; AWS IoT Core's account
// limit), or that lost the session by a reconnect (Session Present 0 after a
// connection that had it), loses such notifications: that was logged at INFO
// only, where a subscription granted at QoS 0, which loses the same, is a WARN.
func TestSessionNotKeptWarned(t *testing.T) {
	u32 := func(v uint32) *uint32 { return &v }
	for _, tc := range []struct {
		name     string
		props    *packets.Properties // of every CONNACK
		present  []bool              // Session Present of connections 0, 1, 2
		want     string              // in each WARN
		warnings int
	}{
		{"expiry 0", &packets.Properties{SessionExpiryInterval: u32(0)}, []bool{false, false, false}, "offline for longer", 1},
		{"expiry lower", &packets.Properties{SessionExpiryInterval: u32(60)}, []bool{false, true, true}, "offline for longer", 1},
		{"expiry as asked", &packets.Properties{SessionExpiryInterval: u32(600)}, []bool{false, true, true}, "offline", 0},
		{"session lost", nil, []bool{false, false, true}, "may be lost", 1},
		{"session lost twice", nil, []bool{true, false, false}, "may be lost", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t)
			addr := standInV5(t, p, func(i int, c net.Conn) {
				writeConnack(c, i < len(tc.present) && tc.present[i], tc.props)
				if i < 2 {
					time.Sleep(100 * time.Millisecond)
					return // the connection is lost
				}
				ackSubscribes(c)
			})
			log, rec := newLogRecorder(t)
			runListener(t, newListener(t, testConfig(t, p, addr, "thing-a", log)))
			rec.waitFor("notify subscription granted")
			if n := rec.count("level=WARN", tc.want); n != tc.warnings {
				t.Errorf("%d WARN lines with %q, want %d", n, tc.want, tc.warnings)
			}
			if n := rec.count("level=WARN", "session"); n != tc.warnings {
				t.Errorf("%d WARN lines about the session, want %d", n, tc.warnings)
			}
		})
	}
}

// TestServerReferenceLogged: a broker that sends the agent to another server
// (reason 0x9C use another server, 0x9D server moved) names it in a Server
// Reference (MQTT 5.0 §3.2.2.3.17, §3.14.2.2.5), in a CONNACK or a DISCONNECT:
// the log line did not say where to. Its reason says, clipped: the broker
// chooses the length.
func TestServerReferenceLogged(t *testing.T) {
	long := "mqtt-2.example.net:8883" + strings.Repeat("x", 1000)
	for _, tc := range []struct {
		name string
		line string // the log line of the refusal
		send func(c net.Conn, ref string)
	}{
		{"CONNACK 0x9D", "mqtt connect failed", func(c net.Conn, ref string) {
			(&packets.Connack{ReasonCode: 0x9D, Properties: &packets.Properties{ServerReference: ref}}).WriteTo(c)
		}},
		{"DISCONNECT 0x9C", "mqtt broker closed the connection", func(c net.Conn, ref string) {
			writeConnack(c, false, nil)
			time.Sleep(100 * time.Millisecond)
			(&packets.Disconnect{ReasonCode: 0x9C, Properties: &packets.Properties{ServerReference: ref}}).WriteTo(c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t)
			addr := standInV5(t, p, func(i int, c net.Conn) { tc.send(c, long) })
			log, rec := newLogRecorder(t)
			runListener(t, newListener(t, testConfig(t, p, addr, "thing-a", log)))
			line := rec.waitFor(tc.line)
			if !strings.Contains(line, "server reference mqtt-2.example.net:8883") || len(line) > 800 {
				t.Errorf("a %s with a Server Reference of %d bytes is logged as:\n%s\nwant it, clipped", tc.name, len(long), line)
			}
		})
	}
}

// closeCounter is a dialled connection that counts, in closes, the first Close
// of each.
type closeCounter struct {
	net.Conn
	once   sync.Once
	closes *atomic.Int32
}

func (c *closeCounter) Close() error {
	c.once.Do(func() { c.closes.Add(1) })
	return c.Conn.Close()
}

// A TLS handshake that fails (a broker's port that answers in plain text, a
// middlebox, a certificate refused) leaves the TCP connection to dialTLS to
// close: crypto/tls does not. Left open, each attempt kept a descriptor, and a
// device retrying for days against such an endpoint ran out of them.
func TestFailedHandshakeClosesTheConnection(t *testing.T) {
	p := newPKI(t)
	addr := standInBroker(t, nil, func(c net.Conn) {
		defer c.Close()
		c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		io.Copy(io.Discard, c) // until the agent closes it
	})
	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, addr, "thing-a", log))
	var dials, closes atomic.Int32
	var d net.Dialer
	l.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		dials.Add(1)
		return &closeCounter{Conn: c, closes: &closes}, nil
	}
	runListener(t, l)
	// dialTLS closes the connection before connectError logs the failure.
	rec.waitCount(3, "mqtt connect failed; retrying", "TLS handshake")
	if c := closes.Load(); c < 3 {
		t.Errorf("%d of %d connections closed after 3 failed TLS handshakes, want at least 3", c, dials.Load())
	}
}

// A connection that ends before its SUBACK (a broker that drops a client for a
// subscription it may not make, as AWS IoT Core does under MQTT 3.1.1) ends the
// subscription's goroutine with it: connectionDown cancels the connection's
// context. Left running, it retried on the dead client for as long as Run went
// on, one more goroutine and one more stream of warnings per such connection.
func TestSubscriptionEndsWithItsConnection(t *testing.T) {
	p := newPKI(t)
	addr := standInV5(t, p, func(i int, c net.Conn) {
		writeConnack(c, i > 0, nil)
		if i > 0 {
			ackSubscribes(c)
			return
		}
		for { // the first connection is closed at its SUBSCRIBE, unanswered
			cp, err := packets.ReadPacket(c)
			if err != nil || cp.Type == packets.SUBSCRIBE {
				return
			}
		}
	})
	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, addr, "thing-a", log))
	runListener(t, l)
	rec.waitFor("notify subscription granted")
	if n := rec.count("mqtt connected"); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	// The second connection's subscription is granted and its goroutine done:
	// none should be left.
	done := make(chan struct{})
	go func() {
		l.subWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatalf("a subscription goroutine still runs %v after the second connection's subscription was granted: the first connection's, on its dead client", waitTimeout)
	}
}

// The reconnect after a lasting connection waits a random time from 0 to
// ConnectRetryMin (full jitter below the floor; TestFleetReconnectIsJittered),
// and maintain is where that attempt is counted: with the rand seam at 0 it
// comes at once, where a count one too high waited the whole floor, here an
// hour.
func TestReconnectAfterALastingConnectionIsJitteredFromZero(t *testing.T) {
	p := newPKI(t)
	cut := make(chan struct{})
	addr := standInV5(t, p, func(i int, c net.Conn) {
		writeConnack(c, i > 0, nil)
		if i == 0 {
			go func() {
				<-cut
				c.Close()
			}()
		}
		ackSubscribes(c)
	})
	log, rec := newLogRecorder(t)
	cfg := testConfig(t, p, addr, "thing-a", log)
	cfg.ConnectRetryMin, cfg.ConnectRetryMax = time.Hour, 2*time.Hour
	l := newListener(t, cfg)
	l.backoff.rand = func(int64) int64 { return 0 }
	var ahead atomic.Int64 // how far the listener's clock is ahead of the real one
	l.now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	runListener(t, l)
	rec.waitFor("notify subscription granted")
	ahead.Store(int64(stableConnection)) // the connection has lasted
	close(cut)
	rec.waitFor("mqtt reconnecting", "short_connections=0")
	rec.waitCount(2, "mqtt connected")
}
