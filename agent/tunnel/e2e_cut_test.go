package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// TestSourceResetsLocalConnectionsOnTunnelLoss: a download through porthole
// connect whose WebSocket drops mid-transfer does not look complete to the
// local client: its connection is reset, not closed with a FIN after which a
// client reads a clean EOF (nc, a dump piped to a file).
func TestSourceResetsLocalConnectionsOnTunnelLoss(t *testing.T) {
	target := endlessTarget(t)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": target}})
	c, err := net.Dial("tcp", h.addr("SSH"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.CopyN(io.Discard, c, 1<<20); err != nil {
		t.Fatalf("before the drop: %v", err)
	}
	h.tun.Drop(tunneltest.Source)
	n, err := io.Copy(io.Discard, c) // io.Copy returns nil at io.EOF
	if err == nil {
		t.Fatalf("after the tunnel was lost mid-transfer the local client read %d more bytes and a clean EOF: "+
			"the truncated stream looks complete; want a reset (ECONNRESET)", n)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read error %v, want ECONNRESET", err)
	}
}

// TestSourceStalledClientIsReset: a local client that does not read for the
// stall timeout is reset, as the log says: when it reads again it does not
// find a clean EOF after what the kernel held, as if the download had ended.
func TestSourceStalledClientIsReset(t *testing.T) {
	target := endlessTarget(t)
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	logged := new(testlog.Lines)
	p := tunneltest.StartPair(t, tunneltest.PairConfig{
		Config:      tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, Logger: slogDebugTo(logged, t)},
		SourceToken: tun.SourceToken, DestinationToken: tun.DestinationToken, Tunnel: tun.Dataplane(),
		Services: []string{"SSH"}, Targets: tunnel.Targets{"SSH": target},
		Source: func(s *tunnel.Source) { s.StallTimeout = 300 * time.Millisecond },
	})
	var d net.Dialer
	c, err := d.Dial("tcp", p.Addr("SSH"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A slow client (a paused pipeline): the source stalls and ends it, once
	// the kernel's buffers and its queue are full (megabytes on loopback:
	// seconds under the race detector on a loaded machine, more than the 2 s
	// this slept in CI).
	for deadline := time.Now().Add(60 * time.Second); logged.Count(`stalled, resetting it" mode=source`) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the source did not reset the stalled client within 60 s")
		}
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err == nil {
		t.Fatalf("the stalled client read %d bytes and a clean EOF: the cut-off stream looks complete; want ECONNRESET", n)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read error %v after %d bytes, want ECONNRESET", err, n)
	}
}

// TestSourceV3DefaultWithV2Destination: porthole connect's default is V3. A
// destination in the V2 format (localproxy 2.x, Device Client) sends DATA
// with no connection id, which a V3 reader takes for id 1 (spec §3.5). Each
// new stream (endIdleStream starts one per connection once the last ended)
// counts its connections from 1 again, so one connection after another works,
// not only the first: with ids counted on, the destination's answers to the
// second were dropped as stale and the operator's second ssh hung.
func TestSourceV3DefaultWithV2Destination(t *testing.T) {
	// A V2-format destination: it answers each STREAM_START with a greeting,
	// without a connection id, and ignores everything else.
	a, streamResets := v2DestinationSource(t, func(answer func(*tunnel.Message)) {
		answer(&tunnel.Message{Type: tunnel.TypeData, Payload: []byte("SSH-2.0-x\r\n")})
	})
	for i := range 2 {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 11)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("local connection %d: no greeting from the V2 destination: %v", i+1, err)
		}
		c.Close()
		// Its stream has ended, at the service too: else the next connection
		// would be a second one on it, which the source refuses.
		waitUntil(t, fmt.Sprintf("local connection %d's STREAM_RESET at the destination", i+1),
			func() bool { return streamResets.Load() >= int32(i+1) })
	}
}

