package sshd

// The file's name sorts after limits.go on purpose: go build compiles a
// package's files in name order and the linker lays their code out in that
// order, and the server's start-time code (accounts.go to limits.go) ends a
// few KB before a 64 KiB window that an idle agent does not touch (make
// idle-layout). Code that runs only with a connection, as the connections here,
// belongs after it (docs/size.md, "Thirty-fifth round").

import (
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// conn wraps every accepted net.Conn. It enforces the login grace time, the
// idle timeout and the maximum connection time with timers rather than
// deadlines, so any net.Conn works (a tunnel stream may not support
// deadlines), and it carries the connection's state.
type conn struct {
	// Conn is a named field, not embedded: embedded, conn and *conn both had
	// its promoted methods linked as wrappers (docs/size.md).
	Conn net.Conn
	srv  *Server
	st   *connState

	// born is when the connection was accepted, with its monotonic clock
	// reading; lastActive is the time from born to the last byte read or
	// written. Measured so rather than in wall-clock nanoseconds, the idle
	// timeout does not move when the wall clock is stepped (NTP's first answer
	// on a router, date -s): back by hours, an idle connection stayed open
	// hours longer; forward, an active one was closed at the next check.
	born       time.Time
	lastActive atomic.Int64

	closeOnce sync.Once
	closeErr  error
	// done is closed with the connection, by whoever closes it (the login grace
	// timer, Close, a blocked source): the waits before authentication (for a
	// MaxStartups slot, for a password check) end on it.
	done chan struct{}

	mu     sync.Mutex
	timers []*time.Timer
	closed bool

	preAuthRead int // bytes read before the login; only x/crypto's reader reads
	// closeAfterWrite closes the connection after its next write: the
	// USERAUTH_FAILURE that follows tooManyKeys' banner, which PuTTY shows
	// only once another message has come.
	closeAfterWrite atomic.Bool
}

// maxPreAuthRead bounds what a client may send before it has logged in.
// x/crypto reads ahead of its authentication loop into a queue of 16 packets
// of up to 256 KiB: while a password check waits for its slot or runs (bcrypt,
// seconds on a router) a client that goes on sending fills it, about 4.5 MiB
// per connection, 45 MiB for the 10 that MaxStartups lets in. A key exchange
// and MaxAuthTries keys or certificates are a few KiB. (OpenSSH's pre-auth
// process reads only as it goes, so TCP holds a client back.)
const maxPreAuthRead = 512 << 10

var errPreAuthRead error = &errorString{"more than 512 KiB sent before the login"}

func newConn(s *Server, c net.Conn, label, src string) *conn {
	wc := &conn{Conn: c, srv: s, done: make(chan struct{})}
	wc.st = &connState{remote: label, src: src, ip: remoteIP(c.RemoteAddr()), conn: wc}
	wc.born = time.Now()
	return wc
}

// startTimers arms the grace, idle and lifetime timers.
func (c *conn) startTimers() {
	s := c.srv
	grace := s.LoginGraceTime
	if grace == 0 {
		grace = 2 * time.Minute
	}
	if grace > 0 {
		c.after(grace, func() {
			if !c.st.authed.Load() {
				c.closeUnauthed("login grace time exceeded")
			}
		})
	}
	if s.MaxSessionTime > 0 {
		c.after(s.MaxSessionTime, func() {
			s.log().Info("maximum session time reached", "remote", c.st.remote)
			c.st.setEndReason("maximum session time reached")
			c.Close()
		})
	}
	if idle := s.IdleTimeout; idle > 0 {
		var check func()
		var t *time.Timer
		check = func() {
			since := time.Since(c.born) - time.Duration(c.lastActive.Load())
			if since >= idle {
				s.log().Info("idle timeout", "remote", c.st.remote)
				c.st.setEndReason("idle timeout")
				c.Close()
				return
			}
			c.mu.Lock()
			if !c.closed {
				t.Reset(idle - since)
			}
			c.mu.Unlock()
		}
		c.mu.Lock()
		if !c.closed { // as after: Close may have come first
			t = time.AfterFunc(idle, check)
			c.timers = append(c.timers, t)
		}
		c.mu.Unlock()
	}
}

func (c *conn) after(d time.Duration, f func()) {
	c.mu.Lock()
	if !c.closed {
		c.timers = append(c.timers, time.AfterFunc(d, f))
	}
	c.mu.Unlock()
}

// touch records activity now.
func (c *conn) touch() { c.lastActive.Store(int64(time.Since(c.born))) }

func (c *conn) Read(b []byte) (int, error) {
	if !c.st.authed.Load() {
		left := maxPreAuthRead - c.preAuthRead
		if left <= 0 {
			c.closeUnauthed(errPreAuthRead.Error())
			return 0, errPreAuthRead
		}
		b = b[:min(len(b), left)]
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.touch()
		if !c.st.authed.Load() {
			c.preAuthRead += n
		}
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.touch()
	}
	if c.closeAfterWrite.Load() {
		c.closeUnauthed(errTooManyTries.Error())
	}
	return n, err
}

// Close stops the timers and closes the underlying connection once.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		for _, t := range c.timers {
			t.Stop()
		}
		c.mu.Unlock()
		close(c.done)
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

