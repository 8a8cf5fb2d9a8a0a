package tunnel_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// FuzzSessionMessages sends a destination sequences of well-formed frames in
// any order and combination, as a confused or hostile service (or a source
// it relays) might: streams and connections started, reset and restarted,
// data for streams that are gone or never were, stream id 0, V2-format frames
// on a V3 session, SERVICE_IDS again, SESSION_RESETs, ignorable and unknown
// types. The hostile tests send each kind once; this finds the orders they do
// not. After each sequence the destination must be up, serve both services
// to a real source (every byte checked), and come back to the goroutines it
// had: a sequence may end a session (a frame that breaks the protocol does),
// never the destination, and nothing may be left open.
//
// go test -run '^$' -fuzz FuzzSessionMessages -parallel 1 ./agent/tunnel
// (FZLOG=1: the pair's log on stderr; the fuzz target's own t logs nothing.)
func FuzzSessionMessages(f *testing.F) {
	for _, seed := range [][]byte{
		{0x02, 0x01, 0x00, 0x01, 0x01, 0x10, 0x03, 0x01, 0x00},                   // start, data, reset
		{0x06, 0x05, 0x00, 0x02, 0x05, 0x00, 0x06, 0x05, 0x00, 0x07, 0x05, 0x00}, // connection start before and after the stream's
		{0x02, 0x11, 0x00, 0x02, 0x12, 0x00, 0x01, 0x11, 0x20, 0x01, 0x12, 0x20}, // superseded, then data for both
		{0x02, 0x01, 0x00, 0x04, 0x00, 0x00, 0x01, 0x01, 0x08},                   // session reset between start and data
		{0x02, 0x01, 0x00, 0x02, 0x21, 0x00, 0x02, 0x31, 0x00, 0x02, 0x00, 0x00}, // V2 format, unnamed, unknown, stream 0
		{0x05, 0x00, 0x03, 0x02, 0x21, 0x00, 0x01, 0x21, 0x10},                   // SERVICE_IDS again, then WEB
		{0x58, 0x01, 0x00, 0x02, 0x01, 0x00, 0x40, 0x01, 0x00, 0x01, 0x01, 0x01}, // ignorable unknown types
		{0x18, 0x01, 0x00, 0x01, 0x01, 0x01},                                     // unknown type: the session ends
		// V3: three connections on one stream, one reset, data for the others
		{0x02, 0x15, 0x00, 0x06, 0x19, 0x00, 0x06, 0x1d, 0x00, 0x07, 0x19, 0x00, 0x01, 0x1d, 0xff, 0x01, 0x15, 0x01},
		{0x02, 0x09, 0x00, 0x06, 0x09, 0x00, 0x06, 0x0d, 0x00, 0x07, 0x09, 0x00, 0x01, 0x0d, 0xff},
	} {
		f.Add(seed)
	}
	r := startFuzzRig(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r.echo.Store(false)
		for _, m := range serviceFrames(data) {
			if err := r.tun.Send(tunneltest.Destination, m); err != nil {
				break // the session ended (or is between connections): the rest would not arrive
			}
		}
		r.check(t)
	})
}

// fuzzRig is one tunnel, with a destination and a source, that every input of
// FuzzSessionMessages is sent into in turn.
type fuzzRig struct {
	tun  *tunneltest.Tunnel
	pair *tunneltest.Pair
	base int // goroutines, everything idle
	// echo is whether a target dialled now answers. The sequences' targets
	// only read: the source, which keeps to the protocol, must not answer
	// their data (the service would take a STREAM_RESET naming SSH, while a
	// V1-format stream of a sequence is active, as the source breaking the
	// protocol, and close it).
	echo atomic.Bool
	open atomic.Int32 // targets not yet closed by the destination
}

// fuzzServices are the tunnel's: SSH and WEB (each through an in-process
// Pipe), VNC's target refuses every dial.
var fuzzServices = []string{"SSH", "WEB", "VNC"}

func startFuzzRig(f *testing.F) *fuzzRig {
	srv := tunneltest.NewServer(f)
	tun := srv.OpenTunnel(fuzzServices...)
	var wg sync.WaitGroup
	f.Cleanup(wg.Wait)
	r := &fuzzRig{tun: tun}
	targets := tunnel.DialerFunc(func(ctx context.Context, service string) (net.Conn, error) {
		if service == "VNC" {
			return nil, errors.New("connection refused")
		}
		ours, far := tunnel.Pipe()
		echo := r.echo.Load()
		wg.Add(1)
		r.open.Add(1)
		go func() {
			defer wg.Done()
			defer r.open.Add(-1)
			defer far.Close()
			if echo {
				io.Copy(far, far)
			} else {
				io.Copy(io.Discard, far)
			}
		}()
		return ours, nil
	})
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("FZLOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	r.echo.Store(true)
	r.pair = tunneltest.StartPair(f, tunneltest.PairConfig{
		Config:           tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, Logger: logger},
		SourceToken:      tun.SourceToken,
		DestinationToken: tun.DestinationToken,
		Tunnel:           tun.Dataplane(),
		Services:         fuzzServices,
		Targets:          targets,
	})
	if err := r.serves(); err != nil {
		f.Fatal(err)
	}
	// The baseline is taken once the round trips' connections have closed:
	// taken while they close, it was 5 above the idle count, and so many
	// leaked goroutines went unseen.
	r.targetsClosed()
	r.base = runtime.NumGoroutine()
	for range 20 {
		time.Sleep(25 * time.Millisecond)
		r.base = min(r.base, runtime.NumGoroutine())
	}
	return r
}

