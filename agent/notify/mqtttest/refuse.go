package mqtttest

import (
	"bytes"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// RefuseSubscribe is a mochi-mqtt hook that allows every connection and
// publish, and refuses the first Refusals subscriptions to Topic: the broker
// answers SUBACK 0x87, as AWS IoT Core does when the policy lacks
// iot:Subscribe.
type RefuseSubscribe struct {
	mqtt.HookBase
	Topic    string
	Refusals int32
	refused  atomic.Int32
}

func (h *RefuseSubscribe) ID() string { return "refuse-subscribe" }

func (h *RefuseSubscribe) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *RefuseSubscribe) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *RefuseSubscribe) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	if !write && topic == h.Topic && h.refused.Load() < h.Refusals {
		h.refused.Add(1)
		return false
	}
	return true
}

// Refused is how many subscriptions the hook has refused.
func (h *RefuseSubscribe) Refused() int32 { return h.refused.Load() }
