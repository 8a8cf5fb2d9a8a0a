package notify

// A refused subscription, against an in-process mochi-mqtt broker whose ACL
// hook refuses the first subscriptions to the notify topic, the way AWS IoT
// Core answers SUBACK 0x87 when the policy lacks iot:Subscribe.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/porthole-iot/porthole/agent/internal/quiet"
	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// connectedOnMochi runs a listener of thing-a connected to a mochi broker with
// hook, and the recorder of its log.
func connectedOnMochi(t *testing.T, hook mqtt.Hook) (*Listener, *logRecorder) {
	p := newPKI(t)
	_, addr := startMochi(t, p, hook)
	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, addr, "thing-a", log))
	runListener(t, l)
	awaitConnection(t, l)
	return l, rec
}

// startMochi runs a mochi broker with mutual TLS on a free loopback port.
func startMochi(t *testing.T, p *testPKI, hook mqtt.Hook) (*mqtt.Server, string) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0", TLSConfig: p.MutualTLS(t, time.Time{})})
	if err := srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, ln.Address()
}

func TestSubscriptionRefusedIsReportedAndRetried(t *testing.T) {
	p := newPKI(t)
	hook := &mqtttest.RefuseSubscribe{Topic: Topic("thing-a"), Refusals: 2}
	srv, addr := startMochi(t, p, hook)

	log, rec := newLogRecorder(t)
	sink := newSink(t)
	var mu sync.Mutex
	var reported []error
	cfg := testConfig(t, p, addr, "thing-a", log)
	cfg.OnNotification = sink.callback
	cfg.OnSubscribeError = func(err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}
	l := newListener(t, cfg)
	runListener(t, l)

	// Refused twice, then granted on the third attempt of the same connection.
	awaitConnection(t, l)
	line := rec.waitFor("notify subscription failed", "attempt=1")
	for _, want := range []string{
		"level=ERROR",
		"0x87 (not authorized)",
		"iot:Subscribe",
		"topicfilter/$aws/things/thing-a/tunnels/notify",
		"iot:Receive",
		"topic/$aws/things/thing-a/tunnels/notify",
		"retry_in=",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("refusal log line lacks %q: %s", want, line)
		}
	}
	rec.waitFor("notify subscription failed", "attempt=2")
	rec.waitFor("notify subscription granted", "attempts=3")
	if got := hook.Refused(); got != 2 {
		t.Errorf("broker refused %d subscriptions, want 2", got)
	}
	if n := rec.count("mqtt connected"); n != 1 {
		t.Errorf("%d connections, want the retries on one connection", n)
	}

	mu.Lock()
	if len(reported) != 1 {
		t.Errorf("OnSubscribeError called %d times for two refusals on one connection, want 1", len(reported))
	}
	for _, err := range reported {
		var se *SubscribeError
		if !errors.As(err, &se) || se.Reason != 0x87 || se.Topic != Topic("thing-a") {
			t.Errorf("OnSubscribeError(%v), want a *SubscribeError with reason 0x87", err)
		}
	}
	mu.Unlock()

	// Once granted, notifications flow.
	if err := srv.Publish(Topic("thing-a"), notifyPayload(testToken+"mochi"), false, 1); err != nil {
		t.Fatal(err)
	}
	if n := sink.next(); n.ClientAccessToken != testToken+"mochi" {
		t.Fatalf("got %v, want the notification after the subscription was granted", n)
	}
	rec.assertNoSecret(testToken[:20])
}

// clashSubscribe is a mochi-mqtt hook that allows everything and answers the
// first Clashes subscriptions with SUBACK 0x91 (packet identifier in use):
// mochi hands OnSubscribed the SUBACK's reason codes before it writes it.
type clashSubscribe struct {
	mqtt.HookBase
	Clashes int32
	n       atomic.Int32
}

func (h *clashSubscribe) ID() string { return "clash-subscribe" }

func (h *clashSubscribe) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnSubscribed
}