func (c *conn) LocalAddr() net.Addr  { return c.Conn.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr { return c.Conn.RemoteAddr() }

// Deadlines are ignored: timeouts are timers here, and gliderlabs would
// otherwise reset the deadline on every read and write.
func (c *conn) SetDeadline(time.Time) error      { return nil }
func (c *conn) SetReadDeadline(time.Time) error  { return nil }
func (c *conn) SetWriteDeadline(time.Time) error { return nil }

// connState is what the server knows about one connection.
type connState struct {
	remote string     // label for logs and audit
	src    string     // rate limiting key
	ip     netip.Addr // client IP, invalid for non-IP connections
	conn   *conn
	// ctx is gliderlabs' context of the connection, set by connCallback: it
	// holds the *gossh.ServerConn once the client has logged in, whose Wait
	// says why the connection ended (logEnd).
	ctx gliderssh.Context
	// preAuth sends banners before the login (tooManyKeys); set by x/crypto
	// as authentication starts, used by the same goroutine.
	preAuth gossh.ServerPreAuthConn

	authed atomic.Bool
	// triedAuth: the client asked to authenticate (any method, "none"
	// included). A connection that ends before is no failed login.
	triedAuth atomic.Bool
	// loggedFailure: a login-failure event was sent for the connection
	// (loginRefused, unauthEvent); if none was when it ends without logging
	// in, reportLoginEnd sends one.
	loggedFailure atomic.Bool
	// fwdLog limits the lines of its forwards refused or failed.
	fwdLog logLimit
	// changedUser: the client changed its user name and changedUser closed
	// the connection; said once.
	changedUser atomic.Bool
	// failErr is x/crypto's error for a connection whose key exchange or
	// login failed, set by connectionFailed and read by reportLoginEnd, both
	// on the connection's goroutine; nil: none, or not known.
	failErr error

	mu sync.Mutex
	// lastKey and lastReason are the key the server's checks last saw (offered
	// or verified) and why they refused it, until authLog takes them for the
	// attempt's event; zero: none since.
	lastKey    authInfo
	lastReason string
	// takenErr, takenKey and takenReason are the refusal authLog last took a
	// key for: x/crypto answers a key offered again from its cache, with
	// the error value the server's callback gave and without calling it (a
	// client holding one key twice, in its agent and as a file), so the same
	// error is the same key's attempt.
	takenErr    error
	takenKey    authInfo
	takenReason string
	// sessionID and user are the connection's SSH session identifier (hex)
	// and the login name last asked for (clipped), once it has tried to
	// authenticate: for the events of a connection closed before it logged
	// in (login grace time, too many failures), which carry them as the
	// others of the connection do.
	sessionID, user string
	// loginUser is the user name of the connection's first authentication
	// request, unclipped; loginUserSet says there was one (see sameLoginUser).
	loginUser    string
	loginUserSet bool
	// endReason says why the server closed the connection (a limit), for
	// the session-end events of its sessions.
	endReason   string
	refusedKeys int // public keys refused so far (MaxAuthTries, as OpenSSH counts)
	// lacked says a login was refused for the server's own lack
	// (refusedForLackOf), judged that a key was refused on its merits.
	lacked, judged bool
	// keyRefusals are the login-failure events of refused public keys, held
	// until the connection ends (reportKeyRefusals); moreKeyRefusals counts
	// those past maxKeyRefusals.
	keyRefusals     []Event
	moreKeyRefusals int
	active          int // channel handlers and forward listeners running
	done            bool
	idle            chan struct{} // closed when done and active drops to 0
	forwards        map[string]*remoteForward
}

type stateKey struct{}

// connCallback attaches the connection's state to the gliderlabs context.
func (s *Server) connCallback(ctx gliderssh.Context, c net.Conn) net.Conn {
	wc := c.(*conn)
	ctx.SetValue(stateKey{}, wc.st)
	wc.st.ctx = ctx
	return c
}

func stateFrom(ctx gliderssh.Context) *connState {
	return ctx.Value(stateKey{}).(*connState)
}

// enter registers a goroutine that serves the connection; false means the
// connection is ending and the goroutine must not start its work.
func (st *connState) enter() bool {
	st.mu.Lock()
	ok := !st.done
	if ok {
		st.active++
	}
	st.mu.Unlock()
	return ok
}

func (st *connState) leave() {
	st.mu.Lock()
	st.active--
	if st.done && st.active == 0 && st.idle != nil {
		close(st.idle)
		st.idle = nil
	}
	st.mu.Unlock()
}

// shutdown closes the remote forward listeners and waits for every
// goroutine registered with enter to leave.
func (st *connState) shutdown() {
	st.mu.Lock()
	st.done = true
	for k, l := range st.forwards {
		l.Close()
		delete(st.forwards, k)
	}
	var wait chan struct{}
	if st.active > 0 {
		st.idle = make(chan struct{})
		wait = st.idle
	}
	st.mu.Unlock()
	if wait != nil {
		<-wait
	}
}

func (st *connState) setEndReason(r string) {
	st.mu.Lock()
	st.endReason = r
	st.mu.Unlock()
}

// sameLoginUser reports whether user, the user name of an authentication
// request, is the one the connection's first request named, which it records.
// SSH lets each request name another user, and x/crypto takes the last one as
// the connection's, while gliderlabs' context keeps the first: a password
// checked as the first user's would log the client in as another, root say.
// OpenSSH refuses a change of user, and so does the server (changedUser).
func (st *connState) sameLoginUser(user string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loginUserSet {
		st.loginUser, st.loginUserSet = user, true
	}
	return user == st.loginUser
}

// requestUser is the user name of the authentication request being answered
// (x/crypto's, for gliderlabs' handlers whose context has the first one), and
// whether it is the connection's first (sameLoginUser).
func (st *connState) requestUser(ctx gliderssh.Context) (string, bool) {
	user := ctx.User()
	if st.preAuth != nil {
		user = st.preAuth.User()
	}
	return user, st.sameLoginUser(user)
}

// noteAuth records cm's session identifier and user name (see sessionID).
func (st *connState) noteAuth(cm gossh.ConnMetadata) {
	id, user := hex.EncodeToString(cm.SessionID()), clipClient(cm.User())
	st.mu.Lock()
	st.sessionID, st.user = id, user
	st.mu.Unlock()
}

// closeUnauthed closes a connection that has not logged in, for reason, with
// a line and a login-failure event.
func (c *conn) closeUnauthed(reason string) {
	c.srv.log().Info(reason, "remote", c.st.remote)
	ev := c.st.unauthEvent(reason)
	c.srv.audit(&ev)
	c.Close()
}

// unauthEvent is the login-failure event of a connection closed before it
// logged in, for reason. The caller sends it.
func (st *connState) unauthEvent(reason string) Event {
	st.loggedFailure.Store(true)
	st.mu.Lock()
	e := Event{Type: EventLoginFailure, Remote: st.remote, SessionID: st.sessionID, User: st.user, Reason: reason}
	st.mu.Unlock()
	return e
}

func (st *connState) setKey(k authInfo, reason string) {
	st.mu.Lock()
	st.lastKey, st.lastReason = k, reason
	st.mu.Unlock()
}

// takeKey returns the key and reason setKey recorded for the attempt authLog
// reports, and forgets them: x/crypto refuses some attempts before the
// server's checks see them (a signature algorithm it does not accept, as
// ssh-rsa's SHA-1; a method that is off), and their events named the key and
// reason of the attempt before. For such an attempt (refused, with no reason
// of the server's) it returns no key: the one last seen may be another's, and
// x/crypto gives authLog none. An accepted query has no authLog call: its key
// is left for its signature's.
func (st *connState) takeKey(refused bool) (k authInfo, reason string) {
	st.mu.Lock()
	k, reason = st.lastKey, st.lastReason
	st.lastKey, st.lastReason = authInfo{}, ""
	st.mu.Unlock()
	if refused && reason == "" {
		k = authInfo{}
	}
	return k, reason
}

// takeRefusal is takeKey for authLog's refused publickey attempt, whose error
// is err: a key x/crypto answered from its cache (err is the value the
// server's callback gave for it, which takeKey has already taken) keeps the
// key and reason of that first answer.
func (st *connState) takeRefusal(err error) (k authInfo, reason string) {
	k, reason = st.takeKey(true)
	st.mu.Lock()
	switch {
	case reason != "":
		st.takenErr, st.takenKey, st.takenReason = err, k, reason
	case errors.Is(err, st.takenErr): // not ==: an error's type may not be comparable
		k, reason = st.takenKey, st.takenReason
	}
	st.mu.Unlock()
	return k, reason
}

// refused notes a refused login: whether it was a public key's (counted
// against MaxAuthTries: keysExhausted reports whether limit of them have been
// refused already, limit < 0: no limit), and whether it was refused for the
// server's own lack (refusedForLackOf) rather than on its merits. A password
// refused on its merits is counted at once (limitedCheckPassword).
func (st *connState) refused(key, lacked bool) {
	st.mu.Lock()
	if key {
		st.refusedKeys++
		st.judged = st.judged || !lacked
	}
	st.lacked = st.lacked || lacked
	st.mu.Unlock()
}

// onlyLacked reports whether the connection's refusals were all for the
// server's own lack, no guess judged: it is not a failed login (endStartup).
func (st *connState) onlyLacked() bool {
	st.mu.Lock()
	only := st.lacked && !st.judged
	st.mu.Unlock()
	return only
}

func (st *connState) keysExhausted(limit int) bool {
	st.mu.Lock()
	n := st.refusedKeys
	st.mu.Unlock()
	return limit >= 0 && n >= limit
}
