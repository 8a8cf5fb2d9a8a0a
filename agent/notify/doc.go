// Package notify is the device's MQTT v5 listener for AWS IoT Secure Tunneling
// notifications.
//
// A [Listener] connects to an MQTT broker (AWS IoT Core, Mosquitto, the lab
// broker) with an X.509 client certificate, keeps a persistent session
// (clean start false, a session expiry) so that a notification published
// while the device was offline is delivered when it comes back, subscribes at
// QoS 1 to
//
//	$aws/things/<thing>/tunnels/notify
//
// every time a connection comes up, and hands each valid, non-duplicate
// [Notification] to a callback. A refused subscription (usually an IoT
// policy without iot:Subscribe on the topic filter) is logged with the reason
// code and a policy hint, and retried with backoff. The payload format is in
// spec/secure-tunneling.md §4; [ParseNotification] validates it.
//
// The access token inside a notification is a bearer secret: [Notification]
// redacts it to a short SHA-256 fingerprint whenever it is printed, logged or
// marshalled, and no error or log line of this package contains it.
//
// Listener can also publish (QoS 1, or QoS 0 to a broker whose Maximum QoS is
// 0) on the same connection, for the agent's status and audit events.
//
// The connection is managed here, on paho's low-level client (one paho.Client
// per connection, one session state for all of them), not with autopaho:
// autopaho links gorilla/websocket and net/http for MQTT over WebSocket,
// about 700 KB of the device binary.
//
// What it is not: notify knows nothing of tunnels, SSH or which services a
// device offers; it does not open the tunnel (that is agent/tunnel, driven
// by the agent) and does not persist client tokens. It does not speak MQTT
// over WebSocket.
package notify