// TestDestinationResetsTargetNotTakingLastData: a local service that does not
// take the data the peer sent before its STREAM_RESET within the stall
// timeout is reset, not closed with a FIN: what it reads then does not end
// cleanly, as if it were everything the client sent.
func TestDestinationResetsTargetNotTakingLastData(t *testing.T) {
	accepted := make(chan net.Conn, 1)
	// Small socket buffers on both ends, so that what the peer sends waits in
	// the link's queue, not in the kernel.
	small := func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = smallSocketBuffers(fd, 4096) })
		if err != nil {
			return err
		}
		return serr
	}
	lc := net.ListenConfig{Control: small}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	dialer := tunnel.DialerFunc(func(ctx context.Context, service string) (net.Conn, error) {
		d := net.Dialer{Control: small}
		return d.DialContext(ctx, "tcp", l.Addr().String())
	})
	tun, send := runRawDestination(t, dialer, 300*time.Millisecond)
	send(tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH", ConnectionID: 1})
	var target net.Conn
	select {
	case target = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("no dial")
	}
	defer target.Close()
	// One payload being written and four queued, more than the sockets
	// hold: not more, or the queue would stall before the reset comes.
	payload := make([]byte, tunnel.MaxPayload)
	for range 5 {
		send(tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: payload})
	}
	send(tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 1, ServiceID: "SSH"})
	probe(t, tun, 500)
	time.Sleep(2 * time.Second) // the service does not read: the drain (300 ms) expires
	target.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, target)
	if err == nil {
		t.Fatalf("the service read %d of %d bytes and a clean EOF: the data cut off looks complete; want ECONNRESET", n, 5*len(payload))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read error %v after %d bytes, want ECONNRESET", err, n)
	}
}

// endlessTarget serves a stream without end (a log tail, a dump, a download).
func endlessTarget(t *testing.T) string {
	return tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
}

// TestSupersededDownloadIsReset: towards a V1/V2 destination a second local
// connection of a service replaces the first (spec §3.3). A download on the
// first is cut short there: its client is reset, not left to read a clean EOF
// as if the download were complete.
func TestSupersededDownloadIsReset(t *testing.T) {
	target := endlessTarget(t)
	for _, v := range []tunnel.Version{tunnel.V2, tunnel.V1} {
		t.Run(v.String(), func(t *testing.T) {
			h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": target}, protocol: v, peer: v,
				dstTweak: func(d *tunnel.Destination) { d.DefaultService = "SSH" }})
			first, err := net.Dial("tcp", h.addr("SSH"))
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			first.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.CopyN(io.Discard, first, 256<<10); err != nil {
				t.Fatalf("before the second connection: %v", err)
			}
			second, err := net.Dial("tcp", h.addr("SSH"))
			if err != nil {
				t.Fatal(err)
			}
			defer second.Close()
			n, err := io.Copy(io.Discard, first) // nil at io.EOF
			if err == nil {
				t.Fatalf("the replaced connection read %d more bytes and a clean EOF: the truncated download looks complete; want ECONNRESET", n)
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read error %v, want ECONNRESET", err)
			}
		})
	}
}

// drained is what one connection to a drainTarget read: how many bytes, and
// how its input ended (nil: a clean end; ECONNRESET: a reset).
type drained struct {
	n   int64
	err error
}

// drainTarget is a target that reads each connection to its end, for at most
// d, and sends what it read on the channel returned (which holds two).
func drainTarget(t *testing.T, d time.Duration) (string, <-chan drained) {
	addr, _, got := startedDrainTarget(t, d)
	return addr, got
}

// startedDrainTarget is drainTarget with started, closed once the target
// has read its first bytes.
func startedDrainTarget(t *testing.T, d time.Duration) (string, <-chan struct{}, <-chan drained) {
	started := make(chan struct{})
	got := make(chan drained, 2)
	var first atomic.Bool
	return tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(d))
		buf := make([]byte, 32<<10)
		k, err := c.Read(buf)
		if k > 0 && first.CompareAndSwap(false, true) {
			close(started)
		}
		n := int64(k)
		switch err {
		case nil:
			var m int64
			m, err = io.Copy(io.Discard, c)
			n += m
		case io.EOF:
			err = nil // a clean end, as io.Copy reports it
		}
		got <- drained{n, err}
	}), started, got
}

