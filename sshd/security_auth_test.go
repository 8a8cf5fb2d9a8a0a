package sshd

import (
	"errors"
	"io"
	"math"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// testClock is a Server.now that moves only when told.
type testClock struct{ t atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.t.Store(time.Unix(1_000_000, 0).UnixNano())
	return c
}

func (c *testClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *testClock) advance(d time.Duration) { c.t.Add(int64(d)) }

func passwordHash(t testing.TB, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// eventsWithReason counts the events of typ whose Reason is reason.
func (e *testEnv) eventsWithReason(typ EventType, reason string) int {
	n := 0
	for _, ev := range e.eventsOf(typ) {
		if ev.Reason == reason {
			n++
		}
	}
	return n
}

// TestParallelPasswordGuessing: 100 connections from one source at once, each
// retrying a wrong password up to MaxAuthTries (6) times, get no more
// password checks than MaxAuthFailures (10) between them: failures are
// counted as they happen, checks under way count toward the limit, and once
// the source is blocked its open connections are closed. Before, all 600
// guesses were checked. The server's goroutines and heap come back, and a
// correct password logs in once the window has passed.
func TestParallelPasswordGuessing(t *testing.T) {
	clock := newTestClock()
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.PasswordHashes = map[string]string{"root": passwordHash(t, "s3cret")}
		s.now = clock.now
	})
	heap0, g0 := heapAfterGC(), runtime.NumGoroutine()
	const n = 100
	var wg sync.WaitGroup
	var loggedIn atomic.Int32
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.dial("root", gossh.RetryableAuthMethod(gossh.Password("wrong"), 6))
			if err == nil {
				loggedIn.Add(1)
				c.Close()
			}
		}()
	}
	wg.Wait()
	if loggedIn.Load() != 0 {
		t.Fatalf("%d connections logged in with a wrong password", loggedIn.Load())
	}
	waitFor(t, "connections to end", func() bool { return runtime.NumGoroutine() <= g0+2 })
	heap1 := heapAfterGC()
	checked := e.eventsWithReason(EventLoginFailure, "wrong password")
	t.Logf("%d connections × 6 wrong passwords: %d checked; heap %d KiB -> %d KiB; goroutines %d -> %d",
		n, checked, heap0>>10, heap1>>10, g0, runtime.NumGoroutine())
	if checked > 10 {
		t.Errorf("%d wrong passwords checked, want at most MaxAuthFailures (10)", checked)
	}
	if heap1 > heap0+2<<20 {
		t.Errorf("heap grew from %d to %d bytes over the flood", heap0, heap1)
	}
	// newConn closes a blocked source's connection as it comes.
	if err := e.checkClosed("root", gossh.Password("s3cret")); err != nil {
		t.Fatalf("the right password from a blocked source: %v", err)
	}
	clock.advance(time.Minute)
	c, err := e.dial("root", gossh.Password("s3cret"))
	if err != nil {
		t.Fatalf("right password after the window: %v", err)
	}
	c.Close()
}

// TestBlockedSourceClosesOpenConnections: a connection that is in the middle
// of authentication when its source reaches MaxAuthFailures on another
// connection is closed and never gets its password checked.
func TestBlockedSourceClosesOpenConnections(t *testing.T) {
	var checks atomic.Int32
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.PasswordHashes = map[string]string{"root": passwordHash(t, "s3cret")}
		s.MaxAuthFailures = 3
		s.compareHash = func(hash, pw []byte) error {
			checks.Add(1)
			return bcrypt.CompareHashAndPassword(hash, pw)
		}
	})
	asked, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		// Past the key exchange and the "none" probe, this client stops
		// before sending its password until released.
		c, err := e.dial("root", gossh.PasswordCallback(func() (string, error) {
			close(asked)
			<-release
			return "s3cret", nil
		}))
		if c != nil {
			c.Close()
		}
		held <- err
	}()
	<-asked
	// The third wrong password blocks the source, and closes its
	// unauthenticated connections, this one too, before its answer.
	if err := e.checkClosed("root", gossh.RetryableAuthMethod(gossh.Password("wrong"), 3)); err != nil {
		t.Fatalf("3 wrong passwords, MaxAuthFailures 3: %v", err)
	}
	waitFor(t, "the held connection to be closed", func() bool {
		return e.eventsWithReason(EventLoginFailure, errTooManyFailures.Error()) > 0
	})
	close(release)
	if err := <-held; err == nil {
		t.Error("the held connection logged in after its source was blocked")
	}
	if n := checks.Load(); n != 3 {
		t.Errorf("%d passwords checked, want the 3 wrong ones", n)
	}
}

