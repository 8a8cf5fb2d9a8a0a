package tunneld

// The source ↔ destination end-to-end suite of agent/tunnel, run against tunneld
// instead of the fake (agent/tunnel's tests may not import tools/): the real
// tunnel.Source and tunnel.Destination, several services and concurrent connections,
// every byte checked, V1, V2 and V3, plain and TLS, and the service-side events that
// only tunneld has (CloseTunnel, expiry, rotation, DescribeTunnel states).

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/tools/internal/mqtttest"
)

// echoServer answers every connection with its input XORed with key, so that data
// routed to the wrong service fails the byte-for-byte check.
func echoServer(t *testing.T, key byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					for i := range buf[:n] {
						buf[i] ^= key
					}
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends size random bytes through addr and checks the XORed echo.
func roundTrip(addr string, key byte, size int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	data := make([]byte, size)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, size)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	for i := range got {
		if got[i] != data[i]^key {
			return fmt.Errorf("byte %d of %d: got %#x, want %#x", i, size, got[i], data[i]^key)
		}
	}
	return nil
}

// pair is a Source and a Destination running against a tunneld tunnel.
type pair struct {
	t      *testing.T
	ts     *testServer
	out    *OpenTunnelOutput
	dp     *dataplane.Tunnel
	dst    *tunnel.Destination
	src    *tunnel.Source
	dstErr chan error
	srcErr chan error

	mu    sync.Mutex
	addrs map[string]string
	ready chan struct{}
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
	p := &pair{t: t, ts: ts, addrs: map[string]string{}, ready: make(chan struct{}),
		dstErr: make(chan error, 1), srcErr: make(chan error, 1)}
	p.out = ts.open(t, "dev1", st.services...)
	p.dp = ts.Dataplane(p.out.TunnelID)
	endpoint := st.endpoint
	if endpoint == "" {
		endpoint = "ws://" + ts.addr
	}
	base := tunnel.Config{
		Endpoint:               endpoint,
		AllowInsecureWebSocket: true,
		CAFile:                 st.caFile,
		Protocol:               st.protocol,
		RetryMin:               20 * time.Millisecond,
		RetryMax:               200 * time.Millisecond,
		Logger:                 testLogger(t),
	}
	p.dst = &tunnel.Destination{Config: base, Dialer: st.targets}
	p.dst.AccessToken = mustToken(t, p.out.DestinationAccessToken)
	listen := map[string]string{}
	for _, s := range st.services {
		listen[s] = "127.0.0.1:0"
	}
	p.src = &tunnel.Source{Config: base, Listen: listen, PeerVersion: st.peer}
	p.src.AccessToken = mustToken(t, p.out.SourceAccessToken)
	p.src.OnListen = func(service string, addr net.Addr) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.addrs[service] = addr.String()
		if len(p.addrs) == len(listen) {
			close(p.ready)
		}
	}
	if st.dstTweak != nil {
		st.dstTweak(p.dst)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { p.dstErr <- p.dst.Run(ctx) }()
	go func() { p.srcErr <- p.src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for _, ch := range []chan error{p.dstErr, p.srcErr} {
			select {
			case err := <-ch:
				if err != nil && !errors.Is(err, tunnel.ErrClosedByService) {
					t.Errorf("Run returned %v after cancel", err)
				}
				ch <- err // for later readers
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		}
	})
	select {
	case <-p.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("source did not listen")
	}
	if err := p.dp.WaitConnects(ctxTimeout(t, 10*time.Second), dataplane.Destination, 1); err != nil {
		t.Fatalf("destination did not connect: %v", err)
	}
	return p
}

func (p *pair) addr(service string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[service]
}

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

var threeServices = []string{"SSH", "WEB", "VNC"}

func threeTargets(t *testing.T) (tunnel.Targets, map[string]byte) {
	keys := map[string]byte{"SSH": 0x11, "WEB": 0x22, "VNC": 0x33}
	tg := tunnel.Targets{}
	for s, k := range keys {
		tg[s] = echoServer(t, k)
	}
	return tg, keys
}

// transfer runs perService concurrent round trips of size bytes on every service.
func transfer(t *testing.T, p *pair, keys map[string]byte, perService, size int) {
	t.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, perService*len(keys))
	for svc, key := range keys {
		for range perService {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := roundTrip(p.addr(svc), key, size); err != nil {
					errc <- fmt.Errorf("%s: %w", svc, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
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
				if err := roundTrip(p.addr(svc), key, 256<<10); err != nil {
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
		if err := roundTrip(p.addr("SSH"), 0x5a, 256<<10); err != nil {
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

// Faults from the service: a dropped destination reconnects with its client token
// (and the source hears STREAM_RESET), SESSION_RESET to both sides, 5xx answers that
// are retried, and a bandwidth limit that slows a transfer down.
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
	eventually(t, func() error { return roundTrip(p.addr("SSH"), keys["SSH"], 32<<10) })

	p.dp.SessionReset(dataplane.Source)
	p.dp.SessionReset(dataplane.Destination)
	eventually(t, func() error { return roundTrip(p.addr("WEB"), keys["WEB"], 32<<10) })

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
	if err := roundTrip(p.addr("SSH"), 1, 1024); err != nil {
		t.Fatal(err)
	}
	if err := ts.CloseTunnel(context.Background(), &CloseTunnelInput{TunnelID: p.out.TunnelID}); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"destination": p.dstErr, "source": p.srcErr} {
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
	// rotation notification; the old one, cut, cannot reconnect with its revoked token.
	d2 := &tunnel.Destination{Config: p.dst.Config, Dialer: tunnel.Targets{"SSH": addr}}
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
	case err := <-p.dstErr:
		var he *tunnel.HandshakeError
		if !errors.As(err, &he) || he.StatusCode != 400 {
			t.Errorf("old destination Run = %v, want a 400 handshake error", err)
		}
		p.dstErr <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("old destination still running after its token was rotated and it was replaced")
	}
	eventually(t, func() error { return roundTrip(p.addr("SSH"), 9, 4096) })
}
