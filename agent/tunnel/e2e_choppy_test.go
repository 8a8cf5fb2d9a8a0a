package tunnel_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// The end-to-end tests above move data in big writes to echo targets that
// read as fast as they can. A buffer kept past the next read, or handed to a
// writer and reused before that writer is done with it, only shows when data
// arrives in pieces of other sizes and the consumer lags: these tests cut every
// write and every read at random sizes, stall at random on both ends and in
// the targets, and compare every byte. The targets are a TCP echo server and
// an in-process Pipe (the path of the agent's own SSH server); the service
// re-cuts its messages (Rechunk), so frames straddle WebSocket messages.

// echo answers c with its input XORed with key, reading and writing in random
// pieces with stalls, through one reused buffer, until c ends.
func choppyEcho(ch *tunneltest.Choppy, c net.Conn, key byte) {
	defer c.Close()
	buf := make([]byte, 96<<10)
	for {
		n, err := c.Read(buf[:ch.Piece()])
		for i := range buf[:n] {
			buf[i] ^= key
		}
		if n > 0 && ch.Write(c, buf[:n]) != nil {
			return
		}
		if err != nil {
			return
		}
		ch.Stall()
	}
}

// choppyTargets serves "TCP" with a TCP echo server and "PIPE" with an
// in-process Pipe, both choppy, with keys 0x5c and 0xc5.
func choppyTargets(t *testing.T) (tunnel.Dialer, map[string]byte) {
	keys := map[string]byte{"TCP": 0x5c, "PIPE": 0xc5}
	var seed sync.Mutex
	next := uint64(1)
	newSeed := func() uint64 { seed.Lock(); defer seed.Unlock(); next++; return next }
	addr := tunneltest.ServeTCP(t, func(c net.Conn) { choppyEcho(tunneltest.NewChoppy(newSeed()), c, keys["TCP"]) })
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	return tunnel.DialerFunc(func(ctx context.Context, service string) (net.Conn, error) {
		switch service {
		case "TCP":
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		case "PIPE":
			a, b := tunnel.Pipe()
			wg.Add(1)
			go func() { defer wg.Done(); choppyEcho(tunneltest.NewChoppy(newSeed()), b, keys["PIPE"]) }()
			return a, nil
		}
		return nil, fmt.Errorf("%w %q", tunnel.ErrUnknownService, service)
	}), keys
}

// choppyRoundTrip sends size random bytes to addr in choppy pieces while reading
// the echo in choppy pieces, and compares every byte.
func choppyRoundTrip(addr string, key byte, size int, seed uint64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	return choppyRoundTripConn(c, key, size, seed)
}

// choppyRoundTripConn is choppyRoundTrip over c, which it closes.
func choppyRoundTripConn(c net.Conn, key byte, size int, seed uint64) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	rng := rand.New(rand.NewPCG(seed, 7))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	errc := make(chan error, 1)
	go func() { errc <- tunneltest.NewChoppy(seed*2+1).Write(c, data) }()
	got := make([]byte, size)
	rerr := tunneltest.NewChoppy(seed*2).ReadFull(c, got)
	if rerr != nil {
		c.Close()
	}
	if werr := <-errc; werr != nil && rerr == nil {
		return fmt.Errorf("writing: %w", werr)
	}
	if rerr != nil {
		return fmt.Errorf("reading echo: %w", rerr)
	}
	for i := range data {
		data[i] ^= key
	}
	if !bytes.Equal(got, data) {
		i := 0
		for got[i] == data[i] {
			i++
		}
		bad := 0
		for j := i; j < size; j++ {
			if got[j] != data[j] {
				bad++
			}
		}
		return fmt.Errorf("echo differs from byte %d of %d (%d bytes differ): got %x…, want %x…",
			i, size, bad, got[i:min(i+16, size)], data[i:min(i+16, size)])
	}
	return nil
}

// TestEndToEndChoppy pushes data through source, service and destination to
// a TCP target and an in-process Pipe, for each protocol version, with every
// read and write cut at random and stalls on every end; every byte is checked.
func TestEndToEndChoppy(t *testing.T) {
	size := 384 << 10
	if raceEnabled {
		size = 160 << 10
	}
	for _, tc := range []struct {
		v        tunnel.Version
		services []string
		conns    int // concurrent connections per service (V3), else sequential
	}{
		{tunnel.V3, []string{"TCP", "PIPE"}, 4},
		{tunnel.V2, []string{"TCP", "PIPE"}, 2},
		{tunnel.V1, []string{"PIPE"}, 2},
	} {
		t.Run(tc.v.String(), func(t *testing.T) {
			targets, keys := choppyTargets(t)
			st := setup{services: tc.services, targets: targets, protocol: tc.v, peer: tc.v}
			if tc.v == tunnel.V1 {
				st.dstTweak = func(d *tunnel.Destination) { d.DefaultService = "PIPE" }
			}
			h := newHarness(t, st)
			h.tun.Rechunk(int64(tc.v))
			var wg sync.WaitGroup
			for si, svc := range tc.services {
				if tc.v == tunnel.V3 {
					for i := range tc.conns {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if err := choppyRoundTrip(h.addr(svc), keys[svc], size, uint64(100*si+i+1)); err != nil {
								t.Errorf("%s connection %d: %v", svc, i, err)
							}
						}()
					}
					// And one through DialService, as the web console's
					// terminals go (a net.Pipe, no listener).
					wg.Add(1)
					go func() {
						defer wg.Done()
						c, err := h.Src.DialService(ctxTimeout(t, 30*time.Second), svc)
						if err == nil {
							err = choppyRoundTripConn(c, keys[svc], size, uint64(100*si+99))
						}
						if err != nil {
							t.Errorf("%s through DialService: %v", svc, err)
						}
					}()
					continue
				}
				wg.Add(1)
				go func() { // one connection per stream at a time
					defer wg.Done()
					for i := range tc.conns {
						if err := choppyRoundTrip(h.addr(svc), keys[svc], size, uint64(100*si+i+1)); err != nil {
							t.Errorf("%s connection %d: %v", svc, i, err)
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}
