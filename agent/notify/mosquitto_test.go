package notify

// Tier 2: the listener against a real Mosquitto (Debian's mosquitto 2.0,
// /usr/sbin/mosquitto) with mutual TLS, use_identity_as_username and an ACL
// that confines each certificate to its own thing's topics, as AWS IoT
// policies do. `make test` installs mosquitto (tools/deps.sh).

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// mosquitto is the shared test broker (mqtttest), with the names these tests use.
type mosquitto struct {
	*mqtttest.Broker
	pki  *testPKI
	addr string
}

// startMosquitto starts a broker on a free loopback port; it is stopped when the
// test ends.
func startMosquitto(t testing.TB) *mosquitto {
	t.Helper()
	b := mqtttest.StartMosquitto(t)
	return &mosquitto{Broker: b, pki: b.PKI, addr: b.Addr}
}

// restart stops and starts the broker on the same port; with forget the broker
// has lost every session and subscription.
func (m *mosquitto) restart(forget bool) { m.Restart(forget) }

// publisher connects as the identity that may publish on every thing's topics.
func (m *mosquitto) publisher(t testing.TB, clientID string) *testClient {
	return dialTestClient(t, m.addr, clientTLS(t, m.pki, mqtttest.PublisherCN), clientID)
}

// listenOn runs a listener for thing-a on m until the test ends, connected
// when it returns.
func listenOn(t *testing.T, m *mosquitto) (*logRecorder, *notificationSink, *Listener) {
	t.Helper()
	log, rec := newLogRecorder(t)
	sink := newSink(t)
	cfg := testConfig(t, m.pki, m.addr, "thing-a", log)
	cfg.OnNotification = sink.callback
	l := newListener(t, cfg)
	runListener(t, l)
	awaitConnection(t, l)
	return rec, sink, l
}

func TestMosquittoNotifications(t *testing.T) {
	m := startMosquitto(t)
	rec, sink, l := listenOn(t, m)
	pub := m.publisher(t, "publisher-1")
	topic := Topic("thing-a")
	defer rec.assertNoSecret(testToken[:20])

	t.Run("delivered and parsed", func(t *testing.T) {
		pub.publish(topic, notifyPayload(testToken+"1", "SSH", "VNC"))
		n := sink.next()
		want := Notification{ClientAccessToken: testToken + "1", ClientMode: "destination", Region: "us-east-1", Services: []string{"SSH", "VNC"}}
		if n.ClientAccessToken != want.ClientAccessToken || n.Region != want.Region || strings.Join(n.Services, ",") != "SSH,VNC" {
			t.Fatalf("got %#v, want %#v", n, want)
		}
		rec.waitFor("tunnel notification", n.TokenFingerprint())
	})

	t.Run("bad payloads rejected", func(t *testing.T) {
		bad := [][]byte{
			[]byte(`{"clientAccessToken":"` + testToken + `2","clientMode":"source","region":"us-east-1","services":["SSH"]}`),
			[]byte(`{"clientAccessToken":"` + testToken + `3","clientMode":"destination","region":"us-east-1","services":[]}`),
			[]byte(`not json ` + testToken),
			[]byte(strings.Repeat("x", MaxPayloadSize+1)),
		}
		for _, p := range bad {
			pub.publish(topic, p)
		}
		rec.waitCount(len(bad), "notification rejected")
		for _, want := range []string{`clientMode is \"source\"`, "services has 0 entries", "payload is not valid JSON", "over the 16384-byte limit"} {
			if rec.count("notification rejected", want) != 1 {
				t.Errorf("no rejection log line with %q", want)
			}
		}
		// A good one after the bad ones proves the callback saw none of them.
		pub.publish(topic, notifyPayload(testToken+"4"))
		if n := sink.next(); n.ClientAccessToken != testToken+"4" {
			t.Fatalf("got %v, want the notification sent after the bad payloads", n)
		}
	})

	t.Run("duplicate ignored", func(t *testing.T) {
		dup := notifyPayload(testToken + "5")
		pub.publish(topic, dup)
		pub.publish(topic, dup)
		pub.publish(topic, notifyPayload(testToken+"6"))
		if n := sink.next(); n.ClientAccessToken != testToken+"5" {
			t.Fatalf("got %v, want token 5", n)
		}
		if n := sink.next(); n.ClientAccessToken != testToken+"6" {
			t.Fatalf("got %v, want token 6 (the duplicate of 5 must be ignored)", n)
		}
		rec.waitFor("duplicate notification ignored")
	})

	t.Run("publish", func(t *testing.T) {
		events := Topic("thing-a")[:len("$aws/things/thing-a/")] + "events"
		sub := m.publisher(t, "events-reader")
		sub.subscribe(events)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := l.Publish(ctx, events, []byte(`{"event":"tunnel connected"}`)); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		select {
		case p := <-sub.got:
			if p.Topic != events || string(p.Payload) != `{"event":"tunnel connected"}` || p.QoS != 1 {
				t.Fatalf("reader got %s %q QoS %d", p.Topic, p.Payload, p.QoS)
			}
		case <-time.After(waitTimeout):
			t.Fatal("event not received by the second client")
		}
		// A context that has ended: an error, not a wait.
		done, cancelDone := context.WithCancel(context.Background())
		cancelDone()
		if err := l.Publish(done, events, []byte(`{}`)); !errors.Is(err, context.Canceled) {
			t.Errorf("Publish with an ended context = %v, want context.Canceled", err)
		}
		// The ACL confines thing-a to its own topics: a refused PUBACK.
		err := l.Publish(ctx, "$aws/things/thing-b/events", []byte(`{}`))
		if err == nil || !strings.Contains(err.Error(), "0x87 (not authorized)") || !strings.Contains(err.Error(), "iot:Publish") {
			t.Fatalf("Publish to another thing's topic = %v, want a 0x87 refusal with a policy hint", err)
		}
	})

	sink.none(100 * time.Millisecond)
}

