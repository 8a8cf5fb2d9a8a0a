package sshd

import (
	"net"
	"strconv"
	"strings"
	"testing"
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
// free port) and higher ports stay allowed, and root keeps low ports.
func TestRemoteForwardPrivilegedPort(t *testing.T) {
	needRoot(t) // alice's logins, and binding low ports
	e := newEnv(t, func(_ *testEnv, s *Server) {
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
