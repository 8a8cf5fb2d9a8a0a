package sshd

import (
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// refusalEnv is a server with a password for alice and a trusted CA, and a
// way to answer requests on connections of its own, as the login handlers
// see them.
type refusalEnv struct {
	*testEnv
	ca gossh.Signer // in TrustedUserCAKeysFiles
}

func newRefusalEnv(t *testing.T, configure func(s *Server)) *refusalEnv {
	hash, err := bcrypt.GenerateFromPassword([]byte("alices"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	re := &refusalEnv{ca: newSigner(t)}
	re.testEnv = newEnv(t, func(e *testEnv, s *Server) {
		caFile := filepath.Join(e.dir, "ca.pub")
		writeFile(t, caFile, string(gossh.MarshalAuthorizedKey(re.ca.PublicKey())))
		s.TrustedUserCAKeysFiles = []string{caFile}
		s.PasswordHashes = map[string]string{"alice": string(hash)}
		s.MaxAuthFailures = -1
		if configure != nil {
			configure(s)
		}
	})
	return re
}

// request is a connection of user's, with the context gliderlabs' handlers
// get and the metadata x/crypto's callbacks get.
func (re *refusalEnv) request(t *testing.T, user string) (*connState, *requestOf, *firstUserCtx) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	c := newConn(re.srv, a, "pipe", "pipe")
	req := &requestOf{user: user}
	c.st.preAuth = req
	return c.st, req, &firstUserCtx{st: c.st, user: user, perms: &gliderssh.Permissions{Permissions: &gossh.Permissions{}}}
}

// TestRefusalTakesUserDelay: a refused public key, certificate or password
// is answered no sooner than userDelay of its user after it was asked, as
// OpenSSH's sshd pads every refused attempt (auth2.c). Without it a missing
// user's key was refused in half the time of an existing user's, whose
// files were read, and a forged certificate naming a trusted CA later than
// one naming another CA: a client could tell which users exist, and which CA
// is trusted. Lower bounds only: a busy machine makes every answer later.
func TestRefusalTakesUserDelay(t *testing.T) {
	re := newRefusalEnv(t, nil)
	forged := func(ca gossh.Signer) gossh.PublicKey {
		c := *newCert(t, ca, newSigner(t), func(c *gossh.Certificate) {
			c.ValidPrincipals = []string{"alice"}
		}).PublicKey().(*gossh.Certificate)
		sig := *c.Signature
		sig.Blob = make([]byte, len(sig.Blob)) // the CA never signed this
		c.Signature = &sig
		return &c
	}
	for _, tc := range []struct {
		name, user string
		refused    func(st *connState, req *requestOf, ctx *firstUserCtx) bool
	}{
		{"key of a missing user", "mallory", func(_ *connState, _ *requestOf, ctx *firstUserCtx) bool {
			return !re.srv.publicKeyHandler(ctx, re.key.PublicKey())
		}},
		{"key not authorized", "alice", func(_ *connState, _ *requestOf, ctx *firstUserCtx) bool {
			return !re.srv.publicKeyHandler(ctx, newSigner(t).PublicKey())
		}},
		{"key of a user without authorized_keys", "carol", func(_ *connState, _ *requestOf, ctx *firstUserCtx) bool {
			return !re.srv.publicKeyHandler(ctx, re.key.PublicKey())
		}},
		{"forged certificate of the trusted CA", "alice", func(_ *connState, _ *requestOf, ctx *firstUserCtx) bool {
			return !re.srv.publicKeyHandler(ctx, forged(re.ca))
		}},
		{"forged certificate of another CA", "alice", func(_ *connState, _ *requestOf, ctx *firstUserCtx) bool {
			return !re.srv.publicKeyHandler(ctx, forged(newSigner(t)))
		}},
		{"signed key not authorized", "alice", func(st *connState, req *requestOf, _ *firstUserCtx) bool {
			_, err := re.srv.verifiedKey(st, req, newSigner(t).PublicKey())
			return err != nil
		}},
		{"password of a missing user", "mallory", func(_ *connState, _ *requestOf, ctx *firstUserCtx) bool {
			return !re.srv.passwordHandler(ctx, "alices")
		}},
		{"wrong password", "alice", func(_ *connState, _ *requestOf, ctx *firstUserCtx) bool {
			return !re.srv.passwordHandler(ctx, "wrong")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, req, ctx := re.request(t, tc.user)
			start := time.Now()
			if !tc.refused(st, req, ctx) {
				t.Fatal("accepted")
			}
			if took, want := time.Since(start), userDelay(tc.user); took < want {
				t.Errorf("refused in %v, want at least %v (userDelay(%q))", took, want, tc.user)
			}
		})
	}
}

// TestUserDelay: a user's delay is the same at every attempt (averaging
// cannot take it out), within OpenSSH's 5 to 9.3 ms, and differs from user
// to user, whether the user exists or not.
func TestUserDelay(t *testing.T) {
	seen := map[time.Duration]bool{}
	for _, user := range []string{"root", "alice", "mallory", "", "a-much-longer-user-name-than-most"} {
		d := userDelay(user)
		if d < minFailDelay || d >= minFailDelay+4295*time.Microsecond {
			t.Errorf("userDelay(%q) = %v, want 5 ms to 9.3 ms", user, d)
		}
		for range 3 {
			if again := userDelay(user); again != d {
				t.Errorf("userDelay(%q) = %v, then %v", user, d, again)
			}
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Errorf("every user's delay is %v", userDelay("root"))
	}
}

// TestRefusalDelayHoldsNothing: a refused attempt's wait ends when its
// connection is closed (the login grace timer, a blocked source), and it
// holds no password check slot: another connection's password is checked
// meanwhile, with one slot.
func TestRefusalDelayHoldsNothing(t *testing.T) {
	var checks atomic.Int32
	re := newRefusalEnv(t, func(s *Server) {
		s.refusalDelay = func(string) time.Duration { return time.Hour } // ended only by a close
		s.passwordChecks = 1
		s.compareHash = func(hash, pw []byte) error {
			checks.Add(1)
			return bcrypt.CompareHashAndPassword(hash, pw)
		}
	})
	// If the test fails early: close the connections, then wait for their
	// attempts (cleanups run last first).
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	refused := func(st *connState, attempt func() bool) chan bool {
		done := make(chan bool, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			done <- attempt()
		}()
		t.Cleanup(func() { st.conn.Close() })
		return done
	}
	stA, _, ctxA := re.request(t, "alice")
	doneA := refused(stA, func() bool { return re.srv.passwordHandler(ctxA, "wrong") })
	waitFor(t, "the first password to be checked", func() bool { return checks.Load() == 1 })
	stB, _, ctxB := re.request(t, "mallory")
	refused(stB, func() bool { return re.srv.passwordHandler(ctxB, "wrong") })
	waitFor(t, "the second password to be checked while the first refusal waits", func() bool { return checks.Load() == 2 })
	stC, _, ctxC := re.request(t, "mallory")
	doneC := refused(stC, func() bool { return re.srv.publicKeyHandler(ctxC, newSigner(t).PublicKey()) })
	for _, tc := range []struct {
		name string
		st   *connState
		done chan bool
	}{{"password", stA, doneA}, {"public key", stC, doneC}} {
		select {
		case ok := <-tc.done:
			t.Fatalf("%s answered (accepted %v) before its connection closed", tc.name, ok)
		default:
		}
		tc.st.conn.Close()
		if <-tc.done {
			t.Errorf("%s accepted", tc.name)
		}
	}
}

// TestRefusalPadAfterSlotWait: a refused password's pad counts from when its
// check got a slot, not from the request: counted from the request, the wait
// for a slot (another connection's check) doubled the pad past it, and the
// refusal came up to that wait later again. The other check holds the slot
// 1.344 s (5 ms × 2⁸ × 1.05): padded from the request, the refusal comes at
// 5 ms × 2⁹ = 2.56 s; from the slot, 5 ms after it.
func TestRefusalPadAfterSlotWait(t *testing.T) {
	const hold = 1344 * time.Millisecond
	var n atomic.Int32
	re := newRefusalEnv(t, func(s *Server) {
		s.passwordChecks = 1
		s.refusalDelay = func(string) time.Duration { return 5 * time.Millisecond }
		s.compareHash = func(hash, pw []byte) error {
			if n.Add(1) == 1 {
				time.Sleep(hold) // another connection's check holds the slot
			}
			return bcrypt.CompareHashAndPassword(hash, pw)
		}
	})
	_, _, first := re.request(t, "alice")
	firstDone := make(chan struct{})
	go func() { re.srv.passwordHandler(first, "wrong"); close(firstDone) }()
	defer func() { <-firstDone }()
	waitFor(t, "the first check", func() bool { return n.Load() == 1 })
	_, _, second := re.request(t, "mallory")
	start := time.Now()
	if re.srv.passwordHandler(second, "wrong") {
		t.Fatal("a wrong password was accepted")
	}
	if took := time.Since(start); took >= 2*time.Second {
		t.Errorf("refused after %v, behind a check that held the slot %v: the pad counted the wait", took, hold)
	}
}
