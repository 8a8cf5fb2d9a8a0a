// Package tunneltest is an in-process fake of the AWS IoT Secure Tunneling data plane
// for tests, in the manner of net/http/httptest: NewServer starts a WebSocket endpoint
// on loopback, OpenTunnel issues a source and a destination access token, and the
// clients under test dial Server.URL + "/tunnel?local-proxy-mode=...".
//
// It is a thin wrapper over agent/tunnel/dataplane, the service side of the data
// plane, which holds the rules and faults; tunneltest only starts it on a loopback
// httptest server, opens tunnels with fresh tokens and logs through Logf. Through it,
// it reproduces the service's rules as spec/secure-tunneling.md describes them: the
// handshake checks of §2 (path, mode, exactly one access token, client token,
// subprotocol, 4 KB request limit, 101 with the chosen subprotocol and a channel-id),
// single-use access tokens and client-token reconnects (§3.8), SERVICE_IDS on every
// V2/V3 connect (§3.1), byte-exact relaying of tunnel frames between the two sides
// (§1.2), STREAM_RESET to the other side when a side is replaced (§3.8), and the
// message validity rules of §1.5, enforced by closing the offender's WebSocket with
// status 1008.
//
// Faults are injected per tunnel: Rechunk re-cuts the relayed byte stream into
// WebSocket messages at random boundaries, Drop and DropAfter cut a side's TCP
// connection without a Close frame, SessionReset and Send inject frames, Close acts
// like CloseTunnel, SetPong suppresses pongs, and Server.FailHandshakes answers the
// next handshakes with an error status.
//
// A typical end-to-end test:
//
//	srv := tunneltest.NewServer(t)
//	srv.Logf = t.Logf
//	tun := srv.OpenTunnel("SSH")
//	tun.Rechunk(1)
//	// start a destination with tun.DestinationToken and a source with
//	// tun.SourceToken, both dialling srv.URL, then:
//	if err := tun.WaitConnects(ctx, tunneltest.Destination, 1); err != nil { ... }
//	tun.Drop(tunneltest.Destination) // and expect a reconnect with the client token
//
// Writes to a side are done by one goroutine per WebSocket, in the order the frames
// were queued: SERVICE_IDS first, then frames relayed from the other side, frames from
// Send and SessionReset, and the service's STREAM_RESETs, as they come. Without
// Rechunk each frame is one WebSocket message.
//
// It is not the service: there is no TLS, no control plane, no MQTT notification and
// no lifetime expiry (tools/tunneld is the full emulator, on the same data plane).
// Knobs it does not wrap (bandwidth, token rotation) are on Tunnel.Dataplane.
// Everything it starts ends in Server.Close, which NewServer registers with
// tb.Cleanup.
package tunneltest