// TestSupersededWhileDialingIsResetAtTarget: a stream superseded while the
// destination still dials its target: the connection that then opens is
// reset, where a clean close handed the target an empty upload that looked
// complete.
func TestSupersededWhileDialingIsResetAtTarget(t *testing.T) {
	target, results := drainTarget(t, 20*time.Second)
	release := make(chan struct{})
	var dials atomic.Int32
	dialer := tunnel.DialerFunc(func(ctx context.Context, service string) (net.Conn, error) {
		var d net.Dialer
		if dials.Add(1) == 1 {
			// The first dial answers once the second stream has started: a
			// connection made just as its stream ended.
			<-release
			return d.Dial("tcp", target)
		}
		return d.DialContext(ctx, "tcp", target)
	})
	h := newHarness(t, setup{services: []string{"SSH"}, protocol: tunnel.V2, peer: tunnel.V2,
		dstTweak: func(d *tunnel.Destination) { d.Dialer = dialer }})
	first, err := net.Dial("tcp", h.addr("SSH"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.Write([]byte("the first upload"))
	for dials.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	second, err := net.Dial("tcp", h.addr("SSH"))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	for dials.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	select {
	case r := <-results:
		if !errors.Is(r.err, syscall.ECONNRESET) {
			t.Fatalf("the superseded stream's connection ended at the target with %v, want ECONNRESET", r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the superseded stream's connection did not end at the target")
	}
}

// TestSupersededUploadIsResetAtTarget: the same at the destination, where a
// new STREAM_START supersedes a V1/V2 stream: the device's service, in the
// middle of an upload (a firmware image), is reset, not handed a clean EOF
// as if the client had sent everything.
func TestSupersededUploadIsResetAtTarget(t *testing.T) {
	for _, v := range []tunnel.Version{tunnel.V2, tunnel.V1} {
		t.Run(v.String(), func(t *testing.T) {
			started := make(chan struct{}, 2)
			results := make(chan error, 2)
			target := tunneltest.ServeTCP(t, func(c net.Conn) {
				defer c.Close()
				if _, err := c.Read(make([]byte, 1)); err != nil {
					results <- err
					return
				}
				started <- struct{}{}
				_, err := io.Copy(io.Discard, c)
				results <- err
			})
			h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": target}, protocol: v, peer: v,
				dstTweak: func(d *tunnel.Destination) { d.DefaultService = "SSH" }})
			first, err := net.Dial("tcp", h.addr("SSH"))
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				buf := make([]byte, 32<<10)
				first.SetWriteDeadline(time.Now().Add(20 * time.Second))
				for {
					if _, err := first.Write(buf); err != nil {
						return // reset, once replaced
					}
				}
			}()
			defer func() { first.Close(); <-wrote }()
			select {
			case <-started: // the upload has reached the target
			case err := <-results:
				t.Fatalf("the target got nothing of the upload: %v", err)
			case <-time.After(20 * time.Second):
				t.Fatal("the upload did not reach the target")
			}
			second, err := net.Dial("tcp", h.addr("SSH"))
			if err != nil {
				t.Fatal(err)
			}
			defer second.Close()
			select {
			case err := <-results:
				if err == nil {
					t.Fatal("the replaced upload ended at the target with a clean EOF: the truncated upload looks complete; want ECONNRESET")
				}
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("the target's read error %v, want ECONNRESET", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the replaced upload's target connection did not end")
			}
		})
	}
}

// TestStopMidTransferResetsLocalConnections: stopping porthole connect, or
// the agent, cuts the transfers under way short: the local connection of
// each is reset, not closed with a FIN after which a download (at the
// operator's client) or an upload (at the device's target) looked whole. The
// side stopped resets its own; the other side hears of it as the stopped
// side's STREAM_RESET, which a V3 peer sends for no connection's end (it ends
// one with CONNECTION_RESET), and resets its own as well.
func TestStopMidTransferResetsLocalConnections(t *testing.T) {
	stopSrc := func(src, _ side) { src.stop() }
	stopDst := func(_, dst side) { dst.stop() }
	for _, c := range []struct {
		name string
		stop func(src, dst side)
	}{{"source stops, download", stopSrc}, {"destination stops, download", stopDst}} {
		t.Run(c.name, func(t *testing.T) {
			src, dst := startSides(t, endlessTarget(t))
			conn := dialRead(t, src.addr, 1<<20)
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			got := make(chan error, 1)
			go func() { _, err := io.Copy(io.Discard, conn); got <- err }() // the client reads on
			c.stop(src, dst)
			if err := <-got; !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the client's read ended with %v; want ECONNRESET", err)
			}
		})
	}
	for _, c := range []struct {
		name string
		stop func(src, dst side)
	}{{"destination stops, upload", stopDst}, {"source stops, upload", stopSrc}} {
		t.Run(c.name, func(t *testing.T) {
			target, started, ended := startedDrainTarget(t, 30*time.Second)
			src, dst := startSides(t, target)
			conn, err := net.Dial("tcp", src.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go func() {
				buf := make([]byte, 32<<10)
				conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
				for {
					if _, err := conn.Write(buf); err != nil {
						return
					}
				}
			}()
			// The upload is under way once the target has its first bytes. A
			// fixed 300 ms was too short under -race on a loaded machine: the
			// destination stopped before it had dialled the target, which
			// then never had a connection, and the wait below never ended.
			select {
			case <-started:
			case <-time.After(30 * time.Second):
				t.Fatal("the upload did not reach the target within 30 s")
			}
			c.stop(src, dst)
			if r := <-ended; !errors.Is(r.err, syscall.ECONNRESET) {
				t.Fatalf("the target's input ended with %v; want ECONNRESET", r.err)
			}
		})
	}
}

// TestConnectionEndIsNotACut: a whole upload reaches the device's target
// with a clean EOF, from a V3 source (it ends a connection with
// CONNECTION_RESET) and from a V1/V2-format one, which ends it with
// STREAM_RESET, so from it that is an end, not a cut
// (TestStopMidTransferResetsLocalConnections).
func TestConnectionEndIsNotACut(t *testing.T) {
	const size = 1 << 20
	for _, peer := range []tunnel.Version{tunnel.V3, tunnel.V2} {
		t.Run(peer.String(), func(t *testing.T) {
			target, got := drainTarget(t, 20*time.Second)
			h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": target}, peer: peer})
			c, err := net.Dial("tcp", h.addr("SSH"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			c.Close()
			if r := <-got; r.n != size || r.err != nil {
				t.Fatalf("the target read %d of %d bytes, then %v; want all, then a clean EOF", r.n, size, r.err)
			}
		})
	}
}

// TestV3CutAfterV2SourceIsACut: a V3 source's STREAM_RESET of a stream with
// connections open is a cut (see session.streamReset), whatever source the
// session carried before: after a V2-format one (the AWS console, then
// porthole connect on the same destination connection), whose STREAM_RESET
// is an end, the V3 source's cut reached the target as a clean end, and an
// upload cut short looked whole there.
func TestV3CutAfterV2SourceIsACut(t *testing.T) {
	for _, after := range []bool{false, true} {
		name := "V3 only"
		if after {
			name = "V3 after V2"
		}
		t.Run(name, func(t *testing.T) {
			target, got := drainTarget(t, 20*time.Second)
			h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": target}, noSource: true})
			h.tun.Record(true)
			probe(t, h.tun, 99) // the SERVICE_IDS before it is handled
			send := func(m *tunnel.Message) {
				t.Helper()
				if err := h.tun.Send(tunneltest.Destination, m); err != nil {
					t.Fatal(err)
				}
			}
			if after {
				send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 1, ServiceID: "SSH"})
				send(&tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: []byte("whole")})
				send(&tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 1, ServiceID: "SSH"})
				if r := <-got; r.n != 5 || r.err != nil {
					t.Fatalf("the V2 source's upload: the target read %d of 5 bytes, then %v; want all, then a clean EOF", r.n, r.err)
				}
			}
			send(&tunnel.Message{Type: tunnel.TypeStreamStart, StreamID: 2, ServiceID: "SSH", ConnectionID: 1})
			send(&tunnel.Message{Type: tunnel.TypeData, StreamID: 2, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("cut")})
			send(&tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: 2, ServiceID: "SSH"})
			if r := <-got; !errors.Is(r.err, syscall.ECONNRESET) {
				t.Fatalf("the V3 source's upload, cut: the target read %d bytes, then %v; want ECONNRESET", r.n, r.err)
			}
		})
	}
}

