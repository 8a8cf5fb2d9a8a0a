// Package dataplane is the service side of the AWS IoT Secure Tunneling data plane:
// the /tunnel WebSocket endpoint that the source and the destination dial, with the
// rules the real service applies. It is the one implementation of those rules in the
// repository; the test fake agent/tunnel/tunneltest and the self-hosted service
// tools/tunneld are both built on it.
//
// It reproduces spec/secure-tunneling.md: the handshake checks of §2 (path, mode,
// exactly one access token, client token, subprotocol, 4 KB request limit, 101 with the
// chosen subprotocol and a channel-id; refusals carry a channel-id too), single-use
// access tokens and client-token reconnects (§3.8), SERVICE_IDS on every V2/V3 connect
// (§3.1), byte-exact relaying of tunnel frames between the two sides (§1.2, frames are
// never split or merged), STREAM_RESET to the other side when a side is replaced
// (§3.8), pongs for pings (§3.7), and the message validity rules of §1.5, enforced by
// closing the offender's WebSocket with status 1008 (1003 for a text message; a
// message over 131076 bytes cuts the connection without a Close frame, the abnormal
// close of §1.3). The service refuses a message over the read limit
// whole (§1.3: it does "not accept" such frames): none of its frames reaches the peer,
// so frames are relayed only once the message they end in has ended within the limit.
//
// A Server is an http.Handler. It keeps a registry of open tunnels, keyed by their
// access tokens; OpenTunnel adds one, Remove forgets it. For Tunnel.Drop to cut a
// side's TCP connection without a Close frame, install Server.ConnContext as the
// http.Server's ConnContext; without it a cut closes the WebSocket as abruptly as the
// library allows.
//
// Knobs for tests and labs, per tunnel: Rechunk re-cuts the relayed byte stream into
// WebSocket messages at random boundaries; SetBandwidth limits the bytes a tunnel
// carries per second, counting frames both ways and ping and pong frames (§7); Drop and
// DropAfter cut a side at a chosen moment; SessionReset, Send and SendRaw inject frames;
// SetPong suppresses pongs; Close acts like CloseTunnel or lifetime expiry (a Close frame
// with status 1000 to both sides). Per server, FailHandshakes answers the next
// handshakes with a chosen status (e.g. 503).
//
// Writes to a side are done by one goroutine per WebSocket, in the order the frames
// were queued: SERVICE_IDS first, then frames relayed from the other side, frames from
// Send and SessionReset, and the service's STREAM_RESETs, as they come. Without
// Rechunk each frame is one WebSocket message. The same goroutine answers pings,
// between messages: a pong waits for the message in flight to reach a client
// that reads slowly, and for the bandwidth limit, but a late pong never ends the
// connection; a client that pings again before its pong gets one for the latest.
//
// A WebSocket has no idle timeout: the service's is not known (spec §3.7, §8),
// whose guides only say that clients may need to ping. A path that died is found
// by TCP keepalive, which net.Listen's connections have (porthole-tunneld's), or
// ends when its client reconnects with its client token; a timeout would add
// only the risk of cutting a live client that does not ping.
//
// It is not the control plane (no OpenTunnel API, no persistence, no lifetime timers,
// no MQTT): tools/tunneld adds those. It does not terminate TLS; the http.Server does.
// Server.Close ends every connection and waits for every goroutine it started.
package dataplane