func TestMosquittoPersistentSession(t *testing.T) {
	m := startMosquitto(t)
	log, rec := newLogRecorder(t)
	sink := newSink(t)
	cfg := testConfig(t, m.pki, m.addr, "thing-a", log)
	cfg.OnNotification = sink.callback

	l := newListener(t, cfg)
	stop := runListener(t, l)
	awaitConnection(t, l)
	stop() // a clean DISCONNECT; the session stays for SessionExpiry

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := l.Publish(ctx, "$aws/things/thing-a/events", nil); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Publish while stopped = %v, want ErrNotConnected", err)
	}

	// Published while the device is offline: the broker queues it (QoS 1).
	m.publisher(t, "publisher-offline").publish(Topic("thing-a"), notifyPayload(testToken+"offline"))

	// The device restarts: a new process, the same client id.
	l2 := newListener(t, cfg)
	runListener(t, l2)
	n := sink.next()
	if n.ClientAccessToken != testToken+"offline" {
		t.Fatalf("got %v, want the notification published while offline", n)
	}
	rec.waitFor("mqtt connected", "session_present=true")
	rec.assertNoSecret(testToken[:20])
}

func TestMosquittoRestart(t *testing.T) {
	m := startMosquitto(t)
	log, rec := newLogRecorder(t)
	sink := newSink(t)
	cfg := testConfig(t, m.pki, m.addr, "thing-a", log)
	cfg.OnNotification = sink.callback
	l := newListener(t, cfg)
	runListener(t, l)
	awaitConnection(t, l)

	m.restart(false)

	// The listener notices, reconnects with backoff and subscribes again.
	rec.waitFor("mqtt connected", "session_present=true")
	rec.waitCount(2, "notify subscription granted")
	awaitConnection(t, l)
	m.publisher(t, "publisher-after-restart").publish(Topic("thing-a"), notifyPayload(testToken+"after"))
	if n := sink.next(); n.ClientAccessToken != testToken+"after" {
		t.Fatalf("got %v, want the notification sent after the restart", n)
	}

	// A broker that lost its state: only the resubscription on connection
	// up makes notifications flow again.
	m.restart(true)
	rec.waitCount(2, "mqtt connected", "session_present=false")
	rec.waitCount(3, "notify subscription granted")
	awaitConnection(t, l)
	m.publisher(t, "publisher-after-loss").publish(Topic("thing-a"), notifyPayload(testToken+"after-loss"))
	if n := sink.next(); n.ClientAccessToken != testToken+"after-loss" {
		t.Fatalf("got %v, want the notification sent after the broker lost its sessions", n)
	}
}

