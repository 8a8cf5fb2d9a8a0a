package sshd

// What a login runs: the handlers x/crypto and gliderlabs call as a client
// authenticates (public key, password), its log line and audit event, the
// limits on its attempts, and the opening of an authorized_keys file with its
// user's permissions (openAsUser; at start too, but only for a user other than
// the server's whose file that user could make lead elsewhere: the boards
// have root alone). None of it runs while the agent waits idle, so it
// sorts after limits.go, with the rest of the connection code: the checks
// that run at every start (auth.go, authorizedkeys.go, files.go, hostkeys.go)
// stay together, before a window of code the idle agent leaves unmapped
// (start.go says more; docs/size.md, "Idle layout").

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// authInfo identifies the key of a public key login for the audit log.
type authInfo struct {
	_             [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Fingerprint   string
	CertID        string
	CertSerial    uint64
	CAFingerprint string // of the CA that signed the certificate; "" for a plain key
}

func keyInfo(key gossh.PublicKey) authInfo {
	if c, ok := key.(*gossh.Certificate); ok {
		return authInfo{Fingerprint: gossh.FingerprintSHA256(c.Key), CertID: c.KeyId, CertSerial: c.Serial,
			CAFingerprint: gossh.FingerprintSHA256(c.SignatureKey)}
	}
	return authInfo{Fingerprint: gossh.FingerprintSHA256(key)}
}

// setKey records k, the key of a public key login, in e.
func (e *Event) setKey(k authInfo) {
	// A certificate's key ID is the client's: clipped, as audit clips it.
	e.KeyFingerprint, e.CertID, e.CertSerial, e.CAFingerprint = k.Fingerprint, clipClient(k.CertID), k.CertSerial, k.CAFingerprint
}

// publicKeyHandler answers "may this key log in?" (the query before the
// client signs). The final Permissions come from verifiedKey.
//
// A refused key counts against MaxAuthTries, as in OpenSSH: once that many
// have been refused, every key is, the right one too, and the connection is
// ended (tooManyKeys). x/crypto lets the first MaxAuthTries refused queries go
// uncounted, so without this a client could offer twice as many keys, and
// learn of each whether it may log in.
func (s *Server) publicKeyHandler(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
	start := time.Now()
	st, user, ok := s.loginRequest(ctx)
	if !ok {
		return false
	}
	err := errTooManyKeys
	var perms *gossh.Permissions
	exhausted := st.keysExhausted(s.maxAuthTries())
	if exhausted {
		defer s.tooManyKeys(st)
	} else {
		perms, err = s.authorizeKey(st, user, key)
	}
	waiveTouch(ctx.Permissions().Permissions, perms)
	reason := ""
	if err != nil {
		st.refused(true, refusedForLackOf(err))
		reason = err.Error()
		s.log().Debug("public key refused", "remote", st.remote, "user", clipClient(ctx.User()), "key", keyInfo(key).Fingerprint, "reason", clipClient(reason))
		s.padRefusal(st, user, start)
	}
	st.setKey(keyInfo(key), reason)
	return err == nil
}

// waiveTouch sets in shared, the Permissions gliderlabs hands x/crypto for
// every key of a connection, whether the signature of the key just decided
// (perms; nil if refused) may come from a security key that was not touched:
// x/crypto reads no-touch-required there when it checks the signature. It
// reads them for the key it asked about last (it remembers one key:
// maxCachedPubKeys), so a key's answer cannot be another's. Without this a
// no-touch-required line never reached it, and a touch was always needed.
// verifiedKey then returns the login's own Permissions.
func waiveTouch(shared, perms *gossh.Permissions) {
	shared.CriticalOptions, shared.Extensions = nil, nil
	if perms != nil {
		if _, ok := perms.Extensions[extNoTouch]; ok {
			shared.Extensions = map[string]string{extNoTouch: ""}
		}
	}
}

// errTooManyKeys refuses a key offered after MaxAuthTries refused ones.
var errTooManyKeys error = &errorString{"too many public keys refused on this connection (MaxAuthTries)"}

// tooManyKeys ends a connection that offers a public key after MaxAuthTries
// were refused. OpenSSH's sshd has disconnected it by then, with
// SSH_MSG_DISCONNECT "Too many authentication failures", which clients show;
// without it PuTTY went on to a password prompt, and ssh said "Permission
// denied" of a key that is authorized, offered too late. x/crypto sends that
// disconnect only past its own count, in which refused key queries (ssh,
// PuTTY and x/crypto's client ask before they sign) count only after
// MaxAuthTries of them, and it gives the server no way to send one; so the
// message goes as a banner, which RFC 4252 section 5.4 allows at any time
// before the login and clients show, and the connection is closed once the
// refusal of this key is sent: PuTTY shows a banner only when the next
// message comes.
func (s *Server) tooManyKeys(st *connState) {
	if st.preAuth == nil || st.preAuth.SendAuthBanner(tooManyKeysBanner) != nil {
		st.conn.closeUnauthed(errTooManyTries.Error())
		return
	}
	st.conn.closeAfterWrite.Store(true)
}

// errTooManyTries is why tooManyKeys closes a connection.
var errTooManyTries error = &errorString{"too many authentication failures (MaxAuthTries)"}

// tooManyKeysBanner is OpenSSH's disconnect message, with the line end a
// banner needs (PuTTY shows it in its terminal).
const tooManyKeysBanner = "Too many authentication failures\r\n"

// maxAuthTries is MaxAuthTries in effect: 6 for 0, as x/crypto has it, and -1
// for no limit.
func (s *Server) maxAuthTries() int {
	switch {
	case s.MaxAuthTries == 0:
		return 6
	case s.MaxAuthTries < 0:
		return -1
	}
	return s.MaxAuthTries
}

// verifiedKey is called by x/crypto once the client proved it holds key. It
// decides again and returns fresh Permissions for exactly this key, so no
// state of an earlier query (another key's options) can leak into the
// session: the PublicKeyCallback misuse of CVE-2024-45337.
func (s *Server) verifiedKey(st *connState, cm gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
	start := time.Now()
	st.noteAuth(cm)
	if !st.sameLoginUser(cm.User()) {
		s.changedUser(st, cm.User())
		return nil, errChangedUser
	}
	perms, err := s.authorizeKey(st, cm.User(), key)
	reason := ""
	if err != nil {
		reason = err.Error()
		s.padRefusal(st, cm.User(), start)
	}
	st.setKey(keyInfo(key), reason)
	return perms, err
}

// errChangedUser refuses an authentication request that names another user
// than the connection's first (sameLoginUser).
var errChangedUser error = &errorString{"sshd: the client changed its user name during authentication"}

// changedUser ends a connection whose authentication request named user, not
// the user its first request named, as OpenSSH does ("Change of username or
// service not allowed"): refused, whatever the request held, with a line and
// a login-failure event.
func (s *Server) changedUser(st *connState, user string) {
	if st.changedUser.Swap(true) {
		return // said and closed already (not loggedFailure: a refused password sets it)
	}
	st.mu.Lock()
	first := st.loginUser
	st.mu.Unlock()
	st.conn.closeUnauthed("login refused: the client changed its user name from " + strconv.Quote(clipClient(first)) + " to " + strconv.Quote(clipClient(user)))
}

// loginRequest is the state of ctx's connection and the user name of the
// request a gliderlabs handler answers; not ok, and the connection ended, if
// that name is not the first request's (changedUser).
func (s *Server) loginRequest(ctx gliderssh.Context) (st *connState, user string, ok bool) {
	st = stateFrom(ctx)
	user, ok = st.requestUser(ctx)
	if !ok {
		s.changedUser(st, user)
	}
	return st, user, ok
}

// passwordHandler checks a password against PasswordHashes.
func (s *Server) passwordHandler(ctx gliderssh.Context, password string) bool {
	start := time.Now()
	st, user, ok := s.loginRequest(ctx)
	if !ok {
		return false
	}
	err := s.limitedCheckPassword(st, user, password, &start)
	if err != nil {
		st.setKey(authInfo{}, err.Error())
		s.padRefusal(st, user, start) // the password check slot is free again
		return false
	}
	// gliderlabs returns the context's Permissions for a password login;
	// this is the final step of authentication, so set them now.
	p := ctx.Permissions().Permissions
	p.CriticalOptions = nil
	p.Extensions = map[string]string{extMethod: "password"}
	st.setKey(authInfo{}, "")
	return true
}

// limitedCheckPassword runs checkPassword within the limits on guessing. It
// refuses at once, without bcrypt, while the source of st is over
// MaxAuthFailures; it waits for one of the password check slots (so a flood
// cannot keep every CPU busy with bcrypt) until the connection is closed,
// at the latest by the login grace timer; and it counts a refused password
// in the limiter as soon as it is known, with the checks under way counted
// too, so parallel connections of one source get no more than
// MaxAuthFailures refused checks per window between them. Once the source
// is over the limit, its other unauthenticated connections are closed.
func (s *Server) limitedCheckPassword(st *connState, user, password string, start *time.Time) error {
	if s.limiter.blocked(st.src, s.clock()) {
		return errTooManyFailures
	}
	if !s.acquirePasswordCheck(st.conn) {
		return errors.New("connection closed while waiting to check the password")
	}
	// The refusal's pad (padRefusal) counts from here: the wait for a slot
	// says nothing of the user, and counted, it doubled the pad past it (a
	// wrong password that queued behind a flood's checks, answered as late
	// again, its MaxStartups slot held as long).
	*start = time.Now()
	defer s.releasePasswordCheck()
	if !s.limiter.begin(st.src, s.clock()) {
		return errTooManyFailures
	}
	err := s.checkPassword(user, password)
	failed := err != nil && !refusedForLackOf(err)
	blocked := s.limiter.end(st.src, failed, s.clock())
	if failed {
		s.failureCounted(st.conn)
	} else if err != nil {
		st.refused(false, true)
	}
	if blocked {
		s.closeUnauthenticated(st.src)
	}
	return err
}

func (s *Server) checkPassword(user, password string) error {
	compare := bcrypt.CompareHashAndPassword
	if s.compareHash != nil {
		compare = s.compareHash
	}
	var dummy []byte
	if d := s.dummy.Load(); d != nil {
		dummy = d.hash
	}
	if password == "" {
		// As OpenSSH's default, PermitEmptyPasswords no (auth-passwd.c): a
		// hash of "" (made from an unset variable) let a password prompt
		// answered with Enter log in. Every user's is refused alike.
		return errors.New("empty password")
	}
	hash, ok := s.logins().PasswordHashes[user]
	if !ok {
		compare(dummy, []byte(password))
		return errors.New("no password set for this user")
	}
	if _, err := s.lookupUser(user); err != nil {
		compare(dummy, []byte(password))
		return err
	}
	if err := compare([]byte(hash), []byte(password)); err != nil {
		return errors.New("wrong password")
	}
	return nil
}

// authLog turns x/crypto's record of each attempt into audit events.
func (s *Server) authLog(st *connState, cm gossh.ConnMetadata, method string, err error) {
	st.triedAuth.Store(true)
	st.noteAuth(cm)
	if !st.sameLoginUser(cm.User()) {
		// A "none" request, which no handler sees, or an attempt a handler
		// refused already (changedUser says it once).
		s.changedUser(st, cm.User())
		return
	}
	var k authInfo
	var reason string
	if err != nil && method == "publickey" {
		k, reason = st.takeRefusal(err)
	} else {
		k, reason = st.takeKey(err != nil)
	}
	// The user name, the method name and a certificate's key ID are the
	// client's, before it has logged in: clipped here for the log lines, as
	// audit clips them in events.
	e := Event{Remote: st.remote, SessionID: hex.EncodeToString(cm.SessionID()), User: clipClient(cm.User()), Method: clipClient(method)}
	if method == "publickey" {
		e.setKey(k)
	}
	if err == nil {
		st.authed.Store(true)
		st.mu.Lock()
		st.keyRefusals, st.moreKeyRefusals = nil, 0 // keys tried on the way in
		st.mu.Unlock()
		s.removeStartup(st.conn) // its MaxStartups slot goes to the next in line
		e.Type = EventLoginSuccess
		s.log().Info("login", loginAttrs(e)...)
		s.audit(&e)
		return
	}
	if method == "none" {
		return // every client probes with "none" first
	}
	e.Type = EventLoginFailure
	e.Reason = reason
	if e.Reason == "" {
		e.Reason = err.Error()
	}
	e.Reason = clipClient(e.Reason)
	if method == "publickey" {
		// Clients offer every key they hold until one is accepted: a refused
		// key is a failed login only if the connection ends without one
		// (OpenSSH's sshd logs them at VERBOSE). Reported then, by
		// reportKeyRefusals, with the time of the attempt.
		e.Time = s.clock()
		st.mu.Lock()
		if len(st.keyRefusals) < maxKeyRefusals {
			st.keyRefusals = append(st.keyRefusals, e)
		} else {
			st.moreKeyRefusals++
		}
		st.mu.Unlock()
		return
	}
	s.loginRefused(st, e)
}

// maxKeyRefusals bounds the public key refusals a connection keeps until it
// ends (MaxAuthTries may be unlimited); the others are only counted.
const maxKeyRefusals = 16

// loginRefused logs and audits e, a login failure of st.
func (s *Server) loginRefused(st *connState, e Event) {
	st.loggedFailure.Store(true)
	s.log().Info("login refused", append(loginAttrs(e), "reason", e.Reason)...)
	s.audit(&e)
}

// loginAttrs are the attributes of e's log line: the key and the certificate
// (with its CA, as sshd logs "ID ... serial ... CA ...") only where one was
// used.
func loginAttrs(e Event) []any {
	args := []any{"remote", e.Remote, "user", e.User, "method", e.Method}
	if e.KeyFingerprint != "" {
		args = append(args, "key", e.KeyFingerprint)
	}
	if e.CAFingerprint != "" { // a certificate's
		args = append(args, "cert", e.CertID, "serial", e.CertSerial, "ca", e.CAFingerprint)
	}
	return args
}

// reportKeyRefusals reports, once the connection has ended, the public keys it
// was refused if it never logged in.
func (s *Server) reportKeyRefusals(st *connState) {
	st.mu.Lock()
	refusals, more := st.keyRefusals, st.moreKeyRefusals
	st.keyRefusals, st.moreKeyRefusals = nil, 0
	st.mu.Unlock()
	if st.authed.Load() {
		return
	}
	for _, e := range refusals {
		s.loginRefused(st, e)
	}
	if more > 0 {
		s.log().Info("login refused: more public keys", "remote", st.remote, "count", more)
	}
}

// padRefusal waits, after a refused attempt to log in as user that began at
// start, until userDelay(user) has passed since start, or until the
// connection is closed. OpenSSH's sshd pads every attempt but "none" so
// (auth2.c, ensure_minimum_time_since), and so does it with a check slower
// than the delay (files on a slow flash): the wait is then to the least
// double of the delay still ahead. Without it a refused key was answered in
// 120 µs (the median on a PC) for a missing user and in 240 µs for one whose
// shadow, group and authorized_keys files were read, and a forged
// certificate later when it named a trusted CA: a client that had not logged
// in could tell which users exist, and which CA is trusted. The wait holds
// no lock and no password check slot; the connection keeps the MaxStartups
// slot it holds until it logs in or ends, and the login grace timer still
// ends it.
func (s *Server) padRefusal(st *connState, user string, start time.Time) {
	d := userDelay(user)
	if s.refusalDelay != nil {
		d = s.refusalDelay(user)
	}
	elapsed := time.Since(start)
	for d < elapsed {
		d *= 2
	}
	t := time.NewTimer(d - elapsed)
	select {
	case <-t.C:
	case <-st.conn.done:
	}
	t.Stop()
}

// minFailDelay is the least time a refused login attempt takes, as OpenSSH's
// MIN_FAIL_DELAY_SECONDS.
const minFailDelay = 5 * time.Millisecond

// delaySecret keys userDelay: random, made at the process's first refusal
// (OpenSSH's timing_secret is made at its start).
var delaySecret struct {
	once sync.Once
	key  [32]byte
}

// userDelay is how long a refused attempt to log in as user takes at least:
// minFailDelay and up to 4.3 ms more, as OpenSSH's user_specific_delay. It is
// the same at every attempt, so that averaging many does not take it out, and
// it is a hash of the name under the process's secret, so that a missing
// user's is no different from an existing one's.
func userDelay(user string) time.Duration {
	delaySecret.once.Do(func() { rand.Read(delaySecret.key[:]) }) // never fails (Go 1.24)
	h := sha256.Sum256(append(delaySecret.key[:], user...))
	return minFailDelay + time.Duration(binary.BigEndian.Uint32(h[:]))/1000
}

// openAsUser is openRegular with the permissions of a over files (its uid,
// primary and supplementary groups), as sshd opens a user's authorized_keys
// (temporarily_use_uid), on a thread of its own for the time of the open
// (becomeLocked): the kernel checks every directory the path goes through,
// those its symbolic links and ".." lead through, and the file, as for the
// user's own programs, ACLs included. The file is then read through what was
// opened, with the server's ids back. A nil a.Groups (an account CheckLogins
// made) is filled from the group file first.
func (s *Server) openAsUser(path string, a *account) (f *os.File, fi os.FileInfo, err error) {
	if a.Groups == nil {
		s.fillGroups(a)
	}
	done := make(chan struct{})
	go func() {
		if back, e := becomeLocked(a.UID, a.GID, a.Groups); e != nil {
			err = e
		} else {
			f, fi, err = openRegular(path)
			back() // if the server's ids did not come back, the thread ends with this goroutine
		}
		close(done)
	}()
	<-done
	if err != nil {
		err = wrapErr("read as user "+a.Name+", as sshd reads it", err)
	}
	return f, fi, err
}

// refusedForLackOf reports whether a login was refused for the server's own
// lack of file descriptors or memory (reading /etc/passwd or authorized_keys),
// no guess of the client's having been judged. Counted as failed logins, a
// busy moment of a router with a low `ulimit -n` locked the source out for the
// window after, once descriptors were free again: for a tunnel, every
// operator of it.
func refusedForLackOf(err error) bool {
	var en syscall.Errno
	return errors.As(err, &en) && (en == syscall.EMFILE || en == syscall.ENFILE || en == syscall.ENOMEM)
}