// TestSessionResetCutsTransfers: the service's SESSION_RESET (tunneld's, when
// the other side's token is rotated) is never a connection's end: a download
// under way is reset, not ended.
func TestSessionResetCutsTransfers(t *testing.T) {
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": endlessTarget(t)}})
	c := dialRead(t, h.addr("SSH"), 1<<20)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, c); got <- err }()
	h.tun.SessionReset(tunneltest.Source)
	if err := <-got; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after SESSION_RESET mid-download the client's read ended with %v; want ECONNRESET", err)
	}
}

// TestTunnelLossAfterWholeDownload: a device's service sent a file and closed;
// all of it is with the kernel, on its way to a client that reads it later.
// The tunnel lost then does not cut it: the client gets all of it and a
// clean EOF. (It was reset, and what the kernel held was lost; then, with
// what the kernel holds unsent bounded, it was reset with the rest queued.)
func TestTunnelLossAfterWholeDownload(t *testing.T) {
	const size = 256 << 10
	data := make([]byte, size)
	rand.Read(data)
	target := tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		c.Write(data)
	})
	logged := new(testlog.Lines)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": target}, logged: logged})
	c, err := net.Dial("tcp", h.addr("SSH"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Dropped sooner, what the source still held is cut, as it must be.
	waitWhole(t, logged, "source")
	h.tun.Drop(tunneltest.Source)
	waitUntil(t, "the end of the source's session", func() bool {
		return logged.Count(`msg="tunnel connection lost, reconnecting" mode=source`) > 0
	})
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the client read %d of %d bytes, then %v; want all of them and a clean EOF", len(got), size, err)
	}
}

