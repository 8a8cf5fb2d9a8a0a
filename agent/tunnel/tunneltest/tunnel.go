package tunneltest

import (
	"context"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// Tunnel is one open tunnel of a Server. Its methods are those of dataplane.Tunnel,
// which documents them in full.
type Tunnel struct {
	SourceToken      string // access token for local-proxy-mode=source
	DestinationToken string // access token for local-proxy-mode=destination
	ID               string // "tunnel-N", used in log lines

	dp *dataplane.Tunnel
}

// Dataplane returns the tunnel of the data plane, for knobs tunneltest does not wrap
// (SetBandwidth, Rotate, Side).
func (t *Tunnel) Dataplane() *dataplane.Tunnel { return t.dp }

// Services returns the tunnel's service IDs, as sent in SERVICE_IDS.
func (t *Tunnel) Services() []string { return t.dp.Services() }

// Rechunk makes every later write to either side re-cut the byte stream of frames
// into WebSocket messages of random sizes (1 to 131076 bytes, skewed small), so that
// messages hold several frames and frames straddle messages (spec §1.2).
func (t *Tunnel) Rechunk(seed int64) { t.dp.Rechunk(seed) }

// DropAfter makes the n-th frame received from side, counting from this call and
// across reconnects, not be relayed; instead side's TCP connection is cut without a
// Close frame. n <= 0 cancels.
func (t *Tunnel) DropAfter(side Side, n int) { t.dp.DropAfter(side, n) }

// Drop cuts side's TCP connection now, without a Close frame.
func (t *Tunnel) Drop(side Side) { t.dp.Drop(side) }

// SessionReset sends SESSION_RESET to side (spec §3.3), after what is already queued
// for it. If side is not connected, it logs that and does nothing.
func (t *Tunnel) SessionReset(side Side) { t.dp.SessionReset(side) }

// Send queues m for side, after every frame queued before; the service's stream table
// counts it as if the other side had sent it. It returns ErrNotConnected if side has
// no WebSocket, or the encoder's error.
func (t *Tunnel) Send(side Side, m *tunnel.Message) error { return t.dp.Send(side, m) }

// SendRaw queues b, which should be whole frames, for side as is.
func (t *Tunnel) SendRaw(side Side, b []byte) error { return t.dp.SendRaw(side, b) }

// SendText writes b to side as one WebSocket text message, which the service never
// sends (spec §1.2). It is written at once, not after the frames queued for side.
func (t *Tunnel) SendText(side Side, b []byte) error { return t.dp.SendText(side, b) }

// Close closes the tunnel, as CloseTunnel does: both sides get a Close frame with
// status 1000 after what is already queued for them, the tokens become invalid and
// later handshakes get 400. It does not wait for the close handshakes.
func (t *Tunnel) Close() { t.dp.Close() }

// Connects returns the number of successful handshakes of side so far.
func (t *Tunnel) Connects(side Side) int { return t.dp.Connects(side) }

// Connected reports whether side has a WebSocket.
func (t *Tunnel) Connected(side Side) bool { return t.dp.Connected(side) }

// WaitConnects waits until side has had at least n successful handshakes and is
// connected. It fails when ctx ends or the tunnel is closed.
func (t *Tunnel) WaitConnects(ctx context.Context, side Side, n int) error {
	return t.dp.WaitConnects(ctx, side, n)
}

// Record turns recording of the frames received from both sides on or off.
func (t *Tunnel) Record(on bool) { t.dp.Record(on) }

// Received returns the frames recorded from side, in order, including the one that
// broke a rule or triggered DropAfter.
func (t *Tunnel) Received(side Side) []Frame { return t.dp.Received(side) }

// SetPong turns the answering of WebSocket pings on (the default) or off.
func (t *Tunnel) SetPong(on bool) { t.dp.SetPong(on) }

// Pongs returns how many pongs the tunnel's connections have been sent.
func (t *Tunnel) Pongs() int64 { return t.dp.Pongs() }