// TestUnauthorizedKeysNotCounted: offering keys that are not authorized
// before the right one is what clients with several keys do; it does not
// count toward MaxAuthFailures.
func TestUnauthorizedKeysNotCounted(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.MaxAuthFailures = 2 })
	signers := []gossh.Signer{newSigner(t), newSigner(t), newSigner(t), e.key}
	for i := range 5 {
		c, err := e.dial("root", gossh.PublicKeys(signers...))
		if err != nil {
			t.Fatalf("login %d with the authorized key fourth: %v", i, err)
		}
		c.Close()
	}
	if e.srv.limiter.blocked("127.0.0.1", time.Now()) {
		t.Error("unauthorized key offers blocked the source")
	}
}

// readBanner reads the server's identification line from a raw connection.
func readBanner(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang guard, not a timing check
	buf := make([]byte, len("SSH-2.0-"+serverVersion))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading the server's banner: %v", err)
	}
	return string(buf)
}

func (s *Server) startupCounts() (unauth, admitted, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, su := range s.queue {
		if su.admitted {
			admitted++
		}
	}
	return len(s.unauth), admitted, len(s.queue) - admitted
}

// TestMaxStartups: of the connections that have not authenticated, only
// MaxStartups exchange keys at once, one source at most half of them; the
// others wait, without a byte from the server, and start in arrival order
// as slots free up; beyond 10×MaxStartups new ones are closed at once, with
// one log line for the lot and an audit event each. One source's idle
// connections held every slot: another tunnel's or address's login waited
// for the login grace time.
func TestMaxStartups(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.MaxStartups = 2
		s.MaxAuthFailures = -1 // the raw connections below end without logging in
	})
	g0 := runtime.NumGoroutine()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for i := range 19 { // one source: one slot, 18 waiting
		conns = append(conns, dial("127.0.0.1"))
		waitFor(t, "the connection to be tracked", func() bool { n, _, _ := e.srv.startupCounts(); return n == i+1 })
	}
	if _, admitted, waiting := e.srv.startupCounts(); admitted != 1 || waiting != 18 {
		t.Fatalf("one source: %d connections started and %d waiting, want 1 and 18", admitted, waiting)
	}
	other := dial("127.0.0.2") // another source: the other slot
	conns = append(conns, other)
	waitFor(t, "the other source's connection to be tracked", func() bool { n, _, _ := e.srv.startupCounts(); return n == 20 })
	if _, admitted, waiting := e.srv.startupCounts(); admitted != 2 || waiting != 18 {
		t.Fatalf("two sources: %d connections started and %d waiting, want 2 and 18", admitted, waiting)
	}
	for _, c := range []net.Conn{conns[0], other} {
		if got := readBanner(t, c); got != "SSH-2.0-"+serverVersion {
			t.Fatalf("banner %q", got)
		}
	}
	for range 5 {
		c := dial("127.0.0.3")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
			t.Errorf("connection over the limit: read %q, %v; want EOF at once", b, err)
		}
		c.Close()
	}
	if n := len(e.logs.logged("too many unauthenticated connections")); n != 1 {
		t.Errorf("%d log lines about refused connections, want 1", n)
	}
	if n := e.eventsWithReason(EventLoginFailure, "too many unauthenticated connections"); n != 5 {
		t.Errorf("%d audit events for refused connections, want 5", n)
	}
	// The first one leaves: the next of its source starts.
	conns[0].Close()
	if got := readBanner(t, conns[1]); got != "SSH-2.0-"+serverVersion {
		t.Fatalf("banner %q", got)
	}
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "unauthenticated connections to end", func() bool { n, _, _ := e.srv.startupCounts(); return n == 0 })
	waitFor(t, "goroutines back", func() bool { return runtime.NumGoroutine() <= g0+2 })
	e.login("root").Close()
}

