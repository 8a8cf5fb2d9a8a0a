package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"

	"github.com/porthole-iot/porthole/agent/internal/quiet"
)

// connackError is a connection the broker refused in its CONNACK (reason
// code ≥ 0x80, MQTT 5.0 §3.2.2.2).
type connackError struct {
	_      [0]func() // not comparable: no equality function in the binary (docs/size.md)
	code   byte
	reason string // the CONNACK's reason string, often empty
	ref    string // the CONNACK's Server Reference: the server to use instead (0x9C, 0x9D)
	err    error  // paho's error
}

func (e *connackError) Error() string {
	msg := "broker refused the connection, reason " + reasonText(e.code)
	if e.reason != "" {
		msg += ": " + e.reason
	}
	return msg
}

func (e *connackError) Unwrap() error { return e.err }

// receiveMaximum is how many QoS 1 notifications the broker may have in flight
// to the agent at once (MQTT 5.0 §3.1.2.11.3). Notifications are rare and
// handled at once; the default, 65535, made paho allocate a queue of that many
// entries per connection: 0.8 MiB of the agent's 1.5 MiB idle heap on amd64.
const receiveMaximum = 32

// maximumPacket is the largest packet the broker may send (MQTT 5.0
// §3.1.2.11.4): a notification is at most MaxPayloadSize, and the broker drops
// larger messages for this client rather than send them. paho reads a packet
// whole before anything can refuse it, so without it a 64 MiB publish on the
// notify topic of a lab broker cost a device 220 MiB.
const maximumPacket = 64 << 10

// connectPacket is the CONNECT of every connection: clean start false and
// a session expiry, so the broker keeps the subscription and queues QoS 1
// notifications while the device is offline (MQTT 5.0 §3.1.2.4, §3.1.2.11.2).
func (l *Listener) connectPacket() *paho.Connect {
	expiry := uint32(l.cfg.SessionExpiry / time.Second)
	recvMax := uint16(receiveMaximum)
	maxPacket := uint32(maximumPacket)
	return &paho.Connect{
		ClientID:   l.cfg.ClientID,
		KeepAlive:  uint16(l.cfg.KeepAlive / time.Second),
		CleanStart: false,
		// RequestProblemInfo: paho's zero value sends Request Problem
		// Information 0, which forbids the broker a reason string on a SUBACK
		// or PUBACK and lets it leave them out of a CONNACK or DISCONNECT
		// (MQTT 5.0 §3.1.2.11.7): the explanations logged here.
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &recvMax, MaximumPacketSize: &maxPacket,
			RequestProblemInfo: true},
	}
}

// dialTLS opens a TCP connection to the broker and completes the TLS
// handshake (client certificate, ServerName, ALPN) within ctx.
func (l *Listener) dialTLS(ctx context.Context) (*tls.Conn, error) {
	dial := l.dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	l.reloadTLS()
	addr := l.addr.hostPort()
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, l.tls)
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, wrapErr("TLS handshake with "+addr, err)
	}
	return conn, nil
}

// connect makes one connection attempt, bounded by Config.ConnectTimeout:
// TCP, TLS, then MQTT CONNECT and CONNACK on a new paho client that uses
// sess. The returned link's lost channel is closed when the connection
// fails or the broker ends it; ctx is Run's, for the client's callbacks.
func (l *Listener) connect(ctx context.Context, sess session.SessionManager) (*link, *paho.Connack, error) {
	// The attempt's deadline bounds the dial and the handshake only, not the
	// connection's life (paho's Connect keeps ctx for the CONNACK alone).
	attemptCtx, cancel := context.WithTimeout(ctx, l.cfg.ConnectTimeout)
	defer cancel()
	conn, err := l.dialTLS(attemptCtx)
	if err != nil {
		return nil, nil, err
	}
	lk := &link{conn: conn, lost: make(chan struct{})}
	head := &headConn{conn: conn}
	lk.cli = paho.NewClient(paho.ClientConfig{
		ClientID: l.cfg.ClientID,
		// tls.Conn is not safe for concurrent writes; paho writes from the
		// caller of Publish, its pinger and its receive loop.
		Conn:              packets.NewThreadSafeConn(head),
		Session:           sess,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){l.received},
		OnClientError: func(err error) {
			lk.end(func() {
				if ctx.Err() == nil {
					l.log.Warn("mqtt connection lost", "error", err)
				}
			})
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			if ctx.Err() == nil {
				l.serverDisconnect(d)
			}
			lk.end(nil)
		},
		PacketTimeout: l.cfg.OperationTimeout,
		// PingHandler stays nil: paho's default pinger, one per client,
		// sends PINGREQ at the keep-alive interval and ends the connection
		// when a PINGRESP does not come. No debug or error logger is set on
		// purpose: paho's debug output prints packets, payloads (tokens)
		// included.
	})
	ca, err := lk.cli.Connect(attemptCtx, l.connectPacket())
	if err != nil {
		// paho has closed the connection. The session may have taken it
		// before failing (resending stored packets); let it go.
		_ = sess.ConnectionLost(nil)
		if ca != nil && ca.ReasonCode >= 0x80 {
			ce := &connackError{code: ca.ReasonCode, err: err}
			if ca.Properties != nil {
				ce.reason = ca.Properties.ReasonString
				ce.ref = ca.Properties.ServerReference
			}
			return nil, nil, ce
		}
		if code, ok := head.connack311(); ok {
			return nil, nil, &noMQTT5Error{addr: l.addr.hostPort(), code: code}
		}
		if closedByPeer(err) {
			return nil, nil, &closedAtConnectError{addr: l.addr.hostPort(), err: err}
		}
		return nil, nil, wrapErr("MQTT CONNECT to "+l.addr.hostPort(), err)
	}
	return lk, ca, nil
}

