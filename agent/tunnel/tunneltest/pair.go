package tunneltest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// The end-to-end harness shared by agent/tunnel's tests (against this fake) and
// tools/tunneld's (against the real service): echo targets, byte-checked round trips,
// and a Source and a Destination running against one tunnel.

// ServeTCP starts a TCP server on 127.0.0.1 that hands every connection to
// serve (which closes it) and returns its address. It stops when the test
// ends, once every serve has returned.
func ServeTCP(tb testing.TB, serve func(net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
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
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// RefusingTarget is a service target whose connections are refused: a Unix
// socket whose listener is gone. A freed TCP port can be taken by another
// test meanwhile; then the dial was answered, and a test waiting for the
// refusal waited out its timeout (once in CI).
func RefusingTarget(tb testing.TB) string {
	tb.Helper()
	sock := filepath.Join(tb.TempDir(), "refuse.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		tb.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	return "unix:" + sock
}

// EchoServer starts a TCP server on 127.0.0.1 that answers every connection with its
// input XORed with key, so that data routed to the wrong service cannot pass a
// byte-for-byte check. It stops when the test ends.
func EchoServer(tb testing.TB, key byte) string {
	tb.Helper()
	return ServeTCP(tb, func(c net.Conn) {
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
	})
}

// ConnectedTunnel opens a tunnel of service on a new fake service and runs a
// destination for it that dials target, until the test ends. It returns once
// the destination is connected: the service drops what arrives for an absent
// peer, so a source that started first could lose its STREAM_START.
func ConnectedTunnel(tb testing.TB, service, target string) (*Server, *Tunnel) {
	tb.Helper()
	srv := NewServer(tb)
	tun := srv.OpenTunnel(service)
	d := &tunnel.Destination{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true,
		AccessToken: mustToken(tb, tun.DestinationToken)}, Dialer: tunnel.Targets{service: target}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, startWait)
	defer wcancel()
	if err := tun.WaitConnects(wctx, Destination, 1); err != nil {
		tb.Fatalf("destination did not connect within %v: %v", startWait, err)
	}
	return srv, tun
}

// RoundTrip sends size random bytes through addr and checks the echo of an
// EchoServer with key.
func RoundTrip(addr string, key byte, size int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return RoundTripConn(c, key, size)
}

// RoundTripConn is RoundTrip over an open connection.
func RoundTripConn(c net.Conn, key byte, size int) error {
	data := make([]byte, size)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, size)
	// Long: the race detector on a loaded 2-core machine moves ~0.65 MiB/s
	// each way, and a connection may wait its turn for 45 s.
	c.SetReadDeadline(time.Now().Add(180 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		c.Close() // unblock the writer
		<-errc
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

// Transfer runs perService concurrent round trips of size bytes on every service of
// keys (service → echo key) through p, and reports each failure.
func Transfer(tb testing.TB, p *Pair, keys map[string]byte, perService, size int) {
	tb.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, perService*len(keys))
	for svc, key := range keys {
		for range perService {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := RoundTrip(p.Addr(svc), key, size); err != nil {
					errc <- fmt.Errorf("%s: %w", svc, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		tb.Error(err)
	}
}

// ThreeTargets starts an echo server for each of the services SSH, WEB and VNC.
func ThreeTargets(tb testing.TB) (tunnel.Targets, map[string]byte) {
	keys := map[string]byte{"SSH": 0x11, "WEB": 0x22, "VNC": 0x33}
	tg := tunnel.Targets{}
	for s, k := range keys {
		tg[s] = EchoServer(tb, k)
	}
	return tg, keys
}

// Logger writes to the test's log.
func Logger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// PairConfig describes a Source and a Destination for StartPair.
type PairConfig struct {
	// Config is the connection both sides use: Endpoint, TLS, Protocol. Tokens come
	// from the fields below; zero retry bounds become fast ones; a nil Logger logs to
	// the test.
	Config                        tunnel.Config
	SourceToken, DestinationToken string
	// Tunnel is the service's side of the tunnel, to wait for the destination.
	Tunnel *dataplane.Tunnel
	// Services get a listener each on 127.0.0.1:0 (one unnamed one when empty).
	Services []string
	Targets  tunnel.Dialer
	Peer     tunnel.Version // Source.PeerVersion
	// Tweaks, applied before the Runs start.
	Destination func(*tunnel.Destination)
	Source      func(*tunnel.Source)
	NoSource    bool
}

// Pair is a running Source and Destination. Their Run results arrive on DstErr and
// SrcErr; a reader that takes one should put it back for the cleanup.
type Pair struct {
	Dst    *tunnel.Destination
	Src    *tunnel.Source
	DstErr chan error
	SrcErr chan error

	mu    sync.Mutex
	addrs map[string]string
}

// Addr is the listen address of service on the source side.
func (p *Pair) Addr(service string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[service]
}

func mustToken(tb testing.TB, s string) tunnel.Token {
	tok, err := tunnel.NewAccessToken(s)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// startWait bounds StartPair's waits for the source to listen and the
// destination to connect.
const startWait = 30 * time.Second

// StartPair runs the pair until the test ends, and returns once the source listens
// and the destination is connected.
func StartPair(tb testing.TB, pc PairConfig) *Pair {
	tb.Helper()
	p := &Pair{addrs: map[string]string{}, DstErr: make(chan error, 1), SrcErr: make(chan error, 1)}
	base := pc.Config
	if base.RetryMin == 0 {
		base.RetryMin, base.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	}
	if base.Logger == nil {
		base.Logger = Logger(tb)
	}
	p.Dst = &tunnel.Destination{Config: base, Dialer: pc.Targets}
	p.Dst.AccessToken = mustToken(tb, pc.DestinationToken)
	listen := map[string]string{}
	for _, s := range pc.Services {
		listen[s] = "127.0.0.1:0"
	}
	if len(pc.Services) == 0 {
		listen[""] = "127.0.0.1:0"
	}
	ready := make(chan struct{})
	p.Src = &tunnel.Source{Config: base, Listen: listen, PeerVersion: pc.Peer}
	p.Src.AccessToken = mustToken(tb, pc.SourceToken)
	p.Src.OnListen = func(service string, addr net.Addr) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.addrs[service] = addr.String()
		if len(p.addrs) == len(listen) {
			close(ready)
		}
	}
	if pc.Destination != nil {
		pc.Destination(p.Dst)
	}
	if pc.Source != nil {
		pc.Source(p.Src)
	}
	ctx, cancel := context.WithCancel(context.Background())
	chans := []chan error{p.DstErr}
	go func() { p.DstErr <- p.Dst.Run(ctx) }()
	if !pc.NoSource {
		chans = append(chans, p.SrcErr)
		go func() { p.SrcErr <- p.Src.Run(ctx) }()
	}
	tb.Cleanup(func() {
		cancel()
		for _, ch := range chans {
			select {
			case err := <-ch:
				if err != nil && !errors.Is(err, tunnel.ErrClosedByService) {
					tb.Errorf("Run returned %v after cancel", err)
				}
			case <-time.After(10 * time.Second):
				tb.Error("Run did not return after cancel")
			}
		}
	})
	// Both take a tenth of a second or so, over loopback. A 10 s wait ran out
	// once in CI under qemu-user (the source logged it was connecting, then
	// nothing), with no cause found: a machine that stood still (qemu-test.sh
	// now says when), or a SYN dropped (a DROP rule TestDeadPathRedialed left,
	// now marked and checked; a SYN retransmitted comes 1, 3, 7, 15 s later).
	// A longer wait costs nothing when it works.
	if !pc.NoSource {
		select {
		case <-ready:
		case err := <-p.SrcErr:
			p.SrcErr <- err
			tb.Fatalf("source ended before listening: %v", err)
		case <-time.After(startWait):
			tb.Fatalf("source did not listen within %v", startWait)
		}
	}
	wctx, wcancel := context.WithTimeout(context.Background(), startWait)
	defer wcancel()
	if err := pc.Tunnel.WaitConnects(wctx, dataplane.Destination, 1); err != nil {
		tb.Fatalf("destination did not connect within %v: %v", startWait, err)
	}
	return p
}