func (h *clashSubscribe) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *clashSubscribe) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (h *clashSubscribe) OnSubscribed(_ *mqtt.Client, _ packets.Packet, codes []byte) {
	if h.n.Add(1) <= h.Clashes {
		codes[0] = packets.ErrPacketIdentifierInUse.Code
	}
}

// TestSubscriptionIDClashIsNotAFailure: mochi, the lab's broker, answers a
// SUBSCRIBE whose packet id one of its own messages in flight holds with
// 0x91, as it does when a notification queued while the device was off
// reaches the new connection first. That is sent again, with no ERROR line
// and no notify-subscription-failed event; only a clash that persists
// becomes the error.
func TestSubscriptionIDClashIsNotAFailure(t *testing.T) {
	run := func(t *testing.T, clashes int32) (*logRecorder, int32) {
		p := newPKI(t)
		_, addr := startMochi(t, p, &clashSubscribe{Clashes: clashes})
		log, rec := newLogRecorder(t)
		var reported atomic.Int32
		cfg := testConfig(t, p, addr, "thing-a", log)
		cfg.OnSubscribeError = func(error) { reported.Add(1) }
		runListener(t, newListener(t, cfg))
		rec.waitFor("notify subscription granted", "attempts="+strconv.Itoa(int(clashes)+1))
		return rec, reported.Load()
	}
	t.Run("clash", func(t *testing.T) {
		rec, reported := run(t, 2)
		if n := rec.count("notify subscription to be sent again", "level=INFO", "0x91"); n != 2 {
			t.Errorf("%d INFO lines for two clashes, want 2", n)
		}
		if n := rec.count("notify subscription failed"); n != 0 || reported != 0 {
			t.Errorf("%d failure lines and %d notify-subscription-failed reports for a clash, want none", n, reported)
		}
	})
	t.Run("persisting", func(t *testing.T) {
		rec, reported := run(t, 4)
		if n := rec.count("notify subscription failed", "level=ERROR", "0x91"); n != 1 || reported != 1 {
			t.Errorf("%d failure lines and %d reports for a fourth clash, want 1 each", n, reported)
		}
	})
	// The case itself, with its timing left to the machine: a slower one
	// acknowledges the notification before it subscribes, and nothing clashes.
	t.Run("queued while off", func(t *testing.T) {
		p := newPKI(t)
		srv, addr := startMochi(t, p, new(auth.AllowHook))
		log, rec := newLogRecorder(t)
		sink := newSink(t)
		var reported atomic.Int32
		cfg := testConfig(t, p, addr, "thing-a", log)
		cfg.OnNotification = sink.callback
		cfg.OnSubscribeError = func(error) { reported.Add(1) }
		stop := runListener(t, newListener(t, cfg))
		rec.waitFor("notify subscription granted")
		stop()
		if err := srv.Publish(Topic("thing-a"), notifyPayload(testToken+"offline"), false, 1); err != nil {
			t.Fatal(err)
		}
		runListener(t, newListener(t, cfg))
		if n := sink.next(); n.ClientAccessToken != testToken+"offline" {
			t.Fatalf("got %v, want the notification queued while offline", n)
		}
		rec.waitCount(2, "notify subscription granted")
		if n := rec.count("notify subscription failed"); n != 0 || reported.Load() != 0 {
			t.Errorf("%d failure lines and %d reports, want none", n, reported.Load())
		}
	})
}

// refuseConnect refuses every connection in the CONNACK.
type refuseConnect struct{ mqtt.HookBase }

func (h *refuseConnect) ID() string { return "refuse-connect" }

func (h *refuseConnect) Provides(b byte) bool { return b == mqtt.OnConnectAuthenticate }

func (h *refuseConnect) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return false }