func TestMosquittoACL(t *testing.T) {
	m := startMosquitto(t)
	log, _ := newLogRecorder(t)

	// thing-a's own listener, one that uses thing-a's certificate to listen
	// on thing-b's topic, and thing-b's own listener.
	sinkA, sinkSpy, sinkB := newSink(t), newSink(t), newSink(t)
	cfgA := testConfig(t, m.pki, m.addr, "thing-a", log)
	cfgA.OnNotification = sinkA.callback
	cfgSpy := testConfig(t, m.pki, m.addr, "thing-b", log)
	cfgSpy.CertFile, cfgSpy.KeyFile = m.pki.Client(t, "thing-a")
	cfgSpy.ClientID = "thing-a-spy"
	cfgSpy.OnNotification = sinkSpy.callback
	cfgB := testConfig(t, m.pki, m.addr, "thing-b", log)
	cfgB.OnNotification = sinkB.callback
	for _, cfg := range []Config{cfgA, cfgSpy, cfgB} {
		l := newListener(t, cfg)
		runListener(t, l)
		// Mosquitto grants the spy's subscription and filters at delivery
		// (PLATFORM.md), so non-delivery is what must be checked.
		awaitConnection(t, l)
	}

	m.publisher(t, "publisher-acl").publish(Topic("thing-b"), notifyPayload(testToken+"for-b"))
	if n := sinkB.next(); n.ClientAccessToken != testToken+"for-b" {
		t.Fatalf("thing-b got %v", n)
	}
	sinkA.none(300 * time.Millisecond)
	sinkSpy.none(0)
}

// runCuttable runs a listener for cfg whose connections a test can cut (the
// returned dialer) and waits until it is connected.
func runCuttable(t *testing.T, cfg Config) (*Listener, *cuttableDialer) {
	t.Helper()
	l := newListener(t, cfg)
	d := &cuttableDialer{}
	l.dial = d.dial
	runListener(t, l)
	awaitConnection(t, l)
	return l, d
}

// cuttableDialer is the listener's dial seam: cut closes the TCP
// connections it made, as a lost uplink does, and holds new ones back
// until released; stall makes them half-open (writes succeed and are lost,
// nothing arrives) until the next cut.
type cuttableDialer struct {
	mu      sync.Mutex
	conns   []net.Conn
	hold    chan struct{} // non-nil: dials wait until it is closed
	stalled bool
}

// stallConn is a connection of a cuttableDialer, whose writes go nowhere while
// the dialer is stalled.
type stallConn struct {
	net.Conn
	d *cuttableDialer
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.d.mu.Lock()
	stalled := c.d.stalled
	c.d.mu.Unlock()
	if stalled {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (d *cuttableDialer) stall() { d.mu.Lock(); d.stalled = true; d.mu.Unlock() }

func (d *cuttableDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	hold := d.hold
	d.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
		return &stallConn{Conn: c, d: d}, nil
	}
	return c, err
}

// cut closes every connection and holds new dials until release.
func (d *cuttableDialer) cut() (release func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	hold := make(chan struct{})
	d.hold = hold
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns, d.stalled = nil, false
	return func() {
		d.mu.Lock()
		d.hold = nil
		d.mu.Unlock()
		close(hold)
	}
}

// TestMosquittoLinkLoss cuts the device's TCP connection: the listener
// notices, reports ErrNotConnected to Publish, reconnects with the same
// session and subscribes again, and the notification published while it
// was away arrives.
func TestMosquittoLinkLoss(t *testing.T) {
	m := startMosquitto(t)
	log, rec := newLogRecorder(t)
	sink := newSink(t)
	cfg := testConfig(t, m.pki, m.addr, "thing-a", log)
	cfg.OnNotification = sink.callback
	l, d := runCuttable(t, cfg)

	release := d.cut()
	rec.waitFor("mqtt connection lost")
	rec.waitFor("mqtt reconnecting", "short_connections=1")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := l.Publish(ctx, "$aws/things/thing-a/events", []byte(`{}`)); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Publish while the link is down = %v, want ErrNotConnected", err)
	}
	m.publisher(t, "publisher-link-loss").publish(Topic("thing-a"), notifyPayload(testToken+"while-cut"))
	release()

	if n := sink.next(); n.ClientAccessToken != testToken+"while-cut" {
		t.Fatalf("got %v, want the notification published while the link was cut", n)
	}
	rec.waitFor("mqtt connected", "session_present=true")
	rec.waitCount(2, "notify subscription granted")
	awaitConnection(t, l)
	if err := l.Publish(ctx, "$aws/things/thing-a/events", []byte(`{}`)); err != nil {
		t.Errorf("Publish after the reconnect: %v", err)
	}
	if n := rec.count("mqtt connected"); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	rec.assertNoSecret(testToken[:20])
}

