package notify

import (
	"context"
	"strconv"
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

// CheckTopicName's bounds, each at its edge: Mosquitto refuses U+007F to
// U+009F as it refuses U+0001 to U+001F (MQTT 5.0 §1.5.4), and a topic of
// 65535 bytes is the longest MQTT's 2-byte length can carry. A character it
// let through went out in a QoS 1 PUBLISH that ended every connection it was
// sent again on.
func TestCheckTopicNameEdges(t *testing.T) {
	tests := []struct {
		topic string
		ok    bool
	}{
		{"a/\x1f", false},
		{"a/\x20", true},
		{"a/~", true},
		{"a/\x7f", false},
		{"a/\u0080", false},
		{"a/\u009f", false},
		{"a/\u00a0", true},
		{"a/\ufdd0", false},
		{"a/\ufdef", false},
		{"a/\ufdcf", true},
		{"a/\U0001fffe", false},
		{strings.Repeat("a", maxTopicBytes), true},
		{strings.Repeat("a", maxTopicBytes+1), false},
	}
	for _, tc := range tests {
		err := CheckTopicName(tc.topic)
		if (err == nil) != tc.ok {
			name := tc.topic
			if len(name) > 20 {
				name = name[:10] + "... (" + strconv.Itoa(len(tc.topic)) + " bytes)"
			}
			t.Errorf("CheckTopicName(%q) = %v, want ok %v", name, err, tc.ok)
		}
	}
}
