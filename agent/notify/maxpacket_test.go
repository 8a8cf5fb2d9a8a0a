package notify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
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

// statePacketSize makes a mochi broker state a Maximum Packet Size in its
// CONNACK (mochi enforces its own but does not state it).
type statePacketSize struct {
	mqtt.HookBase
	size uint32
}

func (h *statePacketSize) ID() string { return "state-packet-size" }

func (h *statePacketSize) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnPacketEncode
}

func (h *statePacketSize) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *statePacketSize) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

func (h *statePacketSize) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack {
		pk.Properties.MaximumPacketSize = h.size
	}
	return pk
}

// A broker may state any Maximum Packet Size up to 2^32-1 (MQTT 5.0
// §3.2.2.3.6: a Four Byte Integer). On a 32-bit device (arm, mips, 386)
// int(maxPacket) of a size from 2^31 was negative, so every Publish was
// refused as "over the broker's maximum packet size (4294967295 bytes)": the
// agent's status and audit events were all dropped.
func TestPublishUnderHugeServerMaximumPacketSize(t *testing.T) {
	l, _ := connectedOnMochi(t, &statePacketSize{size: 0xffffffff})
	l.mu.Lock()
	got := l.maxPacket
	l.mu.Unlock()
	if got != 0xffffffff {
		t.Fatalf("the listener noted a Maximum Packet Size of %d, want 4294967295", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Publish(ctx, "porthole/events/thing-a", []byte(`{}`)); err != nil {
		t.Errorf("Publish of a small event to a broker that takes packets of up to 4 GiB: %v", err)
	}
}
