package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"

	"github.com/porthole-iot/porthole/agent/internal/quiet"
)

// errorString is the error of the package's sentinels, as errors.New's:
// `var ErrX error = &errorString{"..."}` is laid out in the binary's data by
// the compiler, where `errors.New("...")`, not inlined in a package built
// with -l (agent/cmd/porthole/device.gcflags), is code run at start.
type errorString struct{ s string }

func (e *errorString) Error() string { return e.s }

// wrapErr is fmt.Errorf(what+": %w", err): one call at each place that wraps
// an error with a prefix is less code than a fmt.Errorf at each (docs/size.md).
func wrapErr(what string, err error) error { return fmt.Errorf("%s: %w", what, err) }

var (
	// ErrNotConnected is returned by Publish while the listener has no
	// connection to the broker (not running, or between reconnects).
	ErrNotConnected error = &errorString{"notify: not connected to the broker"}
	// ErrRunning is returned by Run when the listener is already running.
	ErrRunning error = &errorString{"notify: listener is already running"}
)

// stableConnection is how long a connection must last to count as healthy:
// a connection the broker drops sooner (a duplicate client id, a policy
// violation) makes the next reconnect back off as if it had failed, instead
// of reconnecting at once in a tight loop.
const stableConnection = 30 * time.Second

// Topic returns the notify topic of a thing:
// $aws/things/<thing>/tunnels/notify.
func Topic(thing string) string { return "$aws/things/" + thing + "/tunnels/notify" }

// Listener is an MQTT v5 client that listens for tunnel notifications. Make
// one with [New], then call [Listener.Run]; it may be run again after Run
// returns (the broker keeps the session in between).
type Listener struct {
	cfg     Config
	addr    brokerAddr
	tls     *tls.Config // replaced by reloadTLS when the files change
	tlsSeen filesStamp  // the files' stamp when tls was made, or last failed to load
	tlsNext *tls.Config // read from the files but not used yet (reloadTLS); nil: none
	topic   string
	log     *slog.Logger
	backoff backoff
	dedupe  dedupe
	repeats quiet.Repeats    // the causes of failed connection attempts logged (maintain's)
	now     func() time.Time // nil means time.Now; a test seam
	// dial opens the TCP connection to the broker; nil means a net.Dialer.
	// A test seam (a connection the test can cut).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	subWG sync.WaitGroup // subscription goroutines of the current Run

	mu         sync.Mutex
	running    bool
	cli        *paho.Client       // non-nil while a connection is up
	connCancel context.CancelFunc // ends the current connection's subscriber
	ready      chan struct{}      // closed while connected and subscribed
	isReady    bool               // ready is closed
	upAt       time.Time          // when the current connection came up
	maxPacket  uint32             // the broker's Maximum Packet Size on this connection; 0: none stated
	qos        byte               // the QoS Publish sends at on this connection: 1, or 0 if the broker takes no more
	qos0Warned bool               // the WARN that events go at QoS 0 was logged
	expWarned  bool               // the WARN that the broker keeps the session for less than asked was logged
	hadSession bool               // a connection of this Run left the broker a session to keep
	flaps      int                // connections in a row that ended before stableConnection

	// sess is the session state of the current Run (nil: not running): what
	// it holds unacknowledged is dropped when the broker answers it by closing
	// the connection (see dropPoison).
	sess     *sessionState
	poisoned int    // short connections in a row that ended with messages unacknowledged
	drops    uint64 // how many times the unacknowledged messages were dropped
}

// New validates cfg, reads its certificate files and returns a Listener.
// Errors are *[ConfigError] naming the field.
func New(cfg Config) (*Listener, error) {
	c := cfg
	addr, err := c.setDefaults()
	if err != nil {
		return nil, err
	}
	stamp := stampFiles(c.CAFile, c.CertFile, c.KeyFile)
	tc, err := newTLSConfig(c)
	if err != nil {
		return nil, err
	}
	l := &Listener{
		cfg:     c,
		addr:    addr,
		tls:     tc,
		tlsSeen: stamp,
		topic:   Topic(c.ThingName),
		log:     c.Logger.With("thing", c.ThingName),
		backoff: backoff{min: c.ConnectRetryMin, max: c.ConnectRetryMax},
		ready:   make(chan struct{}),
	}
	if leaf := certLeaf(tc); leaf != nil {
		l.log.Debug("client certificate", "file", c.CertFile, "subject", leaf.Subject.String(),
			"not_after", utc(leaf.NotAfter))
	}
	return l, nil
}

