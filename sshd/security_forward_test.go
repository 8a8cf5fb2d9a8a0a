package sshd

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// freePortIn returns a TCP port in [lo, hi] that nothing listens on
// at 127.0.0.1 right now, or skips the test.
func freePortIn(t *testing.T, lo, hi int) int {
	t.Helper()
	for p := hi; p >= lo; p-- {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Skipf("no free port in %d-%d on 127.0.0.1", lo, hi)
	return 0
}

// TestRemoteForwardPrivilegedPort: the server, not the user, opens a remote
// forward's listener, as root; a user who is not root must not get a port
// below 1024 that way (OpenSSH binds in the user's process). Port 0 (any
// free port) and higher ports stay allowed, and root keeps low ports. 1024
// is the limit when ip_unprivileged_port_start cannot be read.
func TestRemoteForwardPrivilegedPort(t *testing.T) {
	needRoot(t) // alice's logins, and binding low ports
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.portStartFile = "/nonexistent/ip_unprivileged_port_start"
		// The agent's policy for allow_remote_forward: loopback only.
		s.PermitRemoteForward = func(_, bind string, _ uint32) bool {
			ip := net.ParseIP(bind)
			return bind == "localhost" || ip != nil && ip.IsLoopback()
		}
	})
	low := freePortIn(t, 600, 1023)
	lowAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(low))

	alice := e.login("alice")
	if l, err := alice.Listen("tcp", lowAddr); err == nil {
		l.Close()
		t.Fatalf("alice (uid 1000) got a remote forward on privileged port %d", low)
	}
	if l, err := net.Listen("tcp", lowAddr); err != nil {
		t.Errorf("port %d is taken after the refused forward: %v", low, err)
	} else {
		l.Close()
	}
	refused := e.logs.logged("remote forward refused", "user=alice", "privileged")
	if len(refused) != 1 {
		t.Errorf("logged %q, want one refusal saying the port is privileged", refused)
	}
	var ev *Event
	for _, f := range e.eventsOf(EventForward) {
		if f.User == "alice" && f.Dest == lowAddr {
			ev = &f
		}
	}
	if ev == nil || ev.Allowed || !strings.Contains(ev.Reason, "privileged") {
		t.Errorf("forward event for alice's %s = %+v, want refused as privileged", lowAddr, ev)
	}

	for _, addr := range []string{"127.0.0.1:0", net.JoinHostPort("127.0.0.1", freePort(t))} {
		l, err := alice.Listen("tcp", addr)
		if err != nil {
			t.Errorf("alice's remote forward on %s: %v", addr, err)
			continue
		}
		l.Close()
	}

	l, err := e.login("root").Listen("tcp", lowAddr)
	if err != nil {
		t.Fatalf("root's remote forward on privileged port %d: %v", low, err)
	}
	l.Close()
}

// TestRemoteForwardUnprivilegedPortStart: the limit follows the kernel's
// net.ipv4.ip_unprivileged_port_start, read at each request: 0 (as in many
// containers) gives a user any port, a limit above 1024 keeps the ports below
// it from users too, and root is never limited.
func TestRemoteForwardUnprivilegedPortStart(t *testing.T) {
	needRoot(t) // alice's logins, and binding low ports
	file := filepath.Join(t.TempDir(), "ip_unprivileged_port_start")
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.PermitRemoteForward = func(string, string, uint32) bool { return true }
		s.portStartFile = file
	})
	low := freePortIn(t, 600, 1023)
	high, _ := strconv.Atoi(freePort(t))
	alice, root := e.login("alice"), e.login("root")
	for _, tc := range []struct {
		start string
		port  int
		user  string
		ok    bool
	}{
		{"0\n", low, "alice", true},
		{"1024\n", low, "alice", false},
		{strconv.Itoa(high + 1), high, "alice", false},
		{strconv.Itoa(high + 1), high, "root", true},
		{strconv.Itoa(high), high, "alice", true},
		{"garbage", low, "alice", false},
	} {
		writeFile(t, file, tc.start)
		c := map[string]*gossh.Client{"alice": alice, "root": root}[tc.user]
		l, err := c.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tc.port)))
		if err == nil {
			l.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("ip_unprivileged_port_start %q: %s's remote forward on port %d: %v, want ok=%v", tc.start, tc.user, tc.port, err, tc.ok)
		}
	}
}