// TestMaxStartupsAcrossSources: MaxStartups bounds the connections that
// exchange keys at once whatever their sources: with each source under its
// half, the one past the limit waits, and starts when a slot frees.
func TestMaxStartupsAcrossSources(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.MaxStartups = 2
		s.MaxAuthFailures = -1 // the raw connections below end without logging in
	})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i, from := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		waitFor(t, "the connection to be tracked", func() bool { n, _, _ := e.srv.startupCounts(); return n == i+1 })
	}
	if _, admitted, waiting := e.srv.startupCounts(); admitted != 2 || waiting != 1 {
		t.Fatalf("three sources, MaxStartups 2: %d connections started and %d waiting, want 2 and 1", admitted, waiting)
	}
	conns[0].Close()
	if got := readBanner(t, conns[2]); got != "SSH-2.0-"+serverVersion {
		t.Fatalf("banner %q after a slot freed", got)
	}
}

// TestHugeMaxStartups: a MaxStartups meant as no limit (math.MaxInt32, as
// a 32-bit device's math.MaxInt) lets a client in: startupsFull times it
// overflowed int to a negative bound, and every connection was closed
// before its banner.
func TestHugeMaxStartups(t *testing.T) {
	for _, n := range []int{math.MaxInt32, math.MaxInt} {
		e := newEnv(t, func(_ *testEnv, s *Server) { s.MaxStartups = n })
		e.login("root").Close()
	}
}

// TestConcurrentLoginsWait: 50 logins at once through one tunnel (one
// source, as in the end-to-end load test) all succeed with the default
// MaxStartups: those beyond 10 wait their turn instead of being closed.
func TestConcurrentLoginsWait(t *testing.T) {
	e := newEnv(t, nil)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		server, client := tcpPair(t)
		wg.Add(2)
		go func() {
			defer wg.Done()
			e.srv.ServeConn(tunnelConn{server})
		}()
		go func() {
			defer wg.Done()
			defer client.Close()
			cc, chans, reqs, err := gossh.NewClientConn(client, "tunnel", e.clientConfig("root", gossh.PublicKeys(e.key)))
			if err != nil {
				errs <- err
				return
			}
			gossh.NewClient(cc, chans, reqs).Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("login: %v", err)
	}
	for _, ev := range e.eventsOf(EventLoginFailure) {
		t.Errorf("refused: %+v", ev)
	}
}

// TestPasswordChecksBounded: at most passwordChecks bcrypt comparisons run at
// once; the others wait, and give up without comparing when the login
// grace time closes their connection.
func TestPasswordChecksBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
	}{
		{"released", 0},
		// Long enough for all six to reach the check first: the SSH
		// handshakes take 0.3 s and more under qemu-user on a loaded host.
		{"grace time", 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var running, most, calls atomic.Int32
			gate := make(chan struct{})
			open := sync.OnceFunc(func() { close(gate) })
			const n = 6
			e := newEnv(t, func(_ *testEnv, s *Server) {
				s.PasswordHashes = map[string]string{"root": passwordHash(t, "s3cret")}
				s.MaxAuthFailures = -1
				s.LoginGraceTime = tc.grace
				s.passwordChecks = 2
				s.MaxStartups = 2 * n // the n connections, one source, start at once
				s.compareHash = func(hash, pw []byte) error {
					calls.Add(1)
					r := running.Add(1)
					for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
					}
					<-gate
					defer running.Add(-1)
					return bcrypt.CompareHashAndPassword(hash, pw)
				}
			})
			// If the test fails early: let the checks go, wait for the
			// clients, then shut the server down (cleanups run last first).
			var wg sync.WaitGroup
			t.Cleanup(wg.Wait)
			t.Cleanup(open)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if tc.grace == 0 {
						if err := e.checkRefused("root", gossh.Password("wrong")); err != nil {
							t.Errorf("a wrong password: %v", err)
						}
						return
					}
					// The grace timer closes the connection, but its event
					// comes first: a check let run on it may still send
					// its refusal. The grace events below say that each
					// was cut.
					if err := e.checkLoginFails("root", []gossh.AuthMethod{gossh.Password("wrong")},
						"refused or closed by the server", func(err error) bool { return isRefusal(err) || isClosedByServer(err) }); err != nil {
						t.Errorf("a wrong password past the grace time: %v", err)
					}
				}()
			}
			waitFor(t, "2 checks running and 4 waiting", func() bool {
				return running.Load() == 2 && e.srv.pwWaiting.Load() == n-2
			})
			if tc.grace > 0 {
				waitFor(t, "the waiting checks to give up", func() bool { return e.srv.pwWaiting.Load() == 0 })
				// The two running checks' connections time out too; one that was
				// slower to start (emulated CPUs) may not have yet.
				waitFor(t, "every connection's grace time", func() bool {
					return e.eventsWithReason(EventLoginFailure, "login grace time exceeded") == n
				})
			}
			open()
			wg.Wait()
			want := int32(n)
			if tc.grace > 0 {
				want = 2
			}
			if most.Load() != 2 || calls.Load() != want {
				t.Errorf("%d checks at most at once, %d in all; want 2 and %d", most.Load(), calls.Load(), want)
			}
			if got := e.eventsWithReason(EventLoginFailure, "login grace time exceeded"); tc.grace > 0 && got != n {
				t.Errorf("%d grace time events, want %d", got, n)
			}
		})
	}
}