// Topic returns the topic the listener subscribes to.
func (l *Listener) Topic() string { return l.topic }

func (l *Listener) clock() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}

// Run connects to the broker, subscribes to the notify topic on every
// connection, reconnects with jittered backoff whenever the connection is
// lost, and hands notifications to Config.OnNotification. It returns
// ctx.Err() once ctx ends and every goroutine it started has finished, after
// a clean MQTT DISCONNECT that keeps the session (and the subscription) on
// the broker for Config.SessionExpiry. Run never gives up on its own: a
// broker that is down, refuses the certificate or refuses the subscription
// is logged and retried.
func (l *Listener) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return ErrRunning
	}
	l.running = true
	l.flaps = 0
	l.hadSession = false
	l.mu.Unlock()

	l.log.Info("mqtt connecting", "broker", l.addr.hostPort(), "client_id", l.cfg.ClientID,
		"topic", l.topic, "alpn", strings.Join(l.cfg.ALPN, ","))
	// One session state for every connection of this Run, as the broker
	// keeps one: a QoS 1 PUBLISH whose PUBACK was lost with a connection is
	// resent on the next one with its packet identifier (MQTT 5.0 §4.4),
	// and a Publish still waiting gets the PUBACK.
	sess := l.maintain(ctx)
	l.subWG.Wait()
	l.stopped()
	// Answers a Publish still waiting for a PUBACK; a message whose Publish
	// gave up is lost (the next Run has a new session state).
	sess.drop("the listener stopped first")
	l.log.Info("mqtt stopped")
	return ctx.Err()
}

// stopped resets the connection state after a Run.
func (l *Listener) stopped() {
	l.mu.Lock()
	l.running = false
	l.cli = nil
	l.sess = nil
	if l.connCancel != nil {
		l.connCancel()
		l.connCancel = nil
	}
	if l.isReady {
		l.ready = make(chan struct{})
		l.isReady = false
	}
	l.mu.Unlock()
}