// waitWhole waits until the side mode (source, destination) has read its
// peer's end of the one connection (logged at debug) and written all of the
// data before it to its kernel: its link's writer (pumpDown, which dials,
// writes, then lingers in finish) is in finish or, all of it taken by the
// other end's kernel, has ended. The other side's link must be ending.
func waitWhole(t *testing.T, logged *testlog.Lines, mode string) {
	t.Helper()
	waitUntil(t, "the peer's end at the "+mode, func() bool {
		return logged.Count(`msg="frame in" mode=`+mode+` frame="CONNECTION_RESET`)+
			logged.Count(`msg="frame in" mode=`+mode+` frame="STREAM_RESET`) > 0
	})
	waitUntil(t, "all of the data with the "+mode+"'s kernel", func() bool {
		st := goroutines()
		return strings.Contains(st, "tunnel.(*link).finish(") ||
			!strings.Contains(st, "tunnel.(*link).pumpDown(") && !strings.Contains(st, "tunnel.(*link).start.func")
	})
}

// TestTunnelLossAfterWholeUpload is the same on the device's side: the
// operator's client sent a file and closed; the device's service reads it a
// little later (it was writing to flash), after the agent's tunnel is lost.
func TestTunnelLossAfterWholeUpload(t *testing.T) {
	data := make([]byte, 256<<10)
	rand.Read(data)
	target, read := lateService(t)
	logged := new(testlog.Lines)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": target}, logged: logged})
	uploadAndEnd(t, h.addr("SSH"), data)
	waitWhole(t, logged, "destination") // the destination has it all, and the end
	h.tun.Drop(tunneltest.Destination)
	wantWhole(t, read, data)
}

// TestTunnelLossAfterUploadEndedWhileDialing: the client's upload and its end
// reach the agent while it still dials the service. The connection, open
// after the peer's end, takes the rest into its kernel at once, so the
// tunnel lost then does not cut it.
func TestTunnelLossAfterUploadEndedWhileDialing(t *testing.T) {
	for _, v := range []tunnel.Version{tunnel.V3, tunnel.V2} {
		t.Run(v.String(), func(t *testing.T) {
			data := make([]byte, 190<<10) // what waits for a connection being dialled: less than linkQueue payloads
			rand.Read(data)
			target, read := lateService(t)
			release := make(chan struct{})
			var dials atomic.Int32
			dialer := tunnel.DialerFunc(func(ctx context.Context, service string) (net.Conn, error) {
				dials.Add(1)
				<-release
				var d net.Dialer
				return d.DialContext(ctx, "tcp", target)
			})
			logged := new(testlog.Lines)
			h := newHarness(t, setup{services: []string{"SSH"}, protocol: v, peer: v, logged: logged,
				dstTweak: func(d *tunnel.Destination) { d.Dialer = dialer }})
			uploadAndEnd(t, h.addr("SSH"), data)
			// The end is at the agent, the dial runs.
			waitUntil(t, "the dial", func() bool { return dials.Load() > 0 })
			waitUntil(t, "the upload's end at the destination", func() bool {
				return logged.Count(`msg="frame in" mode=destination frame="CONNECTION_RESET`)+
					logged.Count(`msg="frame in" mode=destination frame="STREAM_RESET`) > 0
			})
			close(release)
			waitWhole(t, logged, "destination") // the connection is open and written
			h.tun.Drop(tunneltest.Destination)
			wantWhole(t, read, data)
		})
	}
}

// readResult is what a service read, and how its input ended.
type readResult struct {
	b   []byte
	err error
}

// lateService serves a device's service that reads its input 1.5 s after
// it is connected (busy: the upload waits in the kernel meanwhile).
func lateService(t *testing.T) (addr string, read <-chan readResult) {
	got := make(chan readResult, 1)
	addr = tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		time.Sleep(1500 * time.Millisecond)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(c)
		got <- readResult{b, err}
	})
	return addr, got
}

// uploadAndEnd sends data to addr, then closes the connection: after a
// pause, so that the data goes first.
func uploadAndEnd(t *testing.T, addr string, data []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	c.Close()
}