func TestFailureLimiterReservesChecks(t *testing.T) {
	l := newFailureLimiter(2, time.Minute)
	t0 := time.Unix(1000, 0)
	first := l.begin("a", t0)
	if second := l.begin("a", t0); !first || !second {
		t.Fatal("first two checks refused")
	}
	if l.begin("a", t0) {
		t.Error("a third check began while two were under way with a limit of 2")
	}
	if !l.begin("b", t0) {
		t.Error("another source refused")
	}
	l.end("b", false, t0)
	if l.end("a", false, t0) {
		t.Error("blocked after a success")
	}
	if !l.begin("a", t0) {
		t.Fatal("check refused after one ended")
	}
	if l.end("a", true, t0) {
		t.Error("blocked after 1 failure")
	}
	if !l.end("a", true, t0) || !l.blocked("a", t0) {
		t.Error("not blocked after 2 failures")
	}
	if len(l.pending) != 0 {
		t.Errorf("pending checks left: %v", l.pending)
	}
	if l.begin("a", t0.Add(30*time.Second)) {
		t.Error("check began while blocked")
	}
	if !l.begin("a", t0.Add(time.Minute)) {
		t.Error("check refused after the window")
	}
	off := newFailureLimiter(-1, time.Minute)
	if !off.begin("a", t0) || off.end("a", true, t0) {
		t.Error("disabled limiter refused")
	}
}

// TestKeyExchangeFailuresNotCounted: connections that end before they ask to
// authenticate (no common algorithm, a host key the client does not know,
// ssh-keyscan) guess nothing and do not count toward MaxAuthFailures; ten of
// them once locked the source, through a tunnel every operator of it, out.
func TestKeyExchangeFailuresNotCounted(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.MaxAuthFailures = 2 })
	for i := range 5 {
		cfg := e.clientConfig("root", gossh.PublicKeys(e.key))
		cfg.HostKeyCallback = func(string, net.Addr, gossh.PublicKey) error { return errors.New("unknown host key (test)") }
		if c, err := gossh.Dial("tcp", e.addr, cfg); err == nil {
			c.Close()
			t.Fatalf("connection %d: a client that refused the host key logged in", i)
		}
	}
	// Each connection is counted, or not, when its goroutine ends: a login
	// waits for the ones before it to be done with (a hang guard, not timing).
	if c, err := e.dial("root", gossh.PublicKeys(e.key)); err != nil {
		t.Fatalf("login after refused host keys: %v", err)
	} else {
		c.Close()
	}
	if e.srv.limiter.blocked("127.0.0.1", time.Now()) {
		t.Fatal("connections that ended in the key exchange blocked the source")
	}
	// A client that asked to authenticate and gave up still counts.
	bad := newSigner(t)
	for range 2 {
		e.refuse("root", gossh.PublicKeys(bad))
	}
	waitFor(t, "failures counted", func() bool { return e.srv.limiter.blocked("127.0.0.1", time.Now()) })
}