// A retained message on the notify topic (a lab broker keeps one; AWS IoT does
// not retain there) is not a notification: it would reopen an old tunnel at
// every start. A message over maximumPacket is not sent to the device at all
// (the CONNECT's Maximum Packet Size), where paho would read it whole first.
func TestMosquittoRetainedAndOversizedNotDelivered(t *testing.T) {
	m := startMosquitto(t)
	pub := m.publisher(t, "publisher-retained")
	pub.publishRetained(Topic("thing-a"), notifyPayload(testToken+"stale"), true)

	rec, sink, _ := listenOn(t, m)
	rec.waitFor("retained notification ignored")

	pub.publish(Topic("thing-a"), []byte(`{"pad":"`+strings.Repeat("x", 2*maximumPacket)+`"}`))
	pub.publish(Topic("thing-a"), notifyPayload(testToken+"live"))
	if n := sink.next(); n.ClientAccessToken != testToken+"live" {
		t.Fatalf("got %v, want the live notification", n)
	}
	sink.none(100 * time.Millisecond)
	if n := rec.count("notification rejected"); n != 0 {
		t.Errorf("%d notifications rejected: the oversized message reached the device", n)
	}
}

// Two devices with one client id (a cloned image): Mosquitto closes the older
// connection without a DISCONNECT, so each sees only EOF; after three short
// connections in a row the reconnect line says what it may be.
func TestMosquittoDuplicateClientID(t *testing.T) {
	m := startMosquitto(t)
	log, rec := newLogRecorder(t)
	cfg := testConfig(t, m.pki, m.addr, "thing-a", log)
	cfg.ClientID = "cloned-1"
	runListener(t, newListener(t, cfg))
	runListener(t, newListener(t, cfg))
	rec.waitFor("level=WARN", "mqtt reconnecting", "short_connections=3", `another client may be connecting with client id \"cloned-1\"`)
	// A subscription cut short by the lost connection is not a refusal.
	if n := rec.count("notify subscription failed"); n != 0 {
		t.Errorf("%d subscriptions reported failed, want the lost connections only", n)
	}
}

// A device certificate the broker does not accept (from another CA; at AWS IoT
// Core also one not registered or not active). Under TLS 1.3 the broker checks it
// only after the client's handshake is done, so the refusal reaches the listener
// as the broker's alert or, as often, as a reset connection while it writes its
// CONNECT: every attempt must say what to check, not only those that happen to
// read the alert.
func TestUntrustedClientCertificateExplainedEveryTime(t *testing.T) {
	m := startMosquitto(t)
	other := newPKI(t)
	log, rec := newLogRecorder(t)
	cfg := testConfig(t, m.pki, m.addr, "thing-a", log)
	cfg.CertFile, cfg.KeyFile = other.Client(t, "thing-a")
	runListener(t, newListener(t, cfg))
	const attempts = 20
	rec.waitCount(attempts, "mqtt connect failed")
	for i := 1; i <= attempts; i++ {
		line := rec.waitCount(i, "mqtt connect failed")
		if !strings.Contains(line, "hint=") || !strings.Contains(line, cfg.CertFile) {
			t.Errorf("attempt %d gives no hint naming the certificate %s: %s", i, cfg.CertFile, line)
		}
	}
}

