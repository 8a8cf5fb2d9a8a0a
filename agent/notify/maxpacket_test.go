package notify

import (
	"errors"
	"io"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"
)

// TestBrokerPacketOverMaximumNotAllocated: the CONNECT states a Maximum
// Packet Size of 64 KiB (maximumPacket) because paho reads each packet whole.
// A broker that ignores it (hostile, or buggy) sends a PUBLISH header with a
// remaining length of 200 MiB: paho's ReadPacket calls bytes.Buffer.Grow with
// that length before reading a byte of the body, so five bytes from the broker
// make the agent allocate 200 MiB (up to 256 MiB: the largest remaining
// length) on a 64 MB router. The listener should refuse a packet over the
// maximum it stated, before allocating it.
// TestBrokerPacketOverMaximumNotAllocated: a broker that ignores the CONNECT's
// Maximum Packet Size and announces a 200 MiB PUBLISH, six bytes, gets its
// connection closed with a line saying why, before paho, which grows its
// buffer to a packet's length first, allocates it.
func TestBrokerPacketOverMaximumNotAllocated(t *testing.T) {
	p := newPKI(t)
	sent := make(chan struct{})
	addr := standInBroker(t, p.MutualTLS(t, time.Time{}), func(c net.Conn) {
		defer c.Close()
		if !readConnect(c) {
			return
		}
		// MQTT 5 CONNACK: no session present, success, no properties.
		c.Write([]byte{0x20, 0x03, 0x00, 0x00, 0x00})
		// PUBLISH, QoS 0, remaining length 200 MiB (VBI), then nothing.
		n := 200 << 20
		b := []byte{0x30}
		for {
			d := byte(n % 128)
			n /= 128
			if n > 0 {
				d |= 0x80
			}
			b = append(b, d)
			if n == 0 {
				break
			}
		}
		c.Write(b)
		c.Write([]byte{0x00, 0x01, 'x'}) // a few bytes of the "body"
		select {
		case sent <- struct{}{}:
		default:
		}
		io.Copy(io.Discard, c) // until the listener closes it
	})
	log, rec := newLogRecorder(t)
	cfg := testConfig(t, p, addr, "thing-a", log)
	l := newListener(t, cfg)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := runListener(t, l)
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener never connected to the stand-in broker")
	}
	rec.waitFor("mqtt connection lost", "over the 64 KiB the agent's CONNECT allows")
	var peak uint64
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapInuse)
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	grew := int64(peak) - int64(before.HeapInuse)
	t.Logf("heap in use: %d KiB before, peak %d KiB", before.HeapInuse>>10, peak>>10)
	if grew > 8<<20 {
		t.Errorf("a 6-byte PUBLISH header from the broker grew the heap by %d MiB (maximumPacket is %d KiB)", grew>>20, maximumPacket>>10)
	}
}