// fuzzStreams are the stream ids of the sequences: 0, which the protocol
// does not use, and three the source is unlikely to use (it starts at a
// random one below 2^31 and counts up).
var fuzzStreams = []int32{0, 1<<30 + 1, 1<<30 + 2, 1<<30 + 3}

// serviceFrames decodes data, three bytes a frame, into at most 48 frames:
//
//	byte 0: bits 0-2 the type; 0 stands for one the protocol does not have
//	        (8 + bits 3-5); bit 6 ignorable
//	byte 1: bits 0-1 the stream (fuzzStreams), bits 2-3 the connection id
//	        (0: none, the V2 format), bits 4-5 the service (SSH, WEB, VNC,
//	        none)
//	byte 2: DATA: the payload's length; SERVICE_IDS: which of the
//	        tunnel's services (and a stranger) are listed, one bit each
func serviceFrames(data []byte) []*tunnel.Message {
	var out []*tunnel.Message
	for ; len(data) >= 3 && len(out) < 48; data = data[3:] {
		b0, b1, b2 := data[0], data[1], data[2]
		m := &tunnel.Message{
			Type:         tunnel.Type(b0 & 7),
			ConnectionID: uint32(b1 >> 2 & 3),
			ServiceID:    []string{"SSH", "WEB", "VNC", ""}[b1>>4&3],
			Ignorable:    b0&0x40 != 0,
		}
		if m.Type == 0 {
			m.Type = 8 + tunnel.Type(b0>>3&7)
		}
		m.StreamID = fuzzStreams[b1&3]
		switch m.Type {
		case tunnel.TypeData:
			m.Payload = bytes.Repeat([]byte{b2}, int(b2))
		case tunnel.TypeServiceIDs:
			m.ServiceID = ""
			for i, s := range append(fuzzServices, "STRANGER") {
				if b2&(1<<i) != 0 {
					m.AvailableServiceIDs = append(m.AvailableServiceIDs, s)
				}
			}
		}
		if _, err := tunnel.AppendFrame(nil, m); err != nil {
			continue // not encodable: FuzzFrameReader covers damaged frames
		}
		out = append(out, m)
	}
	return out
}

// check fails t unless the destination is still running, serves both echo
// services to the source within 20 s (a sequence that ended the session makes
// the destination reconnect, and the service then resets the source's
// streams: a round trip may fail meanwhile), and is back to its goroutines
// once the connections the sequence opened have been superseded.
func (r *fuzzRig) check(t *testing.T) {
	t.Helper()
	err := errors.New("the destination did not come back")
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case derr := <-r.pair.DstErr:
			r.pair.DstErr <- derr
			t.Fatalf("the destination stopped: %v", derr)
		case serr := <-r.pair.SrcErr:
			r.pair.SrcErr <- serr
			t.Fatalf("the source stopped: %v", serr)
		default:
		}
		if !r.tun.Connected(tunneltest.Destination) {
			continue
		}
		// The service takes frames sent as from the source for the source's;
		// these tell it that no V1-format stream of the sequence is active.
		// One that could not be sent (the destination just went) told it
		// nothing.
		cleared := true
		for _, id := range fuzzStreams[1:] {
			cleared = cleared && r.tun.Send(tunneltest.Destination, &tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: id}) == nil
		}
		if !cleared {
			continue
		}
		r.echo.Store(true)
		if err = r.serves(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("the destination no longer serves: %v", err)
	}
	// Every target is closed once the destination has ended its connection:
	// those of the sequence, superseded, once their last data is written;
	// those of the round trips once the source's reset has come
	// (which is then through the service: sent during the next sequence, it
	// would arrive while one of that sequence's V1-format streams is active,
	// and the service would close the source for it).
	if n := r.targetsClosed(); n > 0 {
		t.Fatalf("%d target connections left open", n)
	}
	// Leeway: this function's own goroutine, and two for a ping being written.
	if g := goroutinesDownTo(r.base+3, 20*time.Second); g > r.base+3 {
		t.Fatalf("%d goroutines, %d before: connections left open", g, r.base)
	}
}

// targetsClosed waits up to 20 s for every target connection to be closed,
// and returns how many are still open.
func (r *fuzzRig) targetsClosed() int32 {
	for deadline := time.Now().Add(20 * time.Second); r.open.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	return r.open.Load()
}

// serves makes a round trip of 4 KiB through each echo service, which also
// supersedes any stream a sequence left open on it. A round trip that takes
// 10 s is cut: the destination is stuck.
func (r *fuzzRig) serves() error {
	for _, svc := range fuzzServices[:2] {
		c, err := net.Dial("tcp", r.pair.Addr(svc))
		if err != nil {
			return err
		}
		cut := time.AfterFunc(10*time.Second, func() { c.Close() })
		err = tunneltest.RoundTripConn(c, 0, 4<<10)
		cut.Stop()
		c.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", svc, err)
		}
	}
	return nil
}