// AwaitConnection blocks until the listener is connected and its notify
// subscription is granted (a notification published after it returns will
// be delivered), or ctx ends.
func (l *Listener) AwaitConnection(ctx context.Context) error {
	l.mu.Lock()
	ch := l.ready
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrRefused marks a publish the broker answered with a failure reason code
// (PUBACK 0x80 or above, e.g. 0x87 not authorized), one over the broker's
// Maximum Packet Size (not sent), and one dropped after the broker closed
// every connection it was sent on (dropPoison): sending the same message
// again gets the same answer. A throttled publish (0x96 message rate too
// high, 0x97 quota exceeded) is not refused: the same message is taken a
// moment later.
var ErrRefused error = &errorString{"refused by the broker"}

// ErrQueuedInSession marks a Publish that gave up waiting for the PUBACK (its
// context ended, or Config.OperationTimeout passed) after its message was
// stored in the MQTT session: the listener sends it again on every connection
// until the broker acknowledges it (MQTT 5.0 §4.4), so publishing it again
// would deliver it twice, under another packet identifier. The error wraps the
// context's error too. The message is lost, with a WARN, if the session is:
// the broker no longer has it when the listener reconnects, the broker closes
// every connection it is sent on (see dropPoison), or Run returns first.
var ErrQueuedInSession error = &errorString{"notify: left in the MQTT session, to be sent again on the next connection"}

// Publish sends payload to topic at QoS 1 on the listener's connection and
// waits for the PUBACK, for the agent's status and audit events; at QoS 0,
// without a PUBACK, to a broker whose CONNACK says Maximum QoS 0. It returns
// an error wrapping ErrNotConnected at once when there is no connection,
// instead of queueing, and gives up when ctx ends or after
// Config.OperationTimeout: with an error wrapping ErrQueuedInSession if the
// message was stored in the session by then, which delivers it later. A
// message the broker refuses (PUBACK reason ≥ 0x80) is an error naming the
// reason.
func (l *Listener) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := CheckTopicName(topic); err != nil {
		return fmt.Errorf("notify: publish: %s is not a topic name: it %v", quoteShort(topic), err)
	}
	if err := ctx.Err(); err != nil {
		// Checked here: paho sends first and may then pick either the
		// PUBACK or the ended context.
		return wrapErr("notify: publishing to "+topic, err)
	}
	l.mu.Lock()
	cli, sess, qos, maxPacket, drops := l.cli, l.sess, l.qos, l.maxPacket, l.drops
	size := publishPacketSize(topic, payload, qos)
	// A client must not send a larger packet (MQTT-3.1.2-24): the broker
	// closes the connection, and the session would send the PUBLISH again on
	// every reconnect, ending each connection as it comes up.
	fits := maxPacket == 0 || uint64(size) <= uint64(maxPacket) // not int(maxPacket): negative from 2^31 on 32-bit devices
	l.mu.Unlock()
	switch {
	case cli == nil:
		return fmt.Errorf("%w: cannot publish to %s", ErrNotConnected, topic)
	case !fits:
		return fmt.Errorf("notify: publishing to %s: %w: a message of %d bytes is over the broker's maximum packet size (%d bytes)",
			topic, ErrRefused, size, maxPacket)
	}
	var rec stored // set by the session if it stores the message
	resp, err := cli.Publish(context.WithValue(ctx, storedKey{}, &rec), &paho.Publish{QoS: qos, Topic: topic, Payload: payload})
	l.mu.Lock()
	dropped := l.drops != drops
	l.mu.Unlock()
	gaveUp := err != nil && resp == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled))
	switch {
	case gaveUp && rec.ok && !dropped && sess.abandon(&rec):
		return fmt.Errorf("notify: publishing to %s: %w (%w)", topic, ErrQueuedInSession, err)
	case gaveUp && rec.ok && !dropped:
		return wrapErr("notify: publishing to "+topic+": the MQTT session discarded it unacknowledged (the broker no longer had the session)", err)
	case dropped && err != nil:
		return fmt.Errorf("notify: publishing to %s: %w: the broker closed the connection each time it was sent, so it was dropped (%v)", topic, ErrRefused, err)
	case errors.Is(err, session.ErrNoConnection): // the connection went meanwhile
		return fmt.Errorf("%w: cannot publish to %s", ErrNotConnected, topic)
	case resp != nil && resp.ReasonCode >= 0x80:
		detail := reasonText(resp.ReasonCode)
		if resp.Properties != nil && resp.Properties.ReasonString != "" {
			detail += ": " + resp.Properties.ReasonString
		}
		if resp.ReasonCode == 0x87 {
			detail += "; " + publishPolicyHint(topic)
		}
		if resp.ReasonCode == 0x96 || resp.ReasonCode == 0x97 {
			// Quota exceeded, message rate too high: the broker throttles this
			// client (AWS IoT Core's publish limits), and takes the same message
			// a moment later. Not ErrRefused, which has it dropped.
			return errors.New("notify: publishing to " + topic + ": throttled by the broker, reason " + detail)
		}
		return fmt.Errorf("notify: publishing to %s: %w, reason %s", topic, ErrRefused, detail)
	case err != nil:
		return wrapErr("notify: publishing to "+topic, err)
	}
	return nil
}

// received is the paho OnPublishReceived handler. It runs on the client's
// receive goroutine; the PUBACK goes out after it returns.
func (l *Listener) received(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	if p.Topic != l.topic {
		l.log.Debug("mqtt message on another topic ignored", "topic", p.Topic, "bytes", len(p.Payload))
		return false, nil
	}
	if p.Retain {
		// A message the broker kept and hands to every new subscription: AWS IoT
		// does not retain on the reserved topics, but a lab broker may hold an
		// old notification, which would reopen a closed tunnel at each start.
		l.log.Info("retained notification ignored (a live one is never retained)", "bytes", len(p.Payload))
		return true, nil
	}
	if l.dedupe.seen(p.Payload) {
		l.log.Info("duplicate notification ignored", "bytes", len(p.Payload), "redelivery", p.Duplicate())
		return true, nil
	}
	n, err := ParseNotification(p.Payload)
	if err != nil {
		l.log.Warn("notification rejected", "topic", p.Topic, "bytes", len(p.Payload), "error", err)
		if l.cfg.OnRejected != nil {
			l.cfg.OnRejected(err)
		}
		return true, nil
	}
	l.log.Info("tunnel notification", "notification", n)
	if l.cfg.OnNotification != nil {
		l.cfg.OnNotification(n)
	}
	return true, nil
}

// publishPacketSize is the size on the wire of the PUBLISH that Publish sends:
// fixed header, topic, packet identifier (QoS 1 only), an empty property list
// and the payload (MQTT 5.0 §3.3).
func publishPacketSize(topic string, payload []byte, qos byte) int {
	remaining := 2 + len(topic) + 1 + len(payload)
	if qos > 0 {
		remaining += 2
	}
	vbi := 1
	for n := remaining; n >= 128; n /= 128 {
		vbi++
	}
	return 1 + vbi + remaining
}
