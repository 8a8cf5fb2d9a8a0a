package tunneld

// The source ↔ destination end-to-end suite of agent/tunnel, run against tunneld
// instead of the fake (agent/tunnel's tests may not import tools/): the real
// tunnel.Source and tunnel.Destination, several services and concurrent connections,
// every byte checked, V1, V2 and V3, plain and TLS, and the service-side events that
// only tunneld has (CloseTunnel, expiry, rotation, DescribeTunnel states).

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// pair is a Source and a Destination running against a tunneld tunnel, with the
// harness agent/tunnel's suite uses against the fake (tunneltest).
type pair struct {
	*tunneltest.Pair
	out *OpenTunnelOutput
	dp  *dataplane.Tunnel
}

type pairSetup struct {
	services []string
	targets  tunnel.Targets
	protocol tunnel.Version // both sides offer it; 0 is V3
	peer     tunnel.Version // Source.PeerVersion
	endpoint string         // default ws://ADDR
	caFile   string
	dstTweak func(*tunnel.Destination)
}

func startPair(t *testing.T, ts *testServer, st pairSetup) *pair {
	t.Helper()
	p := &pair{out: ts.open(t, "dev1", st.services...)}
	p.dp = ts.Dataplane(p.out.TunnelID)
	endpoint := st.endpoint
	if endpoint == "" {
		endpoint = "ws://" + ts.addr
	}
	p.Pair = tunneltest.StartPair(t, tunneltest.PairConfig{
		Config:           tunnel.Config{Endpoint: endpoint, AllowInsecureWebSocket: true, CAFile: st.caFile, Protocol: st.protocol, Logger: testLogger(t)},
		SourceToken:      p.out.SourceAccessToken,
		DestinationToken: p.out.DestinationAccessToken,
		Tunnel:           p.dp,
		Services:         st.services,
		Targets:          st.targets,
		Peer:             st.peer,
		Destination:      st.dstTweak,
	})
	return p
}

var (
	echoServer   = tunneltest.EchoServer
	roundTrip    = tunneltest.RoundTrip
	threeTargets = func(t *testing.T) (tunnel.Targets, map[string]byte) { return tunneltest.ThreeTargets(t) }
	transfer     = func(t *testing.T, p *pair, keys map[string]byte, perService, size int) {
		t.Helper()
		tunneltest.Transfer(t, p.Pair, keys, perService, size)
	}
	threeServices = []string{"SSH", "WEB", "VNC"}
)

func mustToken(t *testing.T, s string) tunnel.Token {
	tok, err := tunnel.NewAccessToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestEndToEndV3(t *testing.T) {
	ts := startServer(t, Config{})
	targets, keys := threeTargets(t)
	p := startPair(t, ts, pairSetup{services: threeServices, targets: targets})
	p.dp.Rechunk(1)
	transfer(t, p, keys, 8, 256<<10)

	d, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: p.out.TunnelID})
	if err != nil {
		t.Fatal(err)
	}
	if s, dst := d.Tunnel.SourceConnectionState.Status, d.Tunnel.DestinationConnectionState.Status; s != StatusConnected || dst != StatusConnected {
		t.Errorf("connection states %s, %s; want CONNECTED, CONNECTED", s, dst)
	}
}

// V2 carries one connection per service at a time: each service moves its data over
// one connection, then over a second one that starts a new stream.
func TestEndToEndV2(t *testing.T) {
	ts := startServer(t, Config{})
	targets, keys := threeTargets(t)
	p := startPair(t, ts, pairSetup{services: threeServices, targets: targets, protocol: tunnel.V2, peer: tunnel.V2})
	p.dp.Rechunk(2)
	var wg sync.WaitGroup
	for svc, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2 {
				if err := roundTrip(p.Addr(svc), key, 256<<10); err != nil {
					t.Errorf("%s connection %d: %v", svc, i, err)
				}
			}
		}()
	}
	wg.Wait()
}

func TestEndToEndV1(t *testing.T) {
	ts := startServer(t, Config{})
	addr := echoServer(t, 0x5a)
	p := startPair(t, ts, pairSetup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, protocol: tunnel.V1, peer: tunnel.V1,
		dstTweak: func(d *tunnel.Destination) { d.DefaultService = "SSH" }})
	p.dp.Rechunk(3)
	for i := range 2 {
		if err := roundTrip(p.Addr("SSH"), 0x5a, 256<<10); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
}

