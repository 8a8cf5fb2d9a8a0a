package notify

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Mosquitto closes the connection of a client that publishes to a topic with
// a control character (malformed UTF-8 to it, MQTT 5.0 §1.5.4), and paho sends
// an unacknowledged QoS 1 PUBLISH again first thing on every reconnect: one such
// publish ended every later connection as soon as it came up, for as long as the
// listener ran (34 connections in 3 s here), so no notification could arrive.
// Publish refuses such a topic instead.
func TestPublishBadTopicDoesNotWedgeTheConnection(t *testing.T) {
	m := startMosquitto(t)
	rec, _, l := listenOn(t, m)
	for _, topic := range []string{"porthole/events/thing-a\x01", "porthole/events/thing-a\t", "porthole/events/\uFFFF", "porthole/events/\xff"} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := l.Publish(ctx, topic, []byte(`{}`))
		cancel()
		if err == nil || !strings.Contains(err.Error(), "is not a topic name") {
			t.Errorf("Publish(%q) = %v, want a refused topic name", topic, err)
		}
	}
	time.Sleep(time.Second)
	if n := rec.count("mqtt connected"); n != 1 {
		t.Fatalf("%d connections after publishing to bad topics, want 1", n)
	}
	for _, topic := range []string{"porthole/events/thing-a", "porthole/\uFFFD/é"} {
		if err := CheckTopicName(topic); err != nil {
			t.Errorf("CheckTopicName(%q) = %v, want nil", topic, err)
		}
	}
}
