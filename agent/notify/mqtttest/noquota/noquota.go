// Package noquota is a mochi-mqtt hook that turns off v2.7.9's outbound flow
// control, for the brokers of the lab and of the agent's tests. It is a
// package of its own so that porthole-lab takes it without mqtttest's test
// helpers.
package noquota

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Hook turns off mochi-mqtt v2.7.9's send quota (from a client's Receive
// Maximum), as mochi has it off for MQTT 3 clients. With it on:
//   - Delivery stops for good: the broker calls Inflight.NextImmediate after
//     every packet a client sends while QoS 1 messages to it are in flight
//     (server.go:719), which read-locks the client's inflight map twice
//     (inflight.go:96, then GetAll at 75); a publisher delivering to that
//     client in between (Inflight.Set, server.go:1083) waits for the write
//     lock, and both stop, with every later notification and the broker's
//     expiry loop.
//   - The quota leaks, and delivery stops when none is left (mochi-mqtt
//     issue 545): a message held back once the client is 32 behind is deleted
//     from the map when it is sent (server.go:723), so its PUBACK returns
//     nothing; and the broker keeps its PUBACKs to the client's own QoS 1
//     publishes (the agent's events) in the same map, by packet id alone
//     (server.go:947, 958), so an event that takes the id of a notification
//     in flight removes that notification's entry, and its PUBACK
//     (server.go:1162) returns nothing either.
//
// Without the quota, messages go out at once; paho queues any beyond the
// agent's Receive Maximum.
type Hook struct{ mqtt.HookBase }

func (h *Hook) ID() string { return "porthole-no-send-quota" }

func (h *Hook) Provides(b byte) bool { return b == mqtt.OnConnect }

// OnConnect runs after mochi has set the quota from the CONNECT and before the
// client can receive anything. Clearing Receive Maximum too keeps the quota off
// when a session is taken over (inheritClientSession sets it again from that).
func (h *Hook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	cl.Properties.Props.ReceiveMaximum = 0
	cl.State.Inflight.ResetSendQuota(0)
	return nil
}
