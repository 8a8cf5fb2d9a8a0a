package notify

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/auth"
)

// Every notification the listener rejects reaches OnRejected (so the agent can
// publish it), with an error that says why and holds neither token nor payload.
func TestRejectedNotificationsAreReported(t *testing.T) {
	p := newPKI(t)
	srv, addr := startMochi(t, p, new(auth.AllowHook))
	log, rec := newLogRecorder(t)
	sink := newSink(t)
	rejected := make(chan error, 16)
	cfg := testConfig(t, p, addr, "thing-a", log)
	cfg.OnNotification = sink.callback
	cfg.OnRejected = func(err error) { rejected <- err }
	l := newListener(t, cfg)
	runListener(t, l)
	awaitConnection(t, l)

	secret := testToken + "rejected"
	for _, tc := range []struct{ payload, want string }{
		{`{"clientAccessToken":"` + secret + `",`, "not valid JSON"},
		{strings.Replace(string(notifyPayload(secret)), `"destination"`, `"source"`, 1), "clientMode"},
		{string(notifyPayload("")), "clientAccessToken is empty"},
		{strings.Replace(string(notifyPayload(secret)), `"us-east-1"`, `"../../evil"`, 1), "region"},
		{string(notifyPayload(secret, "A", "B", "A")), `services[2] "A" is a duplicate`},
		{`{"clientAccessToken":"` + secret + `","pad":"` + strings.Repeat("x", MaxPayloadSize) + `"}`, "over the"},
	} {
		// QoS 0: mochi v2.7.9 can deadlock when its periodic sweep of expired
		// inflight messages (a read lock taken twice) meets a QoS 1 publish
		// waiting to write the map; CI once hung here. The listener's part is
		// the same at either QoS.
		if err := srv.Publish(Topic("thing-a"), []byte(tc.payload), false, 0); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-rejected:
			if !errors.Is(err, ErrInvalidNotification) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("OnRejected(%v), want ErrInvalidNotification saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "xxxxxxxx") {
				t.Errorf("OnRejected(%v) holds the token or the payload", err)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("no rejection reported for %.60s…", tc.payload)
		}
	}
	// A valid notification, and its duplicate, are not rejections.
	good := notifyPayload(secret)
	for range 2 {
		if err := srv.Publish(Topic("thing-a"), good, false, 0); err != nil {
			t.Fatal(err)
		}
	}
	sink.next()
	rec.waitFor("duplicate notification ignored")
	select {
	case err := <-rejected:
		t.Fatalf("OnRejected(%v) for a valid notification", err)
	default:
	}
	rec.assertNoSecret(secret)
}