func TestConnectRefusedIsReportedAndRetried(t *testing.T) {
	p := newPKI(t)
	_, addr := startMochi(t, p, &refuseConnect{})
	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, addr, "thing-a", log))
	stop := runListener(t, l)
	line := rec.waitFor("mqtt connect failed; retrying")
	// A policy may allow iot:Connect but not the persistent session the agent
	// keeps (an iot:ConnectAttributes condition without PersistentConnect).
	for _, want := range []string{"level=WARN", "reason=", "iot:Connect", "client/thing-a", "PersistentConnect"} {
		if !strings.Contains(line, want) {
			t.Errorf("refusal log line lacks %q: %s", want, line)
		}
	}
	rec.waitCount(2, "mqtt connect failed; retrying")
	stop()
	if n := rec.count("mqtt connected"); n != 0 {
		t.Errorf("%d connections logged, want none", n)
	}
}

// gate refuses connections in the CONNACK while shut, and lets the others in.
type gate struct {
	mqtt.HookBase
	shut atomic.Bool
}

func (h *gate) ID() string { return "gate" }

func (h *gate) Provides(b byte) bool { return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck }

func (h *gate) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return !h.shut.Load() }

func (h *gate) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// The same failed attempt, again and again (a device without its WAN retries
// every two minutes for as long as that lasts), is a WARN once, then once per
// quiet.Every with how many were quieted; the others are at debug level. It
// was a WARN each, ~720 lines a day, over the lines that said why in a
// router's 64 KiB log ring. After a connection, the next failure is news.
func TestRepeatedConnectFailureLoggedOnce(t *testing.T) {
	p := newPKI(t)
	g := &gate{}
	g.shut.Store(true)
	srv, addr := startMochi(t, p, g)
	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, addr, "thing-a", log))
	var ahead atomic.Int64
	l.now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	runListener(t, l)
	rec.waitCount(4, "mqtt connect failed; retrying")
	if n := rec.count("level=WARN", "mqtt connect failed; retrying"); n != 1 {
		t.Errorf("%d WARN lines for the same failure 4 times in a row, want 1 (the others at debug level)", n)
	}
	ahead.Store(int64(quiet.Every))
	line := rec.waitFor("level=WARN", "mqtt connect failed; retrying", "repeated=")
	t.Logf("after quiet.Every: %s", line)

	g.shut.Store(false)
	awaitConnection(t, l)
	g.shut.Store(true)
	before := rec.count("level=WARN", "mqtt connect failed; retrying")
	cl, ok := srv.Clients.Get("thing-a")
	if !ok {
		t.Fatal("the broker has no client thing-a")
	}
	_ = srv.DisconnectClient(cl, packets.Code{Code: 0x8B, Reason: "going down"})
	rec.waitCount(before+1, "level=WARN", "mqtt connect failed; retrying")
}

// A broker name with several addresses handed out in rotating order (DNS
// round robin) fails each attempt naming the address tried first: one cause
// all the same, where each address was a new one and each attempt a WARN.
func TestRotatingAddressesFailAlike(t *testing.T) {
	p := newPKI(t)
	port := freePort(t) // nothing listens on it, on any 127.x address
	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, hostPort(port), "thing-a", log))
	var n atomic.Int64
	var d net.Dialer
	l.dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		ip := "127.0.0." + strconv.Itoa(2+int(n.Add(1)%8)) // eight addresses, as a resolver rotates them
		return d.DialContext(ctx, network, net.JoinHostPort(ip, strconv.Itoa(port)))
	}
	runListener(t, l)
	rec.waitCount(12, "mqtt connect failed; retrying")
	if w := rec.count("level=WARN", "mqtt connect failed; retrying"); w != 1 {
		t.Errorf("%d WARN lines for 12 attempts refused alike at eight addresses, want 1 (the others at debug level)", w)
	}
}

// serials records the serial of the client certificate of each connection.
type serials struct {
	mqtt.HookBase
	mu  sync.Mutex
	got []string
}

func (h *serials) ID() string { return "serials" }

func (h *serials) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *serials) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	serial := "none"
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok && len(tc.ConnectionState().PeerCertificates) > 0 {
		serial = tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	h.mu.Lock()
	h.got = append(h.got, serial)
	h.mu.Unlock()
	return true
}

func (h *serials) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (h *serials) last() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) == 0 {
		return ""
	}
	return h.got[len(h.got)-1]
}