func TestEndToEndTLS(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	ts := startServer(t, Config{TLS: pki.ServerTLS(t, "tunneld")})
	targets, keys := threeTargets(t)
	p := startPair(t, ts, pairSetup{services: threeServices, targets: targets, endpoint: "wss://" + ts.addr, caFile: pki.CAFile})
	transfer(t, p, keys, 2, 64<<10)
}

// Faults from the service: a dropped destination reconnects with its client token,
// SESSION_RESET to both sides, 5xx answers that are retried, and a bandwidth limit
// that slows a transfer down. (The STREAM_RESET the source hears when the
// destination comes back is checked by dataplane's TestFormatKeptAcrossPeerReconnect
// and agent/tunnel's TestReconnectAfterDroppedLink.)
func TestEndToEndFaults(t *testing.T) {
	ts := startServer(t, Config{})
	targets, keys := threeTargets(t)
	p := startPair(t, ts, pairSetup{services: threeServices, targets: targets})
	transfer(t, p, keys, 1, 32<<10)

	ts.FailHandshakes(2, 503, "busy")
	p.dp.Drop(dataplane.Destination)
	if err := p.dp.WaitConnects(ctxTimeout(t, 10*time.Second), dataplane.Destination, 2); err != nil {
		t.Fatalf("destination did not reconnect after a drop and two 503s: %v", err)
	}
	eventually(t, func() error { return roundTrip(p.Addr("SSH"), keys["SSH"], 32<<10) })

	p.dp.SessionReset(dataplane.Source)
	p.dp.SessionReset(dataplane.Destination)
	eventually(t, func() error { return roundTrip(p.Addr("WEB"), keys["WEB"], 32<<10) })

	const rate = 256 << 10
	p.dp.SetBandwidth(rate)
	start := time.Now()
	transfer(t, p, map[string]byte{"VNC": keys["VNC"]}, 1, 256<<10) // 512 KiB through the service
	if el := time.Since(start); el < 700*time.Millisecond {
		t.Errorf("512 KiB at %d B/s took %v, want about 1 s", rate, el)
	}
	p.dp.SetBandwidth(0)
}

// eventually retries f for a few seconds: after a reset the first local connection
// may race the new stream.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCloseTunnelEndsBothSides(t *testing.T) {
	ts := startServer(t, Config{})
	addr := echoServer(t, 1)
	p := startPair(t, ts, pairSetup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}})
	if err := roundTrip(p.Addr("SSH"), 1, 1024); err != nil {
		t.Fatal(err)
	}
	if err := ts.CloseTunnel(context.Background(), &CloseTunnelInput{TunnelID: p.out.TunnelID}); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"destination": p.DstErr, "source": p.SrcErr} {
		select {
		case err := <-ch:
			if !errors.Is(err, tunnel.ErrClosedByService) {
				t.Errorf("%s Run = %v, want ErrClosedByService", name, err)
			}
			ch <- err
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still running after CloseTunnel", name)
		}
	}
	d, _ := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: p.out.TunnelID})
	if d.Tunnel.Status != StatusClosed || d.Tunnel.SourceConnectionState.Status != StatusDisconnected || d.Tunnel.DestinationConnectionState.Status != StatusDisconnected {
		t.Errorf("after CloseTunnel: %s, %s, %s; want CLOSED, DISCONNECTED, DISCONNECTED",
			d.Tunnel.Status, d.Tunnel.SourceConnectionState.Status, d.Tunnel.DestinationConnectionState.Status)
	}
}

func TestRotatedDestinationReplacesOld(t *testing.T) {
	ts := startServer(t, Config{})
	addr := echoServer(t, 9)
	p := startPair(t, ts, pairSetup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}})
	out, err := ts.RotateTunnelAccessToken(context.Background(), &RotateTunnelAccessTokenInput{TunnelID: p.out.TunnelID, ClientMode: ClientModeDestination})
	if err != nil {
		t.Fatal(err)
	}
	// A second destination with the new token takes over, as an agent does on a
	// rotation notification; the old one, closed, ends without a reconnect.
	d2 := &tunnel.Destination{Config: p.Dst.Config, Dialer: tunnel.Targets{"SSH": addr}}
	d2.AccessToken = mustToken(t, out.DestinationAccessToken)
	d2.ClientToken = tunnel.Token{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d2.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := p.dp.WaitConnects(ctxTimeout(t, 10*time.Second), dataplane.Destination, 2); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.DstErr:
		if !errors.Is(err, tunnel.ErrClosedByService) {
			t.Errorf("old destination Run = %v, want ErrClosedByService", err)
		}
		p.DstErr <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("old destination still running after its token was rotated and it was replaced")
	}
	eventually(t, func() error { return roundTrip(p.Addr("SSH"), 9, 4096) })
}

