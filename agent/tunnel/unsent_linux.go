package tunnel

import (
	"syscall"
	"time"
	"unsafe"
)

// unsent is how many of the bytes written to c its kernel has yet to send or
// to see acknowledged (SIOCOUTQ, which is TIOCOUTQ), or -1 if it cannot tell.
func unsent(c syscall.Conn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	rc.Control(func(fd uintptr) {
		var v int32
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&v))); e == 0 {
			n = int(v)
		}
	})
	return n
}

// unsentBound is the most data a local connection's kernel holds not yet sent
// (TCP_NOTSENT_LOWAT). A writer blocked on a full socket is woken only once a
// third of its send buffer has drained, and loopback grows that buffer to
// megabytes: a reader taking less than ~47 KiB/s saw no payload written
// within the 30 s stall timeout, and was reset as stalled while it read
// (curl --limit-rate, a serial bridge, a service writing to flash). Bounded,
// a write returns as the reader takes about as much as it writes: over
// loopback one reading 6 KiB/s gets on, and one reading 4 KiB/s is reset
// (its kernel opens its window only once its 128 KiB buffer is near empty).
// What is in flight is not bounded, so a distant client's throughput is not
// either (before Linux 3.12 it is: see boundUnsent). Once the peer has ended
// the stream nothing more is pushed, and the bound is lifted (peerEnded): the
// kernel takes the rest, and the reader gets it even if the tunnel is lost
// before it has read it.
const unsentBound = 16 << 10

// boundUnsent sets unsentBound on c, a local connection, if it is TCP, or
// lifts it to the system's setting (net.ipv4.tcp_notsent_lowat: none unless
// lowered there).
func boundUnsent(c any, bounded bool) {
	sc, ok := netConn(c).(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	n := 0
	if bounded {
		n = unsentBound
	}
	rc.Control(func(fd uintptr) {
		// Not TCP (a Unix socket, whose buffer does not grow): written as
		// before. A change wakes a writer blocked on the bound.
		if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotsentLowat, n) == syscall.ENOPROTOOPT {
			// A kernel before 3.12 (vendors' 3.10): the send buffer is
			// bounded instead (the kernel doubles it: 128 KiB, what is in
			// flight included, ~25 MB/s at a 5 ms round trip; a writer is
			// woken once a third has drained, ~10 s for a 4 KiB/s reader),
			// which ends its growth for good; lifted, it is set as large as
			// net.core.wmem_max lets it.
			n = 4 * n
			if n == 0 {
				n = 1 << 20
			}
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
		}
	})
}

// tcpNotsentLowat is TCP_NOTSENT_LOWAT, the same on every Linux architecture;
// a variable for the tests, which stand in a kernel without it.
var tcpNotsentLowat = 0x19

// deadPathTimeout bounds how long what is sent on the connection to the
// service may go unacknowledged (TCP_USER_TIMEOUT) before the connection is
// taken for lost, and dialed again. A path that dies without a word (an uplink
// that fails over to LTE, a new DHCP address, a NAT that forgets the mapping)
// kept a device's tunnel for some 15 minutes, until the kernel gave up on its
// unacknowledged pings (net.ipv4.tcp_retries2), and no operator could reach
// the device in between. The pings, every 20 s, are acknowledged by the
// service's TCP whether or not it answers them (spec §3.7), so an idle tunnel
// is kept. A service that stops reading for that long (its window closed:
// only if it stopped forwarding to a source that stopped reading, and every
// buffer on the way filled) ends the connection too, from Linux 5.11 on: its
// streams are reset and it is dialed again. A variable for tests.
var deadPathTimeout = 90 * time.Second

// tcpUserTimeout is TCP_USER_TIMEOUT, the same on every Linux architecture.
const tcpUserTimeout = 0x12

// dialControl sets deadPathTimeout on a connection to the service (or its
// proxy) before it connects. A kernel before 2.6.37, without the option, keeps
// its own timeout.
func dialControl(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(deadPathTimeout/time.Millisecond))
	})
}