// headConn keeps the first bytes the broker sends: a broker without MQTT 5
// answers the CONNECT with an MQTT 3.1.1 CONNACK, which paho, reading it as
// MQTT 5's, takes for a truncated packet. The connection is a named field and
// the methods are on the pointer: an embedded net.Conn would give the binary
// each method twice (docs/size.md).
type headConn struct {
	_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
	conn net.Conn
	mu   sync.Mutex // paho's reader may still run when Connect gives up
	head [4]byte
	n    int   // bytes of head filled
	werr error // a failed write's error, which closed conn

	// Where paho's reader is in the broker's packets: a packet over
	// maximumPacket is refused from its length, before paho, which grows its
	// buffer to the length first, allocates it (a broker that ignores the
	// CONNECT's maximum could announce 256 MiB). Only paho's reader uses them.
	body   int // bytes of the current packet's body still to come
	lenAt  int // 0: a type byte is next; else which length byte (1 to 4)
	length int // the remaining length read so far
}

// Write closes the connection when a write fails: tls.Conn keeps the error
// and fails every later write without a byte on the wire, while reads go on,
// and paho ignores a PUBLISH's write error, so the link stayed half dead
// (events and acknowledgements unsent, nothing logged) until the next
// PINGREQ, up to a keepalive later. Closed, paho's reader fails and the link
// is dialed again at once.
func (c *headConn) Write(p []byte) (int, error) {
	n, err := c.conn.Write(p)
	if err != nil {
		c.mu.Lock()
		c.werr = err // the reader's error, once closed: the cause, not "use of closed network connection"
		c.mu.Unlock()
		c.conn.Close()
	}
	return n, err
}