// A certificate renewed in place is used from the next connection on, without
// a restart; files that do not load are reported once and the listener goes on
// with what it read before.
func TestRenewedCertificateUsedOnReconnect(t *testing.T) {
	p := newPKI(t)
	hook := &serials{}
	_, addr := startMochi(t, p, hook)
	log, rec := newLogRecorder(t)
	cfg := testConfig(t, p, addr, "thing-r", log)
	_, d := runCuttable(t, cfg)
	first := hook.last()

	// Renewed as cp -p or rsync -t would: new files (same sizes) with the old
	// modification times.
	var mtimes []time.Time
	for _, f := range []string{cfg.CertFile, cfg.KeyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		mtimes = append(mtimes, fi.ModTime())
	}
	renewed := p.Renew(t, "thing-r").String()
	for i, f := range []string{cfg.CertFile, cfg.KeyFile} {
		if err := os.Chtimes(f, mtimes[i], mtimes[i]); err != nil {
			t.Fatal(err)
		}
	}
	d.cut()()
	rec.waitFor("mqtt certificate files changed: read again", "cert_file="+cfg.CertFile)
	rec.waitCount(2, "mqtt connected")
	if got := hook.last(); got != renewed || got == first {
		t.Fatalf("the reconnect presented serial %s; want the renewed %s (first %s)", got, renewed, first)
	}

	// A key that does not match: reported once, the renewed pair kept.
	other, _ := p.Client(t, "someone-else")
	b, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.CertFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 3; i <= 4; i++ {
		d.cut()()
		rec.waitCount(i, "mqtt connected")
	}
	if n := rec.count("mqtt certificate files changed but do not load", cfg.CertFile); n != 1 {
		t.Errorf("%d warnings about the files naming %s, want 1", n, cfg.CertFile)
	}
	if n := rec.count("CertFile"); n != 0 {
		t.Errorf("%d log lines name the Go field CertFile, want 0 (the file is named instead)", n)
	}
	if got := hook.last(); got != renewed {
		t.Errorf("after a bad change the listener presented %s, want the renewed %s", got, renewed)
	}
	rec.assertNoSecret("PRIVATE KEY")
}

// disconnectOnPublish allows every connection, subscription and publish, but
// closes the connection of a client that publishes to Topic: a broker may answer
// a publish it will not take so (AWS IoT Core does, under MQTT 3.1.1, for a topic
// the policy does not allow; Mosquitto for a malformed one).
type disconnectOnPublish struct {
	mqtt.HookBase
	Topic string
	seen  atomic.Int32
}

func (h *disconnectOnPublish) ID() string { return "disconnect-on-publish" }

func (h *disconnectOnPublish) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, []byte{b})
}

