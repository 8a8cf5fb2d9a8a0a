// Package tunnel implements the AWS IoT Secure Tunneling protocol, versions 1, 2 and 3,
// for both ends of a tunnel: the destination, which dials a local target for each
// stream the source starts, and the source, which listens locally and starts a stream
// for each accepted connection.
//
// Layers, bottom up:
//   - the frame codec (AppendFrame, FrameReader): 2-byte big-endian length + protobuf
//     Message, encoded with protowire so the device binary does not link the protobuf
//     reflection runtime; the generated type in tunnel/pb is the reference in tests;
//   - Conn: one WebSocket connection to the service (Dial): endpoint, headers, the
//     subprotocol, TLS, HTTPS proxy, pings;
//   - Destination and Source: the session engines, which reconnect with the same
//     client token and map service IDs to local targets or listeners.
//
// It knows nothing of MQTT, SSH or the agent's configuration: a Destination is handed a
// Dialer that decides what a service ID means. It does not implement the control plane
// (OpenTunnel and friends) nor the service side of the data plane.
//
// The wire protocol is described in spec/secure-tunneling.md; comments cite its sections.
package tunnel
