package sshd

import (
	"net"
	"testing"

	gliderssh "github.com/gliderlabs/ssh"
	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// requestOf stands for x/crypto's connection during authentication: User is
// the name of the request being answered.
type requestOf struct {
	gossh.ServerPreAuthConn
	user string
}

func (r *requestOf) User() string      { return r.user }
func (r *requestOf) SessionID() []byte { return []byte("id") }

// firstUserCtx stands for gliderlabs' context, which keeps the user name of
// the connection's first request.
type firstUserCtx struct {
	gliderssh.Context
	st    *connState
	user  string
	perms *gliderssh.Permissions
}

func (c *firstUserCtx) Value(k any) any {
	if k == (stateKey{}) {
		return c.st
	}
	return nil
}
func (c *firstUserCtx) User() string                        { return c.user }
func (c *firstUserCtx) Permissions() *gliderssh.Permissions { return c.perms }

// TestChangedUserRefused: SSH lets each authentication request name another
// user, x/crypto takes the last one as the connection's, and gliderlabs'
// context keeps the first. A client that named alice (a public-key query with
// a throwaway key), then sent alice's password in a request naming root, was
// checked as alice and logged in as root. As OpenSSH ("Change of username or
// service not allowed"), a change of user is refused and ends the connection,
// whatever the request holds; the same user goes on as before.
func TestChangedUserRefused(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("alices"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(e *testEnv, s *Server) {
		s.PasswordHashes = map[string]string{"alice": string(hash)}
	})
	start := func(first string) (*connState, *requestOf, *firstUserCtx, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		c := newConn(e.srv, a, "pipe", "pipe")
		req := &requestOf{user: first}
		c.st.preAuth = req
		ctx := &firstUserCtx{st: c.st, user: first, perms: &gliderssh.Permissions{Permissions: &gossh.Permissions{}}}
		return c.st, req, ctx, b
	}
	closed := func(st *connState) bool {
		select {
		case <-st.conn.done:
			return true
		default:
			return false
		}
	}

	t.Run("password", func(t *testing.T) {
		st, req, ctx, _ := start("alice")
		if e.srv.publicKeyHandler(ctx, newSigner(t).PublicKey()) || closed(st) {
			t.Fatal("a throwaway key was accepted, or the connection closed")
		}
		req.user = "root"
		if e.srv.passwordHandler(ctx, "alices") {
			t.Fatal("alice's password in a request naming root was accepted")
		}
		if !closed(st) {
			t.Error("the connection that changed its user is still open")
		}
		if got := e.logs.logged("changed its user name", `\"alice\"`, `\"root\"`); len(got) != 1 {
			t.Errorf("logged %q, want one line naming both users", got)
		}
		if !st.loggedFailure.Load() {
			t.Error("no login-failure event")
		}
	})
	t.Run("public key", func(t *testing.T) {
		st, req, ctx, _ := start("alice")
		e.srv.authLog(st, req, "none", gossh.ErrNoAuth) // the first request: alice's "none"
		req.user = "root"
		if e.srv.publicKeyHandler(ctx, e.key.PublicKey()) {
			t.Fatal("alice's key in a request naming root was accepted")
		}
		if !closed(st) {
			t.Error("the connection that changed its user is still open")
		}
	})
	t.Run("after a refused password", func(t *testing.T) {
		// A refused password records a login failure; the change of user
		// after it is still said and ends the connection.
		st, req, ctx, _ := start("alice")
		if e.srv.passwordHandler(ctx, "wrong") || closed(st) {
			t.Fatal("a wrong password was accepted, or the connection closed")
		}
		e.srv.authLog(st, req, "password", gossh.ErrNoAuth) // as x/crypto logs the attempt
		req.user = "root"
		before := len(e.logs.logged("changed its user name"))
		if e.srv.passwordHandler(ctx, "alices") {
			t.Fatal("alice's password in a request naming root was accepted")
		}
		if !closed(st) {
			t.Error("the connection that changed its user after a refused password is still open")
		}
		if got := e.logs.logged("changed its user name"); len(got) != before+1 {
			t.Errorf("logged %q, want one more line", got)
		}
	})
	t.Run("none", func(t *testing.T) {
		// "none" requests reach no handler, only x/crypto's log callback.
		st, req, _, _ := start("alice")
		e.srv.authLog(st, req, "none", gossh.ErrNoAuth)
		if closed(st) {
			t.Fatal("the connection closed after alice's none")
		}
		req.user = "root"
		e.srv.authLog(st, req, "none", gossh.ErrNoAuth)
		if !closed(st) {
			t.Error("the connection whose none named another user is still open")
		}
	})
	t.Run("same user", func(t *testing.T) {
		st, _, ctx, _ := start("alice")
		if e.srv.publicKeyHandler(ctx, newSigner(t).PublicKey()) {
			t.Fatal("a throwaway key was accepted")
		}
		if !e.srv.passwordHandler(ctx, "alices") || closed(st) {
			t.Error("alice's password for alice was refused, or the connection closed")
		}
	})
}
