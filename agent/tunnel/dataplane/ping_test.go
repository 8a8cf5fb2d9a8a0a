package dataplane

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// slowConn reads at most 1 KiB every 250 ms: a client on a ~4 KB/s downlink.
type slowConn struct{ net.Conn }

func (c slowConn) Read(p []byte) (int, error) {
	time.Sleep(250 * time.Millisecond)
	return c.Conn.Read(p[:min(len(p), 1024)])
}

// A destination on a slow downlink, receiving a bulk transfer and reading all
// the while, sends its keepalive ping. The writer's 64 KiB frame in flight takes
// longer to reach it than the 5 s coder/websocket gives a pong it writes itself;
// spec §3.7 lets the service answer late or not at all, not cut the client.
func TestPingDuringSlowTransferKeepsReader(t *testing.T) {
	s := newTestServer(t)
	tun := s.OpenTunnel("SSH")
	h := http.Header{}
	h.Set("access-token", tun.DestinationToken)
	dialer := &net.Dialer{}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c.(*net.TCPConn).SetReadBuffer(16 << 10)
		return slowConn{c}, nil
	}}}
	ctx := context.Background()
	dst, _, err := websocket.Dial(ctx, s.URL+"/tunnel?local-proxy-mode=destination", &websocket.DialOptions{
		HTTPClient: hc, HTTPHeader: h, Subprotocols: []string{SubprotocolV3}})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.CloseNow()
	dst.SetReadLimit(tunnel.MaxWebSocketMessage)
	go func() { // the client reads everything, slowly
		for {
			if _, _, err := dst.Read(ctx); err != nil {
				return
			}
		}
	}()
	if err := tun.WaitConnects(ctx, Destination, 1); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	fill := make(chan struct{})
	go func() { // the transfer toward the destination
		defer close(fill)
		payload := make([]byte, 60000)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if tun.Send(Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: payload}) != nil {
				return
			}
		}
	}()
	defer func() { close(stop); dst.CloseNow(); <-fill }()
	time.Sleep(2 * time.Second) // buffers fill; the writer now waits on the slow client

	// Past the library's 5 s for a pong: no pong yet is fine, a cut is not.
	pctx, cancel := context.WithTimeout(ctx, 7*time.Second)
	defer cancel()
	perr := dst.Ping(pctx)
	time.Sleep(time.Second)
	if !tun.Connected(Destination) {
		t.Errorf("the reading destination was cut after its ping (ping: %v)", perr)
	}
}

// With a bandwidth limit of 8000 B/s, a full frame puts the tunnel's bucket
// about 7 s in debt. A ping that comes then waits for the bucket, past the 5 s
// coder/websocket gives a pong it writes itself; the pinging side, which reads
// everything, stays connected and gets its pong late.
func TestPingUnderBandwidthLimitAnsweredLate(t *testing.T) {
	_, tun, src, dst := pair(t, "SSH")
	tun.SetBandwidth(8000)
	defer tun.SetBandwidth(0)
	ctx := context.Background()
	src.Send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
	dst.MustNext()
	go func() { // the destination reads all that comes
		for {
			if _, _, err := dst.WS.Read(ctx); err != nil {
				return
			}
		}
	}()
	b, _ := tunnel.AppendFrame(nil, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: make([]byte, tunnel.MaxPayload)})
	if err := src.WS.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
	// The source's reader has taken it: the bucket is in debt.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		tun.limit.mu.Lock()
		debt := tun.limit.tokens < 0
		tun.limit.mu.Unlock()
		if debt {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("after 30 s the tunnel's bucket is not in debt for the full frame")
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := dst.WS.Ping(pctx); err != nil {
		t.Errorf("Ping under the bandwidth limit: %v", err)
	}
	if !tun.Connected(Destination) {
		t.Error("the destination was cut after its ping under the bandwidth limit")
	}
}
