package notify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// A broker states in its CONNACK the largest packet it accepts (MQTT 5.0
// §3.2.2.3.6), and a client must not send a larger one (MQTT-3.1.2-24): the
// broker closes the connection. paho does not check, and keeps the
// unacknowledged QoS 1 PUBLISH in the session, sending it again first thing on
// every reconnect, so every later connection ended at once, for as long as the
// listener ran. Publish refuses the message instead (ErrRefused: the agent's
// event queue drops it), and the connection stays up.
func TestPublishOverServerMaximumPacketSize(t *testing.T) {
	m := startMosquitto(t)
	m.Configure("max_packet_size 131072") // AWS IoT Core's messages are limited to 128 KB
	rec, _, l := listenOn(t, m)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := l.Publish(ctx, "porthole/events/thing-a", []byte(`{"user":"`+strings.Repeat("x", 200<<10)+`"}`))
	if !errors.Is(err, ErrRefused) {
		t.Errorf("Publish of 200 KiB to a broker that takes 128 KiB = %v, want ErrRefused", err)
	}
	time.Sleep(time.Second)
	if n := rec.count("mqtt connected"); n != 1 {
		t.Fatalf("%d connections in the second after one oversized publish, want 1", n)
	}
	if err := l.Publish(ctx, "porthole/events/thing-a", []byte(`{}`)); err != nil {
		t.Errorf("Publish after the oversized one: %v", err)
	}
	// Exactly at the limit is sent.
	payload := make([]byte, 131072)
	for publishPacketSize("porthole/events/thing-a", payload) > 131072 {
		payload = payload[:len(payload)-1]
	}
	if err := l.Publish(ctx, "porthole/events/thing-a", payload); err != nil {
		t.Errorf("Publish of a packet of exactly max_packet_size: %v", err)
	}
	if n := rec.count("mqtt connected"); n != 1 {
		t.Fatalf("%d connections after a publish at the limit, want 1", n)
	}
}