// TestPreAuthReadBounded: a client may send at most maxPreAuthRead bytes before
// it has logged in; the connection is then closed, with a line and an event.
// x/crypto reads ahead of its authentication loop into a queue of 16 packets of
// up to 256 KiB, and a client that goes on sending while a password check runs
// filled it: about 4.5 MiB per connection, 45 MiB for the ten MaxStartups lets
// in, on a 64 MB device. Here the client sends SSH_MSG_IGNORE packets, which
// x/crypto reads and drops before the key exchange as after it.
func TestPreAuthReadBounded(t *testing.T) {
	e := newEnv(t, nil)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Unencrypted packets: length, padding length, SSH_MSG_IGNORE (2) and its
	// string, padding to a multiple of 8.
	data := make([]byte, 32<<10)
	payload := append([]byte{2, 0, 0, byte(len(data) >> 8), byte(len(data))}, data...)
	pad := 8 - (5+len(payload))%8
	if pad < 4 {
		pad += 8
	}
	n := 1 + len(payload) + pad
	pkt := append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), byte(pad)}, payload...)
	pkt = append(pkt, make([]byte, pad)...)
	go func() {
		if _, err := conn.Write([]byte("SSH-2.0-flood\r\n")); err != nil {
			return
		}
		for range 20 { // 640 KiB
			if _, err := conn.Write(pkt); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, conn) // the server's version and KEXINIT, then the end
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection is still open 10 s after the client sent 640 KiB before logging in")
	}
	waitFor(t, "the event", func() bool {
		return e.eventsWithReason(EventLoginFailure, "more than 512 KiB sent before the login") == 1
	})
	if len(e.logs.logged(`msg="more than 512 KiB sent before the login" remote=`)) != 1 {
		t.Error("no log line for the connection closed")
	}
}

// failures is the number of failed logins l holds for src.
func (l *failureLimiter) failures(src string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.hits[src])
}

// TestCountedFailuresHaveEvents: every failed login the failure limiter counts
// has one login-failure event and log line. A connection that asked for "none"
// only (what an OpenSSH client sends that gives up at its password prompt, or
// in BatchMode with no key) and one whose security key's signature lacked the
// touch (x/crypto ends the connection over it without calling the server's
// login callbacks) had none: ten of them locked the source out with no record.
// They have x/crypto's reason, the second the key too; a connection that had
// an event already (a refused password, refused keys) gets no second one.
func TestCountedFailuresHaveEvents(t *testing.T) {
	sk := newSKSigner(t)
	sk.touched = false
	bad := newSigner(t)
	for _, tc := range []struct {
		name   string
		auth   []gossh.AuthMethod
		method string
		key    gossh.PublicKey
		reason string
		closed bool // the server ends the connection instead of refusing the login
	}{
		{name: "none only", reason: "the client closed the connection before logging in"},
		// x/crypto's server ends the handshake on a signature it rejects.
		{name: "security key not touched", auth: []gossh.AuthMethod{gossh.PublicKeys(sk)}, method: "publickey", key: sk.PublicKey(), reason: "ssh: signature missing required user presence flag", closed: true},
		{name: "wrong password", auth: []gossh.AuthMethod{gossh.Password("guess")}, method: "password", reason: "wrong password"},
		{name: "unauthorized key", auth: []gossh.AuthMethod{gossh.PublicKeys(bad)}, method: "publickey", key: bad.PublicKey(), reason: "key not in authorized_keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(_ *testEnv, s *Server) {
				s.PasswordHashes = map[string]string{"root": passwordHash(t, "s3cret")}
			})
			e.writeAuthorizedKeys("root", authorizedLine("", sk.PublicKey()))
			check := e.checkRefused
			if tc.closed {
				check = e.checkClosed
			}
			if err := check("root", tc.auth...); err != nil {
				t.Fatal(err)
			}
			// Counted when the connection's goroutine ends, after its events.
			waitFor(t, "the failure counted", func() bool { return e.srv.limiter.failures("127.0.0.1") == 1 })
			want := Event{Type: EventLoginFailure, Method: tc.method, Reason: tc.reason}
			if tc.key != nil {
				want.KeyFingerprint = gossh.FingerprintSHA256(tc.key)
			}
			evs := e.eventsOf(EventLoginFailure)
			checkRefusals(t, evs, []Event{want})
			if len(evs) == 1 && (evs[0].User != "root" || evs[0].SessionID == "") {
				t.Errorf("login failure event with user %q, session_id %q; want root's, and the connection's", evs[0].User, evs[0].SessionID)
			}
			if n := len(e.logs.logged("level=INFO", "login refused", "reason="+strconv.Quote(tc.reason))); n != 1 {
				t.Errorf("%d INFO lines of the refused login with its reason, want 1", n)
			}
		})
	}
}