// TestLocalForwardIsTheUsers: alice's local forward (ssh -L) connects with a
// socket of hers (uid 1000), as OpenSSH's, whose sshd connects from the
// user's process, so that rules on a socket's owner (iptables -m owner,
// nftables meta skuid) hold for her forwards as for her programs: the server,
// which runs as root, made it root's, past them all. root's forward stays
// root's. After many of alice's forwards at once, every thread of the server
// has root's filesystem ids again, and a root login's SFTP makes root's files.
func TestLocalForwardIsTheUsers(t *testing.T) {
	needRoot(t)
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.dial = nil // the real dial; the destinations are 127.0.0.1's
		s.MaxForwards = -1
	})
	addr, conns := acceptor(t)
	for _, tc := range []struct {
		user string
		uid  int
	}{{"alice", 1000}, {"root", 0}} {
		ch := openDirect(t, e.login(tc.user), addr)
		c := recvConn(t, conns)
		// The server's end is the accepted connection's peer.
		if uid := tcpSocketUID(t, c.RemoteAddr(), c.LocalAddr()); uid != tc.uid {
			t.Errorf("%s's forward connects with a socket of uid %d, want %d", tc.user, uid, tc.uid)
		}
		ch.Close()
	}

	echo := echoServer(t)
	alice := e.login("alice")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				fc, err := alice.Dial("tcp", echo)
				if err != nil {
					t.Errorf("alice's forward: %v", err)
					return
				}
				b := []byte("x")
				if _, err = fc.Write(b); err == nil {
					_, err = io.ReadFull(fc, b)
				}
				fc.Close()
				if err != nil {
					t.Errorf("through alice's forward: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	alice.Close()
	waitForwardsReleased(t, e)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "status"))
		if err != nil {
			continue // the thread has ended
		}
		for _, l := range strings.Split(string(b), "\n") {
			// Real, effective, saved and filesystem ids.
			if f := strings.Fields(l); len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") && f[4] != "0" {
				t.Errorf("after alice's forwards, thread %s has %q, want filesystem id 0", task.Name(), l)
			}
		}
	}
	_, cl := sftpClient(t, e)
	f, err := cl.Create("after-forwards")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(e.home("root"), "after-forwards"), &st); err != nil {
		t.Fatal(err)
	} else if st.Uid != 0 || st.Gid != 0 {
		t.Errorf("root's SFTP made a file of %d:%d after alice's forwards, want 0:0", st.Uid, st.Gid)
	}
}

// tcpSocketUID is the owner of the IPv4 TCP socket from local to remote, as
// /proc/net/tcp shows it (ss -e too). The ports alone find it: the addresses
// are printed in the kernel's byte order, which under qemu-user is not the
// test's.
func tcpSocketUID(t *testing.T, local, remote net.Addr) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	lp := fmt.Sprintf(":%04X", local.(*net.TCPAddr).Port)
	rp := fmt.Sprintf(":%04X", remote.(*net.TCPAddr).Port)
	// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 7 && strings.HasSuffix(f[1], lp) && strings.HasSuffix(f[2], rp) {
			uid, err := strconv.Atoi(f[7])
			if err != nil {
				t.Fatalf("/proc/net/tcp: uid %q", f[7])
			}
			return uid
		}
	}
	t.Fatalf("no socket from %v to %v in /proc/net/tcp", local, remote)
	return -1
}

// TestLocalForwardIsTheUsersUID: the socket of a local forward is the user's
// uid, not the user's primary gid taken for one: alice's primary group here
// is not numbered as her uid.
func TestLocalForwardIsTheUsersUID(t *testing.T) {
	needRoot(t)
	e := newEnv(t, func(e *testEnv, s *Server) {
		s.dial = nil // the real dial; the destination is 127.0.0.1's
		b, err := os.ReadFile(s.PasswdFile)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, s.PasswdFile, strings.Replace(string(b), "alice:x:1000:1000:", "alice:x:1000:1004:", 1))
	})
	addr, conns := acceptor(t)
	ch := openDirect(t, e.login("alice"), addr)
	c := recvConn(t, conns)
	if uid := tcpSocketUID(t, c.RemoteAddr(), c.LocalAddr()); uid != 1000 {
		t.Errorf("alice's forward connects with a socket of uid %d, want 1000 (gid 1004)", uid)
	}
	ch.Close()
}