// wantWhole fails t unless the service read all of data and a clean EOF.
func wantWhole(t *testing.T, read <-chan readResult, data []byte) {
	t.Helper()
	select {
	case r := <-read:
		if r.err != nil || !bytes.Equal(r.b, data) {
			t.Fatalf("the service read %d of %d bytes, then %v; want all of them and a clean EOF", len(r.b), len(data), r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the service was not dialled, or its input did not end")
	}
}

// side is one running end of a tunnel that a test stops on its own.
type side struct {
	addr string // the source's listening address
	stop func()
}

// startSides runs a destination serving target as SSH and a source, each
// stopped by its own function (both are at the test's end).
func startSides(t *testing.T, target string) (src, dst side) {
	t.Helper()
	return startSidesDialing(t, tunnel.Targets{"SSH": target})
}

// startSidesDialing is startSides with the destination's Dialer.
func startSidesDialing(t *testing.T, dialer tunnel.Dialer) (src, dst side) {
	t.Helper()
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	base := tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, Logger: tunneltest.Logger(t),
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	d := &tunnel.Destination{Config: base, Dialer: dialer}
	s := &tunnel.Source{Config: base, Listen: map[string]string{"SSH": "127.0.0.1:0"}}
	var err error
	if d.AccessToken, err = tunnel.NewAccessToken(tun.DestinationToken); err != nil {
		t.Fatal(err)
	}
	if s.AccessToken, err = tunnel.NewAccessToken(tun.SourceToken); err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 1)
	s.OnListen = func(_ string, a net.Addr) { listening <- a.String() }
	run := func(r func(context.Context) error) func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { r(ctx); close(done) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return stop
	}
	dst.stop = run(d.Run)
	src.stop = run(s.Run)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tun.Dataplane().WaitConnects(ctx, dataplane.Destination, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case src.addr = <-listening:
	case <-ctx.Done():
		t.Fatal("the source did not listen")
	}
	return src, dst
}

// dialRead connects to addr and reads n bytes from it.
func dialRead(t *testing.T, addr string, n int64) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.CopyN(io.Discard, c, n); err != nil {
		t.Fatal(err)
	}
	return c
}

// v2DestinationSource runs, on a tunnel of a fake service, a V2-format
// destination that answers each STREAM_START with what onStart gives answer
// (the stream's and service's ids filled in, no connection id), and a source
// that listens for SSH, whose address it returns; both end with the test.
func v2DestinationSource(t *testing.T, onStart func(answer func(*tunnel.Message))) (addr string, streamResets *atomic.Int32) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	ctx := ctxTimeout(t, 30*time.Second)
	dst, err := tunnel.Dial(ctx, &tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, Protocol: tunnel.V2,
		AccessToken: mustToken(t, tun.DestinationToken)}, tunnel.ModeDestination)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	streamResets = new(atomic.Int32)
	go func() {
		var m tunnel.Message
		for dst.ReadMessage(&m) == nil {
			if m.Type == tunnel.TypeStreamReset {
				streamResets.Add(1)
			}
			if m.Type == tunnel.TypeStreamStart {
				onStart(func(a *tunnel.Message) {
					a.StreamID, a.ServiceID = m.StreamID, m.ServiceID
					dst.WriteMessage(ctx, a)
				})
			}
		}
	}()
	addrs := make(chan string, 1)
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
		Logger: testLogger(t)}, Listen: map[string]string{"SSH": "0"}}
	src.OnListen = func(_ string, a net.Addr) { addrs <- a.String() }
	done := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	go func() { done <- src.Run(sctx) }()
	t.Cleanup(func() { stop(); <-done })
	return <-addrs, streamResets
}

// TestSourceV3V2DestinationResetIsAnEnd: a V2-format destination ends a
// connection with STREAM_RESET (it has no CONNECTION_RESET), so a V3 source
// that has seen its DATA without connection ids closes the local connection
// with a FIN after the data, not with a TCP reset: the client's download is
// whole (spec §3.3).
func TestSourceV3V2DestinationResetIsAnEnd(t *testing.T) {
	a, _ := v2DestinationSource(t, func(answer func(*tunnel.Message)) {
		answer(&tunnel.Message{Type: tunnel.TypeData, Payload: []byte("whole file")})
		answer(&tunnel.Message{Type: tunnel.TypeStreamReset})
	})
	c, err := net.Dial("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "whole file" {
		t.Fatalf("local connection read %q, %v; want %q and a clean end", b, err, "whole file")
	}
}
