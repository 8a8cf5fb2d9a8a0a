package sshd

// What clients choose reaches the log clipped (maxClientString), and a
// command line's arguments not at all (commandName).

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// TestForwardLookupErrorClippedInLog: a forward's destination is cut to 256
// bytes in log lines, in the resolver's error too, which quotes the name: a
// 200 KiB name was a 200 KiB line per channel open, and a line longer than the
// log's queue drops the lines logged while it is written. Forwarding is off
// here (the agent's permit_local_forward = []): the name is looked up before
// the policy is applied to its addresses.
func TestForwardLookupErrorClippedInLog(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.PermitLocalForward = func(string, netip.AddrPort) bool { return false }
	})
	c := e.login("root")
	host := strings.Repeat("A", 200<<10) // one 200 KiB channel-open
	payload := gossh.Marshal(&struct {
		DestHost string
		DestPort uint32
		OrigHost string
		OrigPort uint32
	}{host, 22, "127.0.0.1", 5555})
	if ch, _, err := c.OpenChannel("direct-tcpip", payload); err == nil {
		ch.Close()
		t.Fatal("forward to a 200 KiB host name opened")
	}
	longest := 0
	for _, l := range e.logs.logged("forward") {
		longest = max(longest, len(l))
		if len(l) > 4096 {
			t.Errorf("log line of %d bytes (starts %q)", len(l), l[:200])
		}
	}
	t.Logf("longest forward log line: %d bytes", longest)
}

// TestForwardOpenedClippedInLog: a forward that is allowed logs its
// destination clipped too. An IPv6 zone may be any length (netip takes it, and
// the dial, finding no such interface, uses none), so "::1%" and 200 KiB is
// loopback: it was logged whole, twice over, at each channel open.
func TestForwardOpenedClippedInLog(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	e := newEnv(t, nil)
	c := e.login("root")
	payload := gossh.Marshal(&struct {
		DestHost string
		DestPort uint32
		OrigHost string
		OrigPort uint32
	}{"::1%" + strings.Repeat("Z", 200<<10), uint32(l.Addr().(*net.TCPAddr).Port), "127.0.0.1", 5555})
	ch, _, err := c.OpenChannel("direct-tcpip", payload)
	if err != nil {
		t.Fatalf("forward to ::1 with a long zone: %v", err)
	}
	ch.Close()
	waitFor(t, "the forward logged", func() bool { return len(e.logs.logged("forward opened")) > 0 })
	for _, l := range e.logs.logged("forward") {
		if len(l) > 4096 {
			t.Errorf("log line of %d bytes (starts %q)", len(l), l[:200])
		}
	}
}

// TestSCPTargetNotLogged: a command line's arguments are never logged
// (commandName), nor the target of scp -d -t whose directory is missing,
// which the client is told.
func TestSCPTargetNotLogged(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	secret := "/nonexistent/token=hunter2"
	out, _, code := run(t, c, "scp -d -t "+secret, "")
	if code == 0 {
		t.Fatal("scp -d -t to a missing directory succeeded")
	}
	if !strings.Contains(out, "\x02scp: "+secret+": No such file or directory") {
		t.Errorf("the client was told %q, want the target named", out[max(0, len(out)-80):])
	}
	for _, l := range e.logs.logged() {
		if strings.Contains(l, "hunter2") {
			t.Errorf("log line of %d bytes holds the command line's argument: %q…", len(l), l[:160])
		}
	}
}

// TestPreAuthErrorClippedInLog: before authentication anyone who reaches
// the port can make x/crypto's handshake fail with an error quoting what it
// sent (here a KEXINIT whose algorithm list is 200 KiB); the line about it ("no
// algorithm in common with the client") clips it as every other line clips
// what a client chose (maxClientString, 256 bytes).
func TestPreAuthErrorClippedInLog(t *testing.T) {
	e := newEnv(t, nil)
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("SSH-2.0-loginject\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil { // the server's version
		t.Fatal(err)
	}
	nameList := func(s string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(s)))
		return append(b, s...)
	}
	payload := append([]byte{20}, make([]byte, 16)...) // SSH_MSG_KEXINIT, cookie
	payload = append(payload, nameList("x-"+strings.Repeat("B", 200<<10))...)
	for range 9 {
		payload = append(payload, nameList("none")...)
	}
	payload = append(payload, 0, 0, 0, 0, 0) // first_kex_packet_follows, reserved
	pad := 8 - (len(payload)+5)%8
	if pad < 4 {
		pad += 8
	}
	pkt := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)+pad))
	pkt = append(pkt, byte(pad))
	pkt = append(pkt, payload...)
	pkt = append(pkt, make([]byte, pad)...)
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	// No algorithm in common: at info, with what the client offered, clipped.
	waitFor(t, "the failure logged", func() bool { return len(e.logs.logged("no algorithm in common with the client")) > 0 })
	for _, l := range e.logs.logged("no algorithm in common with the client") {
		if len(l) > 4096 {
			t.Errorf("log line of %d bytes: %q…", len(l), l[:300])
		}
	}
}