// TestFollowPacketBoundaries: the packet follower finds every packet's length
// however the broker's bytes are split between reads, and refuses a packet
// over maximumPacket from its length (the remaining length: paho allocates
// that), and a length of more bytes than one under maximumPacket can have.
func TestFollowPacketBoundaries(t *testing.T) {
	packet := func(size int) []byte { // a PUBLISH of size bytes in all
		for lenBytes := 1; lenBytes <= 4; lenBytes++ {
			n := size - 1 - lenBytes
			b := []byte{0x30}
			for v := n; ; {
				d := byte(v % 128)
				if v /= 128; v > 0 {
					d |= 0x80
				}
				b = append(b, d)
				if v == 0 {
					break
				}
			}
			if len(b) == 1+lenBytes {
				return append(b, make([]byte, n)...)
			}
		}
		panic("no size")
	}
	var ok []byte
	for _, size := range []int{2, 3, 129, 131, 16386, 16388, maximumPacket - 3, maximumPacket + 3} {
		ok = append(ok, packet(size)...)
	}
	for _, step := range []int{1, 2, 7, len(ok)} {
		c := &headConn{}
		for i := 0; i < len(ok); i += step {
			if err := c.follow(ok[i:min(i+step, len(ok))]); err != nil {
				t.Fatalf("reads of %d bytes: %v", step, err)
			}
		}
		if c.body != 0 || c.lenAt != 0 {
			t.Errorf("reads of %d bytes: ended inside a packet (body %d, lenAt %d)", step, c.body, c.lenAt)
		}
		for _, p := range [][]byte{{0x30, 0x81, 0x80, 0x04}, {0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, {0x30, 0xff, 0xff, 0xff, 0x7f}} {
			c := &headConn{}
			if err := c.follow(append(slices.Clone(ok), p...)); err != errPacketTooBig {
				t.Errorf("a packet with length bytes % x: %v", p[1:], err)
			}
		}
	}
}

// FuzzFollowPackets: the packet follower gives the same answer however the
// broker's bytes are split between reads, and refuses no stream whose packets
// all have lengths up to maximumPacket, each in the fewest bytes.
func FuzzFollowPackets(f *testing.F) {
	f.Add([]byte{0x20, 0x03, 0x00, 0x00, 0x00, 0x30, 0x02, 0x00, 0x00}, 3)
	f.Add([]byte{0x30, 0x80, 0x80, 0x04}, 1)
	f.Add([]byte{0x30, 0xff, 0x7f}, 2)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		whole := &headConn{}
		werr := whole.follow(b)
		split = min(max(split, 0), len(b))
		parts := &headConn{}
		perr := parts.follow(b[:split])
		if perr == nil {
			perr = parts.follow(b[split:])
		}
		if werr != perr || werr == nil && (whole.body != parts.body || whole.lenAt != parts.lenAt || whole.length != parts.length) {
			t.Fatalf("whole: %v %+v; split at %d: %v %+v", werr, whole, split, perr, parts)
		}
		// Every packet whole and within the maximum: accepted.
		for rest := b; len(rest) > 0; {
			n, i := 0, 1
			for ; i < len(rest) && i <= 4; i++ {
				n |= int(rest[i]&0x7f) << (7 * (i - 1))
				if rest[i]&0x80 == 0 {
					break
				}
			}
			if i >= len(rest) || i > 4 || rest[i]&0x80 != 0 || i > 1 && rest[i] == 0 || n > maximumPacket || len(rest) < i+1+n {
				return // not a stream of whole packets within the maximum, lengths in the fewest bytes (MQTT-1.5.5-1)
			}
			rest = rest[i+1+n:]
		}
		if werr != nil {
			t.Fatalf("whole packets within the maximum refused: %v", werr)
		}
	})
}

// TestHeadConnClosedByAFailedWrite: a write that fails closes the connection,
// so that paho's reader fails and the link is dialed again: tls.Conn fails
// every write after one failed (strace -e inject=write:error=EPIPE:when=1 on
// the broker's socket), paho ignores a PUBLISH's write error, and the link
// stayed half dead until the next PINGREQ, a keepalive later.
func TestHeadConnClosedByAFailedWrite(t *testing.T) {
	local, remote := net.Pipe()
	remote.Close() // the write fails
	c := &headConn{conn: local}
	_, werr := c.Write([]byte{0xc0, 0})
	if werr == nil {
		t.Fatal("a write to a closed pipe succeeded")
	}
	// Closed here: net.Pipe's Read says io.ErrClosedPipe (io.EOF: only the
	// other end closed).
	if _, err := local.Read(make([]byte, 1)); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("after a failed write, Read = %v; want the connection closed (io.ErrClosedPipe)", err)
	}
	// paho's reader, which logs the connection's loss, gets the write's
	// error, the cause.
	if _, err := c.Read(make([]byte, 1)); err != werr {
		t.Errorf("headConn's Read after the failed write = %v, want the write's error %v", err, werr)
	}
}