// Rotation revokes: the side connected with the rotated token gets a Close frame,
// 1008 with CloseReasonTokenRotated, and its Run ends with it at once, on its
// first connection (a cut would make it reconnect with the revoked token); a
// reconnect with that token anyway is refused with BodyTokenRotated; the other
// side, which stays, gets SESSION_RESET. The new token connects.
func TestRotateClosesTheRevokedSide(t *testing.T) {
	for _, tc := range []struct {
		mode   string
		closed []dataplane.Side
		survor dataplane.Side // -1: none
	}{
		{ClientModeSource, []dataplane.Side{dataplane.Source}, dataplane.Destination},
		{ClientModeDestination, []dataplane.Side{dataplane.Destination}, dataplane.Source},
		{ClientModeAll, []dataplane.Side{dataplane.Source, dataplane.Destination}, -1},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ts := startServer(t, Config{})
			addr := echoServer(t, 3)
			p := startPair(t, ts, pairSetup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}})
			if err := roundTrip(p.Addr("SSH"), 3, 1024); err != nil {
				t.Fatal(err)
			}
			out, err := ts.RotateTunnelAccessToken(context.Background(), &RotateTunnelAccessTokenInput{TunnelID: p.out.TunnelID, ClientMode: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			errs := map[dataplane.Side]chan error{dataplane.Source: p.SrcErr, dataplane.Destination: p.DstErr}
			old := map[dataplane.Side]string{dataplane.Source: p.out.SourceAccessToken, dataplane.Destination: p.out.DestinationAccessToken}
			want := "status 1008 " + CloseReasonTokenRotated
			for _, side := range tc.closed {
				select {
				case err := <-errs[side]:
					if !errors.Is(err, tunnel.ErrClosedByService) || !strings.Contains(err.Error(), want) {
						t.Errorf("%v Run = %v, want ErrClosedByService with %q", side, err, want)
					}
					errs[side] <- nil
				case <-time.After(10 * time.Second):
					t.Fatalf("%v still running after its token was rotated", side)
				}
				if n := p.dp.Connects(side); n != 1 {
					t.Errorf("%v connected %d times, want once: it reconnected with its revoked token", side, n)
				}
				if _, status, body := dialWS(t, ts.addr, side.String(), old[side], ""); status != 400 || body != BodyTokenRotated {
					t.Errorf("%v reconnect with the revoked token: %d %q, want 400 %q", side, status, body, BodyTokenRotated)
				}
			}
			if tc.survor >= 0 {
				if !p.dp.Connected(tc.survor) || p.dp.Connects(tc.survor) != 1 {
					t.Errorf("%v connected %v after %d connects, want it kept on its first", tc.survor, p.dp.Connected(tc.survor), p.dp.Connects(tc.survor))
				}
			}
			// The new tokens work.
			if out.SourceAccessToken != "" {
				s2 := &tunnel.Source{Config: p.Src.Config, Listen: map[string]string{"SSH": "127.0.0.1:0"}}
				s2.AccessToken, s2.ClientToken = mustToken(t, out.SourceAccessToken), tunnel.Token{}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- s2.Run(ctx) }()
				defer func() { cancel(); <-done }()
				if err := p.dp.WaitConnects(ctxTimeout(t, 10*time.Second), dataplane.Source, 2); err != nil {
					t.Fatal(err)
				}
			}
			if out.DestinationAccessToken != "" {
				d2 := &tunnel.Destination{Config: p.Dst.Config, Dialer: tunnel.Targets{"SSH": addr}}
				d2.AccessToken, d2.ClientToken = mustToken(t, out.DestinationAccessToken), tunnel.Token{}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- d2.Run(ctx) }()
				defer func() { cancel(); <-done }()
				if err := p.dp.WaitConnects(ctxTimeout(t, 10*time.Second), dataplane.Destination, 2); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