func (c *headConn) Close() error                       { return c.conn.Close() }
func (c *headConn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *headConn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *headConn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *headConn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *headConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

func (c *headConn) Read(p []byte) (int, error) {
	n, err := c.conn.Read(p)
	c.mu.Lock()
	if c.n < len(c.head) {
		c.n += copy(c.head[c.n:], p[:n])
	}
	if err != nil && c.werr != nil {
		err = c.werr
	}
	c.mu.Unlock()
	if ferr := c.follow(p[:n]); ferr != nil {
		return 0, ferr
	}
	return n, err
}

// follow moves through the packets in p, the broker's next bytes.
func (c *headConn) follow(p []byte) error {
	for len(p) > 0 {
		switch {
		case c.body > 0:
			k := min(c.body, len(p))
			c.body -= k
			p = p[k:]
		case c.lenAt == 0:
			c.lenAt, c.length = 1, 0
			p = p[1:]
		default:
			b := p[0]
			p = p[1:]
			c.length |= int(b&0x7f) << (7 * (c.lenAt - 1))
			// With another length byte to come, the length is at least
			// 128 to the power of the bytes so far: it is in the fewest
			// bytes (MQTT-1.5.5-1), so a longer one is refused too.
			if c.length > maximumPacket || b&0x80 != 0 && 1<<(7*c.lenAt) > maximumPacket {
				return errPacketTooBig
			}
			if b&0x80 != 0 {
				c.lenAt++
				continue
			}
			c.lenAt, c.body = 0, c.length
		}
	}
	return nil
}

var errPacketTooBig error = &errorString{"the broker sent a packet over the 64 KiB the agent's CONNECT allows (MQTT 5.0 §3.1.2.11.4)"}

// connack311 reports whether the broker's first packet was an MQTT 3.1.1
// CONNACK (type 2, remaining length 2; MQTT 5's has properties, at least 3),
// and its return code. MQTT 3.1.1 §3.1.2.2: a broker that does not support
// the protocol level asked for answers return code 1 and closes.
func (c *headConn) connack311() (byte, bool) {
	c.mu.Lock()
	code, ok := c.head[3], c.n == 4 && c.head[0] == 0x20 && c.head[1] == 2
	c.mu.Unlock()
	return code, ok
}

// noMQTT5Error is a broker that answered the CONNECT in MQTT 3.1.1.
type noMQTT5Error struct {
	_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
	addr string
	code byte
}

func (e *noMQTT5Error) Error() string {
	why := ""
	if e.code == 1 {
		why = ", unacceptable protocol version"
	}
	return fmt.Sprintf("MQTT CONNECT to %s: the broker answered in MQTT 3.1.1 (CONNACK return code %d%s): it does not support MQTT 5, "+
		"which the agent needs (AWS IoT Core, Mosquitto 1.6 or later and most current brokers have it)", e.addr, e.code, why)
}

// closedAtConnectError is a broker that closed or reset the connection after the
// TLS handshake instead of answering the CONNECT. Under TLS 1.3 the broker checks
// the client certificate only after the client has finished its handshake: a
// refused certificate then reads as the broker's alert, or, as often, as a reset
// connection (the alert discarded with the connection, or the CONNECT written
// after the broker closed it).
type closedAtConnectError struct {
	_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
	addr string
	err  error
}

func (e *closedAtConnectError) Error() string {
	return "MQTT CONNECT to " + e.addr + ": " + e.err.Error()
}
func (e *closedAtConnectError) Unwrap() error { return e.err }

// closedByPeer reports whether err is the peer closing or resetting the
// connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// ownCertOutOfDate says, when the clock is set (after this binary was built),
// that the device certificate has expired or is not valid yet; "" otherwise.
// A certificate running out while the agent runs, its files read long ago, is
// the usual case: a broker refusing it reads as its alert or as a closed
// connection.
func (l *Listener) ownCertOutOfDate() string {
	leaf := certLeaf(l.tls)
	if l.outOfDate(leaf) == "" {
		return ""
	}
	return "the device certificate " + l.cfg.CertFile + " is valid from " + utc(leaf.NotBefore) +
		" to " + utc(leaf.NotAfter) + ", not now: renew it (the agent reads the files again before its next connection)"
}

// connectError logs a failed connection attempt with the hint that fits.
func (l *Listener) connectError(err error) {
	msg, attrs := "mqtt connect failed; retrying", []any{"broker", l.addr.hostPort(), "error", err}
	// The hint that fits is the last attribute, appended in one place: each
	// append is about 240 bytes of code on mipsle (docs/size.md).
	hint := ""
	var ce *connackError
	switch {
	case errors.As(err, &ce):
		attrs = append(attrs, "reason", reasonReferring(ce.code, ce.ref))
		if ce.reason != "" {
			attrs = append(attrs, "reason_string", ce.reason)
		}
		switch ce.code {
		case 0x86, 0x87, 0x8A, 0x8C:
			hint = connectPolicyHint(l.cfg.ClientID)
		case 0x85:
			hint = "the broker does not accept client id " + quoteShort(l.cfg.ClientID)
		}
	case clockLooksWrong(err, l.clock(), buildTime()):
		// Not a certificate problem: a router without an RTC before NTP.
		msg = "mqtt connect failed; retrying: the system clock looks wrong, TLS cannot verify " +
			"certificates until it is set (NTP, RTC)"
		attrs = append(attrs, "clock", utc(l.clock()), "built", utc(buildTime()))
	case l.ownCertOutOfDate() != "" && !errors.As(err, new(*tls.CertificateVerificationError)) && !alpnRefused(err):
		// The broker refuses it, by an alert or by closing the connection:
		// that is why, whatever the error reads. Not when the agent's own
		// check of the broker's certificate failed (crypto/tls wraps each
		// such failure in a CertificateVerificationError): the handshake
		// stopped before the broker saw the device's, and a clock years
		// ahead puts both out of their dates. Nor when the server took none
		// of the ALPN protocols: that is said before certificates are.
		hint = l.ownCertOutOfDate()
	default:
		if hint = tlsHint(err, l.clock(), buildTime(), l.cfg); hint != "" {
			var inv x509.CertificateInvalidError
			if errors.As(err, &inv) && inv.Reason == x509.Expired && l.ownCertOutOfDate() != "" {
				hint += "; so is the device certificate " + l.cfg.CertFile + " by this clock: the clock may be wrong (set it: NTP, RTC)"
			}
		} else if errors.As(err, new(*closedAtConnectError)) {
			hint = "the broker closed the connection instead of answering the MQTT CONNECT: " +
				"it may not accept the device certificate " + l.cfg.CertFile + " (its issuer not trusted, or, at AWS IoT Core, " +
				"the certificate not registered, not active or not attached to the thing), or the client id: " +
				connectPolicyHint(l.cfg.ClientID)
		}
	}
	if hint != "" {
		attrs = append(attrs, "hint", hint)
	}
	// The same failure again is logged at debug level only, until
	// quiet.Every has passed: a device without its WAN retries every two
	// minutes for as long as it lasts.
	level, attrs := l.repeats.Level(slog.LevelWarn, msg+"\n"+quiet.Cause(err), l.clock(), attrs)
	l.log.Log(context.Background(), level, msg, attrs...)
}