// A Publish that gave up waiting on a half-open link leaves its message in the
// session, which sends it again on the next connection, where the broker
// acknowledges it. The listener went on counting it as unacknowledged: the next
// short connection, with nothing outstanding, was taken for a second "poisoned"
// one, and the listener dropped the session's messages with a WARN that blamed
// the IoT policy (and a Publish waiting then got ErrRefused, its event dropped).
// A flapping cellular link, nothing the broker refused.
func TestAcknowledgedOrphanIsNotPoison(t *testing.T) {
	m := startMosquitto(t)
	got := m.Subscribe(t, "thing-a", "porthole/events/thing-a")
	// The link goes half-open; an event's Publish gives up waiting.
	l, d, rec, err := stalledPublish(t, m)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish on a stalled link = %v, want a timeout", err)
	}
	// The link is cut and comes back: the message is sent again and the broker
	// takes it.
	d.cut()()
	rec.waitCount(2, "mqtt connected")
	awaitConnection(t, l)
	select {
	case b := <-got:
		if !strings.Contains(string(b), `"A"`) {
			t.Fatalf("got %s", b)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the message was not sent again after the reconnect")
	}
	// Its PUBACK is in: nothing is outstanding.
	for deadline := time.Now().Add(waitTimeout); ; time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		n := l.unackedLocked()
		l.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still unacknowledged %v after the broker took the message", n, waitTimeout)
		}
	}

	// A second short connection, with nothing unacknowledged.
	d.cut()()
	rec.waitCount(3, "mqtt connected")
	awaitConnection(t, l)
	if n := rec.count("dropping them"); n != 0 {
		t.Errorf("the listener dropped the session's messages as poison, though the broker had acknowledged every one: %s",
			rec.waitFor("dropping them"))
	}
}

// A broker whose CONNACK says Maximum QoS 0 (Mosquitto's max_qos 0): paho
// refuses a QoS 1 PUBLISH locally with ErrInvalidArguments, neither ErrRefused
// nor ErrNotConnected, so the agent's event queue took it for a broker that is
// away and retried the same event every second for ever, its only trace a DEBUG
// line. The listener sends at QoS 0 there, and says once that events may be lost.
func TestPublishToQoS0BrokerIsSent(t *testing.T) {
	m := startMosquitto(t)
	m.Configure("max_qos 0")
	got := m.Subscribe(t, "thing-a", "porthole/events/thing-a")
	rec, _, l := listenOn(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Publish(ctx, "porthole/events/thing-a", []byte(`{"type":"A"}`)); err != nil {
		t.Fatalf("Publish to a broker that takes QoS 0 only = %v, want it sent at QoS 0", err)
	}
	select {
	case <-got:
	case <-time.After(waitTimeout):
		t.Fatal("the message published at QoS 0 did not arrive")
	}
	rec.waitFor("level=WARN", "QoS 0 only", "events are published at QoS 0")
}

// A message whose Publish gave up is the session's to deliver (ErrQueuedInSession:
// the event queue does not publish it again). When the broker has lost the session
// by the time the link is back, paho discards the message unsent: that is logged.
func TestQueuedMessageLostWithTheSessionIsLogged(t *testing.T) {
	m := startMosquitto(t)
	_, d, rec, err := stalledPublish(t, m)
	if !errors.Is(err, ErrQueuedInSession) {
		t.Fatalf("Publish on a stalled link = %v, want ErrQueuedInSession", err)
	}
	release := d.cut()
	m.restart(true) // the broker forgets every session
	release()
	rec.waitFor("mqtt connected", "session_present=false")
	rec.waitFor("level=WARN", "are lost", "no longer had the session", "messages=1")
}

// stalledPublish runs a listener of thing-a on m through a cuttableDialer,
// stalls the link once it is up (writes vanish, as on a half-open link) and
// publishes an event whose Publish gives up after 300 ms: its error.
func stalledPublish(t *testing.T, m *mosquitto) (*Listener, *cuttableDialer, *logRecorder, error) {
	t.Helper()
	log, rec := newLogRecorder(t)
	cfg := testConfig(t, m.pki, m.addr, "thing-a", log)
	cfg.KeepAlive = 60 * time.Second
	l, d := runCuttable(t, cfg)
	d.stall()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	return l, d, rec, l.Publish(ctx, "porthole/events/thing-a", []byte(`{"type":"A"}`))
}
