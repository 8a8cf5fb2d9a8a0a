package sshd

import (
	"bytes"
	"net"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// TestConnectionEndLogged: a connection that ends after its login because of
// an error of the protocol (here bytes that are no packet, written under the
// client's encryption; asyncssh 2.10.1 sends data during its rekey, which
// x/crypto refuses) has one line saying so, with the remote and the user; one
// the client closes has none.
func TestConnectionEndLogged(t *testing.T) {
	for _, tc := range []struct {
		name    string
		garbage bool
	}{
		{"protocol error", true},
		{"client closes", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			nc, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			cc, chans, reqs, err := gossh.NewClientConn(nc, e.addr, e.clientConfig("root", gossh.PublicKeys(e.key)))
			if err != nil {
				t.Fatal(err)
			}
			c := gossh.NewClient(cc, chans, reqs)
			defer c.Close()
			if out, _, _ := run(t, c, "echo hi", ""); out != "hi\n" {
				t.Fatalf("echo hi: %q", out)
			}
			local := nc.LocalAddr().String()
			if tc.garbage {
				// More than a packet may hold, so that the server reads
				// enough whatever length it decrypts; it may close before
				// it has read all.
				nc.Write(bytes.Repeat([]byte{0xff}, 300<<10))
			} else {
				c.Close()
			}
			waitFor(t, "the connection to end", func() bool {
				e.srv.mu.Lock()
				defer e.srv.mu.Unlock()
				return len(e.srv.conns) == 0
			})
			lines := e.logs.logged("connection ended by an error", "remote="+local, "user=root", "error=")
			if tc.garbage && len(lines) != 1 {
				t.Errorf("lines about the end of a connection dropped for a protocol error: %q, want 1 with remote=%s user=root and the error", e.logs.logged("connection ended"), local)
			}
			if !tc.garbage && len(e.logs.logged("connection ended")) != 0 {
				t.Errorf("a connection the client closed logged %q, want nothing", e.logs.logged("connection ended"))
			}
		})
	}
}

// TestGraceTimeSparesALoggedInConnection: the login grace timer closes a
// connection only if it has not logged in by then; the timer is not stopped at
// the login, so without that check every session ended LoginGraceTime (2
// minutes by default) after it connected. Here the maximum session time ends
// the connection, long after the grace time has passed.
func TestGraceTimeSparesALoggedInConnection(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := newConn(&Server{LoginGraceTime: time.Millisecond, MaxSessionTime: 200 * time.Millisecond}, a, "test", "127.0.0.1")
	c.st.authed.Store(true)
	c.startTimers()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed 10 s after its maximum session time (200 ms)")
	}
	if c.st.loggedFailure.Load() {
		t.Error("a logged-in connection was closed as a login failure at the login grace time")
	}
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	if c.st.endReason != "maximum session time reached" {
		t.Errorf("the connection ended for %q, want the maximum session time", c.st.endReason)
	}
}

// TestCloseStopsTheTimers: a closed connection's timers are stopped, not left
// to fire: each held the connection in memory until it did, and the grace
// timer's would send a login failure for a connection already gone.
func TestCloseStopsTheTimers(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := newConn(&Server{MaxSessionTime: time.Hour, IdleTimeout: time.Hour}, a, "test", "127.0.0.1")
	c.startTimers()
	c.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) != 3 {
		t.Fatalf("%d timers armed, want 3 (grace, lifetime, idle)", len(c.timers))
	}
	for i, tm := range c.timers {
		if tm.Stop() {
			t.Errorf("timer %d still armed after Close", i)
		}
	}
}

// TestTimersNotArmedAfterClose: Close can come before the connection's
// goroutine arms its timers (Server.Close between Serve's newConn and serve,
// or ServeConn's). None is armed then: the idle timer was, and held the
// closed connection until it fired, then logged an idle timeout for it.
func TestTimersNotArmedAfterClose(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := newConn(&Server{MaxSessionTime: time.Hour, IdleTimeout: time.Hour}, a, "test", "127.0.0.1")
	c.Close()
	c.startTimers()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, tm := range c.timers {
		if tm.Stop() {
			t.Errorf("timer %d of %d armed by startTimers after Close", i+1, len(c.timers))
		}
	}
}
