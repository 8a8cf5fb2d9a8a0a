package notify

import (
	"crypto/tls"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// TestClockSetRecoversMQTT: issue 8's "system clock in 1970 (clear log,
// recovers when the clock is set)" on the MQTT side. TestClockLooksWrongLogged
// checks the log only; here the broker's certificate is first one the device's
// clock sees as not yet valid (as a 1970 clock sees every certificate), then
// valid (NTP set the clock): the listener connects and subscribes without a
// restart, and notifications flow.
func TestClockSetRecoversMQTT(t *testing.T) {
	defer func(old string) { BuildTime = old }(BuildTime)
	BuildTime = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	p := newPKI(t)
	notYet := p.MutualTLS(t, time.Now().Add(24*time.Hour))
	valid := p.MutualTLS(t, time.Time{})
	var clockSet atomic.Bool
	conf := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if clockSet.Load() {
			return valid, nil
		}
		return notYet, nil
	}}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0", TLSConfig: conf})
	if err := srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	log, rec := newLogRecorder(t)
	sink := newSink(t)
	cfg := testConfig(t, p, ln.Address(), "thing-a", log)
	cfg.OnNotification = sink.callback
	l := newListener(t, cfg)
	runListener(t, l)
	rec.waitFor("the system clock looks wrong", "clock=")
	rec.waitCount(3, "mqtt connect failed; retrying")

	clockSet.Store(true)
	awaitConnection(t, l)
	rec.waitFor("notify subscription granted")
	if err := srv.Publish("$aws/things/thing-a/tunnels/notify", notifyPayload("AQGAAXhz-clock-set-token", "SSH"), false, 1); err != nil {
		t.Fatal(err)
	}
	if n := sink.next(); n.ClientAccessToken != "AQGAAXhz-clock-set-token" {
		t.Fatalf("notification after the clock was set: %+v", n)
	}
}
