package sshd

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
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