func (h *disconnectOnPublish) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *disconnectOnPublish) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (h *disconnectOnPublish) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.TopicName == h.Topic {
		h.seen.Add(1)
		cl.Stop(packets.ErrNotAuthorized)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// A message the broker answers by closing the connection stays unacknowledged in
// the session, and paho sends it again first thing on every reconnect: each
// connection ended as it came up, for as long as the listener ran, and no
// notification got through. After two connections in a row that ended so, the
// listener drops what is unacknowledged (the waiting Publish gets ErrRefused) and
// the connection stays up.
func TestPublishTheBrokerDisconnectsForIsDropped(t *testing.T) {
	hook := &disconnectOnPublish{Topic: "porthole/events/poison"}
	l, rec := connectedOnMochi(t, hook)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Publish(ctx, "porthole/events/poison", []byte(`{}`)); !errors.Is(err, ErrRefused) {
		t.Errorf("Publish of a message the broker disconnects for = %v, want ErrRefused", err)
	}
	rec.waitFor("level=WARN", "unacknowledged")
	awaitConnection(t, l)
	if err := l.Publish(ctx, "porthole/events/ok", []byte(`{}`)); err != nil {
		t.Errorf("Publish after the dropped one: %v", err)
	}
	n := rec.count("mqtt connected")
	time.Sleep(time.Second)
	if m := rec.count("mqtt connected"); m != n {
		t.Errorf("%d more connections after the message was dropped, want the connection to stay", m-n)
	}
	if s := hook.seen.Load(); s > poisonedConnections {
		t.Errorf("the broker got the message %d times, want it dropped after %d (poisonedConnections)", s, poisonedConnections)
	}
}

// allowAll lets every client connect, subscribe and publish.
type allowAll struct{ mqtt.HookBase }

func (h *allowAll) ID() string { return "allow-all" }

func (h *allowAll) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// A broker that ends the connection says why, in the DISCONNECT's reason code
// and reason string (AWS IoT Core: session taken over, server shutting down,
// not authorized, quota exceeded): both are logged. The reason string only
// comes if the CONNECT does not ask the broker to leave it out (Request Problem
// Information 0, which paho sends unless told otherwise: MQTT 5.0 §3.1.2.11.7).
// A session taken over or an operation not authorized has a hint at the cause.
func TestServerDisconnectReasonStringLogged(t *testing.T) {
	p := newPKI(t)
	srv, addr := startMochi(t, p, &allowAll{})
	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, addr, "thing-a", log))
	runListener(t, l)
	awaitConnection(t, l)
	for i, tc := range []struct {
		c    packets.Code
		hint string // "": the line has no hint
	}{
		{packets.Code{Code: 0x8B, Reason: "going down for maintenance"}, ""},
		{packets.Code{Code: 0x8E, Reason: "another client connected with this client id"}, `hint="another client connected with client id \"thing-a\"; each device needs its own"`},
		{packets.Code{Code: 0x87, Reason: "policy denies iot:Receive"}, `hint="an operation was not authorized; `},
		{packets.Code{Code: 0x97, Reason: "publish rate exceeded"}, ""},
	} {
		c := tc.c
		cl, ok := srv.Clients.Get("thing-a")
		if !ok {
			t.Fatal("the broker has no client thing-a")
		}
		_ = srv.DisconnectClient(cl, c)
		line := rec.waitFor("mqtt broker closed the connection", reasonText(c.Code))
		if want := `reason_string="` + c.Reason + `"`; !bytes.Contains([]byte(line), []byte(want)) {
			t.Errorf("the log line lacks the broker's reason string %s: %s", want, line)
		}
		if !hasHint(line, tc.hint) {
			t.Errorf("the log line of reason %#x is\n%s\nwant one hint %s", c.Code, line, tc.hint)
		}
		rec.waitCount(i+2, "notify subscription granted")
	}
}

// throttleFirst answers the first Throttled publishes with PUBACK 0x97 (quota
// exceeded), as a broker does to a client over its publish rate (AWS IoT Core's
// per-connection and per-account limits), and takes the rest.
type throttleFirst struct {
	allowAll
	Throttled int32
	n         atomic.Int32
}

func (h *throttleFirst) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, []byte{b})
}

func (h *throttleFirst) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.n.Add(1) <= h.Throttled {
		return pk, packets.ErrQuotaExceeded
	}
	return pk, nil
}

// A publish the broker throttles (PUBACK 0x97, quota exceeded) is not refused for
// good: the same message a moment later is taken. ErrRefused tells the agent's
// event queue to drop the message ("sending the same message again gets the same
// answer"), so a short burst over the broker's rate lost audit events for good.
func TestThrottledPublishIsNotRefused(t *testing.T) {
	l, _ := connectedOnMochi(t, &throttleFirst{Throttled: 1})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := l.Publish(ctx, "porthole/events/thing-a", []byte(`{"type":"ssh-login"}`))
	if err == nil || !strings.Contains(err.Error(), "0x97") {
		t.Fatalf("Publish throttled by the broker = %v, want an error naming reason 0x97", err)
	}
	if errors.Is(err, ErrRefused) {
		t.Errorf("Publish throttled by the broker = %v: ErrRefused, which has the message dropped, not sent again", err)
	}
	if err := l.Publish(ctx, "porthole/events/thing-a", []byte(`{"type":"ssh-login"}`)); err != nil {
		t.Errorf("the same message again: %v", err)
	}
}
