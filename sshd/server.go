package sshd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// ErrServerClosed is returned by Serve and ServeConn after Shutdown or Close.
var ErrServerClosed error = &errorString{"sshd: server closed"}

// serverVersion is the software version in the server's identification
// string, "SSH-2.0-OpenSSH_porthole" (RFC 4253 section 4.2). OpenSSH's client
// uses some of its extensions only with a server whose version matches
// "OpenSSH*" (compat.c, SSH_NEW_OPENSSH): without that it never sends
// "eow@openssh.com", and "ssh host yes | head -1" runs until interrupted. The
// server speaks that dialect (the extensions, SFTP's reversed SYMLINK
// arguments) and names no OpenSSH release, so scanners find no version
// number to match against advisories.
const serverVersion = "OpenSSH_porthole"

// Server is an SSH server. Set its fields, then call Serve or ServeConn; the
// fields must not change afterwards. The zero value refuses every login
// (there is no host key either, so Serve returns an error until DataDir or
// HostKeyFiles is set). Its first Serve or ServeConn adds group and world
// write to the process umask, as OpenSSH's sshd does at start: sessions'
// programs and in-process SFTP and scp create files under it. It does not
// close what the process inherited: a descriptor without close-on-exec
// reaches every program a session runs, so a program that embeds it marks
// them first, as the porthole binary does (OpenSSH's sshd closes them).
type Server struct {
	// DataDir is the directory of the ed25519 host key (HostKeyFile). The key
	// is made on first start, written atomically with mode 0600, and reused
	// from then on; an unreadable or corrupt key is an error, never replaced.
	// "" means no such key: HostKeyFiles must then name at least one.
	DataDir string

	// HostKeyFiles are extra private host key files (OpenSSH or PEM format,
	// mode 0600 or stricter). nil means none.
	HostKeyFiles []string

	// AuthorizedKeysFiles are authorized_keys files, as in sshd_config's
	// AuthorizedKeysFile: %h is the user's home, %u the user name, %% a
	// percent sign; relative paths are relative to the home directory.
	// They are read at every login, so edits apply at once; a missing one
	// is logged at debug. When the server runs as root, one that the user
	// logging in could make lead elsewhere (a directory on its way, as
	// ~/.ssh, is the user's) is read with that user's permissions, as sshd
	// reads them all: if the user may not read it, it is not read. One
	// only root chooses (/etc/porthole/authorized_keys) is read as root,
	// even if the user may not read it. nil means no authorized_keys files: no plain
	// public key logs in. At start, if neither these files (looked for
	// under every user who may log in) nor TrustedUserCAKeysFiles nor
	// PasswordHashes offer a way in, one warning is logged, unless
	// CallerChecksLogins is set.
	AuthorizedKeysFiles []string

	// TrustedUserCAKeysFiles list certificate authorities (one public key a
	// line) whose user certificates may log in as any principal listed in the
	// certificate, as sshd_config's TrustedUserCAKeys. nil means none (CAs can
	// still be trusted per user with cert-authority lines).
	TrustedUserCAKeysFiles []string

	// CallerChecksLogins leaves the start warning about logins that cannot
	// work to the caller, which reports CheckLogins' problems itself (with its
	// own names for these settings) and would otherwise log them twice.
	CallerChecksLogins bool

	// PasswordHashes maps login names to bcrypt hashes ($2a$, $2b$, $2y$).
	// nil or empty means password authentication is off and not offered.
	// (SetLogins changes these three settings while the server runs.)
	PasswordHashes map[string]string

	// PasswdFile and GroupFile are read for login users; "" means
	// /etc/passwd and /etc/group.
	PasswdFile string
	GroupFile  string

	// AcceptEnv are patterns (* and ?) of environment variables a client may
	// set, at most 128 variables and 64 KiB per session. TERM is always
	// taken from the pty request. nil means none.
	AcceptEnv []string

	// MaxAuthTries is the number of failed authentication attempts allowed
	// per connection: 0 means 6, negative means no limit. Refused public keys
	// count, as in OpenSSH; a key offered after that many were refused ends
	// the connection, with a banner "Too many authentication failures".
	MaxAuthTries int

	// LoginGraceTime is how long a connection may take to authenticate:
	// 0 means 2 minutes, negative means no limit.
	LoginGraceTime time.Duration

	// MaxAuthFailures failed logins from one source within
	// AuthFailureWindow make the server refuse that source until the window
	// has passed: its new connections are closed at once, and so are its
	// open connections that have not authenticated. A failed login is a
	// refused password, counted as soon as it is checked (so connections in
	// parallel cannot guess more often), or a connection that asked to
	// authenticate and ended without doing so and without a refused
	// password (one that ends during the key exchange guessed nothing). Public keys that are
	// not authorized are not counted one by one: clients offer every key
	// they hold (MaxAuthTries bounds them per connection), and a key cannot
	// be guessed. Refusals for the server's own lack of file descriptors or
	// memory judge no guess and are not counted, nor a connection with only
	// such refusals. The source is the remote IP address, or the whole remote
	// address label for non-IP connections such as tunnel streams (the
	// agent labels them per tunnel and service). 0 means 10 failures and 1
	// minute; a negative MaxAuthFailures turns the limit off.
	MaxAuthFailures   int
	AuthFailureWindow time.Duration

	// MaxStartups is the number of connections that may be in the key
	// exchange or authentication at once, across the server, like
	// sshd_config's MaxStartups; one source (an address, a tunnel's
	// service) at most half of them, at least one (PerSourceMaxStartups
	// MaxStartups/2). More connections wait, before the server
	// sends a byte, until one of those authenticates or ends, for at most
	// LoginGraceTime; beyond 10 times MaxStartups unauthenticated
	// connections (waiting or not), new ones are closed at once. 0 means 10
	// (so 100 in all, OpenSSH's default 10:30:100 without the random early
	// drop); negative means no limit.
	MaxStartups int

	// IdleTimeout closes a connection after no bytes passed in either
	// direction for this long. 0 means no limit.
	IdleTimeout time.Duration

	// MaxSessionTime closes a connection, with all its sessions and
	// forwards, this long after it was accepted. 0 means no limit.
	MaxSessionTime time.Duration

	// MaxSessions is the number of session channels (shells, commands,
	// subsystems) open at once across the server: 0 means 10, negative means
	// no limit.
	MaxSessions int

	// MaxForwards is the number of forwarded connections (ssh -L and -D,
	// connections to ssh -R listeners and ssh -A sockets) open at once across
	// the server: 0 means 32, negative means no limit. Each may hold up to
	// the SSH channel window (2 MiB) when its far end does not read.
	MaxForwards int

	// PermitLocalForward decides which destinations local port forwarding
	// (ssh -L, direct-tcpip) may reach, given the login user and the resolved
	// address that will be dialled. nil allows loopback addresses only.
	PermitLocalForward func(user string, dest netip.AddrPort) bool

	// PermitRemoteForward decides whether remote port forwarding (ssh -R,
	// tcpip-forward) may listen on bindAddr:port on this device. nil means
	// remote forwarding is off. A forward asked for on every interface ("",
	// "*", "0.0.0.0", "::") that it refuses listens on loopback instead, as
	// for "localhost", if it allows "localhost" (OpenSSH's GatewayPorts no).
	PermitRemoteForward func(user, bindAddr string, port uint32) bool

	// AgentForwarding allows ssh -A: a session gets SSH_AUTH_SOCK, a Unix
	// socket owned by the login user. false means agent forwarding is off.
	AgentForwarding bool

	// Ciphers, if non-nil, are the only ciphers offered (names as in
	// x/crypto/ssh, checked by CheckCiphers). nil means x/crypto's defaults,
	// except on amd64 with AES-NI, where AES-GCM and AES-CTR are offered
	// without ChaCha20-Poly1305 (see aesFirstCiphers).
	Ciphers []string

	// Audit, if non-nil, receives audit events. It is called synchronously
	// from connection goroutines and must not block.
	Audit func(Event)

	// AuditCommandLines puts the whole command line of each exec request in
	// its session events (Event.CommandLine) and log lines. Off by default:
	// users type secrets into arguments (mysql -psecret), and the events go to
	// the log and, through the agent, to a cloud topic.
	AuditCommandLines bool

	// Logger receives operational logs; nil means discard.
	Logger *slog.Logger

	// Test seams; nil means the real thing.
	now     func() time.Time
	geteuid func() int
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	lookup  func(ctx context.Context, network, host string) ([]netip.Addr, error) // nil: net.DefaultResolver
	listen  func(network, addr string) (net.Listener, error)                      // nil: net.Listen

	compareHash    func(hash, password []byte) error // nil: bcrypt.CompareHashAndPassword
	passwordChecks int                               // password checks at once; 0: passwordSlots' default
	refusalDelay   func(user string) time.Duration   // least time of a refused login attempt; nil: userDelay

	sftpServerPaths []string // nil: the usual places of OpenSSH's sftp-server
	portStartFile   string   // "": /proc/sys/net/ipv4/ip_unprivileged_port_start
	nologinFile     string   // "": /etc/nologin

	initOnce   sync.Once
	initErr    error
	gs         *gliderssh.Server
	limiter    *failureLimiter
	dummy      atomic.Pointer[dummyHash] // compared against for unknown users, to even out timing; nil: none made
	dummyMu    sync.Mutex                // held while a dummy hash is made (setup, SetLogins); logins never wait for it
	set        atomic.Pointer[Logins]    // SetLogins' logins; nil: the fields'
	passwordOn atomic.Bool               // password login offered (set up with hashes)
	setUp      atomic.Bool               // setup has run

	connSeq    atomic.Uint64 // numbers connections without an IP address (remoteLabel)
	pwSlots    chan struct{} // one token per password check running
	pwWaiting  atomic.Int32  // password checks waiting for a slot
	blockedLog logLimit      // "too many failed logins" refusals
	fullLog    logLimit      // "too many unauthenticated connections" refusals
	sessionLog logLimit      // sessions refused past MaxSessions
	forwardLog logLimit      // forwarded connections refused past MaxForwards
	acceptLog  logLimit      // accept errors: the first of a run
	algLog     logLimit      // clients with no algorithm in common

	warnedMu sync.Mutex
	warned   map[string]warnedRead // per file read at login, what was last warned about (warnLog); nil: none

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	unauth    map[*conn]*startup // connections that have not authenticated
	queue     []*startup         // the same, in arrival order
	sessions  int
	forwards  int
	closed    bool
}

// serverConfig is called by gliderlabs for every connection.
func (s *Server) serverConfig(ctx gliderssh.Context) *gossh.ServerConfig {
	st := stateFrom(ctx)
	algs := gossh.SupportedAlgorithms()
	return &gossh.ServerConfig{
		Config:       gossh.Config{Ciphers: s.ciphers(), KeyExchanges: kexAlgos, MACs: algs.MACs},
		MaxAuthTries: s.MaxAuthTries,
		PreAuthConnCallback: func(pc gossh.ServerPreAuthConn) {
			st.preAuth = pc
		},
		// Without ssh-rsa (SHA-1), as OpenSSH 8.8+'s PubkeyAcceptedAlgorithms.
		PublicKeyAuthAlgorithms: algs.PublicKeyAuths,
		AuthLogCallback: func(cm gossh.ConnMetadata, method string, err error) {
			s.authLog(st, cm, method, err)
		},
		VerifiedPublicKeyCallback: func(cm gossh.ConnMetadata, key gossh.PublicKey, _ *gossh.Permissions, _ string) (*gossh.Permissions, error) {
			return s.verifiedKey(st, cm, key)
		},
	}
}

// connectionFailed is called by gliderlabs, on the connection's goroutine,
// when its key exchange or login failed, with x/crypto's error: kept for
// reportLoginEnd.
func (s *Server) connectionFailed(c net.Conn, err error) {
	remote := remoteLabel(c)
	if wc := gliderConn(c); wc != nil {
		wc.st.failErr = err
		remote = wc.st.remote
	}
	// A client with no algorithm in common (too old, or configured to
	// offer only what the server lacks) cannot log in whatever its
	// operator does, and only this line says why: at info, as OpenSSH's
	// "Unable to negotiate", with what the client offered (its list, not
	// ours, within the clip). At most one a refusalLogInterval: scanners.
	var ne *gossh.AlgorithmNegotiationError
	if errors.As(err, &ne) {
		s.logLimited(&s.algLog, slog.LevelInfo, "no algorithm in common with the client", "remote", remote,
			"what", ne.What, "client_offered", clipClient(strings.Join(ne.RequestedAlgorithms, ",")))
		return
	}
	// x/crypto's error may quote what the client sent (a KEXINIT's lists).
	s.log().Debug("connection failed before authentication", "remote", remote, "error", clipClient(err.Error()))
}

// gliderConn returns the conn in c, which gliderlabs hands its
// ConnectionFailedCallback: not the conn HandleConn was given but its own
// wrapper of it (serverConn), whose first field, the embedded net.Conn, is
// ours. nil if c is not such a wrapper (another gliderlabs version: the
// connection's failure event then says less, and
// TestCountedFailuresHaveEvents fails).
func gliderConn(c net.Conn) *conn {
	v := reflect.ValueOf(c)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct || v.Elem().NumField() == 0 {
		return nil
	}
	f := v.Elem().Field(0)
	if !f.CanInterface() {
		return nil
	}
	wc, _ := f.Interface().(*conn)
	return wc
}

// reportLoginEnd reports a connection that asked to log in and ended without
// logging in and without a login-failure event, as the failure limiter counts
// it (endStartup): ten of them locked a source out with no record of why.
// Such a connection asked for "none" only (every client does first; an
// OpenSSH client that gives up at its password prompt, or in BatchMode with no
// key, does no more), had a key accepted whose signature never came or did not
// verify (x/crypto ends the connection over a security key's signature without
// a touch, and calls no authLog), or broke the protocol. Its reason is
// x/crypto's error, or the server's for the key accepted last, which it names.
func (s *Server) reportLoginEnd(st *connState) {
	if !st.triedAuth.Load() || st.authed.Load() || st.loggedFailure.Load() {
		return
	}
	e := st.unauthEvent(loginEndReason(st.failErr))
	if k, reason := st.takeKey(false); k.Fingerprint != "" {
		e.Method = "publickey"
		e.setKey(k)
		if reason != "" {
			e.Reason = reason
		}
	}
	s.loginRefused(st, e)
}

// loginEndReason says why a connection ended before it logged in, given
// x/crypto's error (nil: not known).
func loginEndReason(err error) string {
	var ae *gossh.ServerAuthError
	switch {
	case err == nil:
		return "connection closed before logging in"
	case errors.As(err, &ae):
		// The end of x/crypto's login loop: the client closed the
		// connection, or x/crypto disconnected it after too many attempts,
		// its disconnect message last.
		if n := len(ae.Errors); n > 0 && disconnectReason(ae.Errors[n-1]) >= 0 {
			return ae.Errors[n-1].Error()
		}
		return "the client closed the connection before logging in"
	}
	return clipClient(err.Error()) // it may quote the client
}

// Serve accepts connections on l and serves each in its own goroutine. It
// returns ErrServerClosed after Shutdown or Close, or the first setup or
// permanent Accept error. l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error {
	if err := s.init(); err != nil {
		l.Close()
		return err
	}
	if !s.trackListener(l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer s.trackListener(l, false)
	defer l.Close()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if !s.acceptRetry(context.Background(), err, &delay, "accepting SSH connections failed; retrying", "listener", l.Addr().String()) {
				return err
			}
			continue
		}
		delay = 0
		wc, ok := s.newConn(c)
		if !ok {
			continue
		}
		go s.serve(wc)
	}
}

// acceptRetry is what a listener's loop does after Accept failed with err:
// for an error that may pass (temporaryAcceptError) it waits, 5 ms doubling
// to 1 s (*delay holds the last wait, 0 after a success), and reports true;
// the first of a run of them is logged, so that a device out of descriptors
// says so instead of falling silent, rate-limited: out of descriptors for long
// while connections come and go, each that ends lets one Accept through and
// every run is one failure long. On any other error, or once ctx has ended, it
// reports false.
func (s *Server) acceptRetry(ctx context.Context, err error, delay *time.Duration, msg string, args ...any) bool {
	if !temporaryAcceptError(err) {
		return false
	}
	if *delay == 0 {
		s.logLimited(&s.acceptLog, slog.LevelWarn, msg, append(args, "error", err)...)
	}
	*delay = min(max(2**delay, 5*time.Millisecond), time.Second)
	t := time.NewTimer(*delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// temporaryAcceptError reports whether an Accept error may go away by itself:
// a timeout, or any errno of accept(2): the moment's (a process or system out
// of descriptors or memory: EMFILE, ENFILE, ENOBUFS, ENOMEM, which net/http's
// Serve waits out too) or one connection's (ECONNABORTED; EPROTO, ENETDOWN,
// EHOSTUNREACH and the like, which the man page says to retry as EAGAIN; an
// LSM's EPERM). Returning on them left the listener closed for good after one
// busy moment on a router with a low ulimit -n, or one connection's error. A
// closed listener is net.ErrClosed, no errno.
func temporaryAcceptError(err error) bool {
	var ne net.Error
	var errno syscall.Errno
	return errors.As(err, &ne) && ne.Timeout() || errors.As(err, &errno)
}

// ServeConn serves the single connection c, typically one stream handed over
// by a tunnel, and returns when it has ended. Any net.Conn works; deadlines
// are not used. Called after Shutdown or Close it returns ErrServerClosed
// (and closes c); otherwise nil once c has ended or was refused (and closed),
// or the setup error.
func (s *Server) ServeConn(c net.Conn) error {
	if err := s.init(); err != nil {
		c.Close()
		return err
	}
	wc, ok := s.newConn(c)
	if !ok {
		if s.isClosed() {
			return ErrServerClosed
		}
		return nil
	}
	s.serve(wc)
	return nil
}

// newConn applies the per-source limit and the limit on unauthenticated
// connections (MaxStartups), and starts tracking c. ok is false if c was
// refused (and closed). Refusals are logged at most once per
// refusalLogInterval and reason, since a flood would log a line for each.
func (s *Server) newConn(c net.Conn) (*conn, bool) {
	label := remoteLabel(c)
	src := sourceOf(c.RemoteAddr(), label)
	if src == label {
		// Every connection through one tunnel's service has the same
		// address, which stays its source; the label numbers them, so that
		// one connection's lines (login, sessions, its end) can be told from
		// another's, as an IP connection's port tells them apart.
		label += "#" + strconv.FormatUint(s.connSeq.Add(1), 10)
	}
	if s.limiter.blocked(src, s.clock()) {
		s.refused(&s.blockedLog, "connection refused: too many failed logins", label, errTooManyFailures.Error())
		c.Close()
		return nil, false
	}
	wc := newConn(s, c, label, src)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		wc.Close()
		return nil, false
	}
	if !s.addStartupLocked(wc) {
		s.mu.Unlock()
		s.refused(&s.fullLog, "connection refused: too many unauthenticated connections", label, "too many unauthenticated connections")
		wc.Close()
		return nil, false
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[wc] = struct{}{}
	s.mu.Unlock()
	return wc, true
}

// serve runs one connection to its end, including all its channels.
func (s *Server) serve(c *conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	c.startTimers()
	if s.awaitStartup(c) {
		s.gs.HandleConn(c)
		s.logEnd(c.st)
	}
	c.Close()
	s.reportKeyRefusals(c.st)
	s.reportLoginEnd(c.st)
	c.st.shutdown()
	s.endStartup(c)
}

// logEnd logs, once per connection that logged in, why it ended when that
// was an error: a message out of place, a packet that did not decrypt, a
// reset, or the client's disconnect for any reason but its normal end
// (SSH_DISCONNECT_BY_APPLICATION, RFC 4253 section 11.1). Without it a
// connection x/crypto dropped for a protocol error (asyncssh 2.10.1's data
// during its rekey, RFC 4253 section 7.1) showed only as its sessions'
// SIGHUP. A client's EOF, and a close by the server (a limit, which says so,
// or Close), are no errors.
func (s *Server) logEnd(st *connState) {
	if st.ctx == nil || !st.authed.Load() {
		return
	}
	sc, ok := st.ctx.Value(gliderssh.ContextKeyConn).(*gossh.ServerConn)
	if !ok {
		return
	}
	err := sc.Wait()
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || disconnectReason(err) == disconnectByApplication {
		return
	}
	st.mu.Lock()
	user := st.user
	st.mu.Unlock()
	// The error may quote the client's disconnect message: clipped.
	s.log().Info("connection ended by an error", "remote", st.remote, "user", user, "error", clipClient(err.Error()))
}

// disconnectByApplication is SSH_DISCONNECT_BY_APPLICATION, the reason
// clients give for a normal end (OpenSSH: "disconnected by user").
const disconnectByApplication = 11

// disconnectReason is the reason code of the client's SSH_MSG_DISCONNECT that
// err reports, or -1 if err is no such message. x/crypto's type for it is
// unexported; its text is "ssh: disconnect, reason N: ...".
func disconnectReason(err error) int {
	rest, ok := strings.CutPrefix(err.Error(), "ssh: disconnect, reason ")
	if !ok {
		return -1
	}
	code, _, _ := strings.Cut(rest, ":")
	n, err := strconv.Atoi(code)
	if err != nil {
		return -1
	}
	return n
}

func (s *Server) trackListener(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		if s.listeners == nil {
			s.listeners = make(map[net.Listener]struct{})
		}
		s.listeners[l] = struct{}{}
		return true
	}
	delete(s.listeners, l)
	return true
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	return closed
}

// closeListenersLocked marks the server closed and closes its listeners.
func (s *Server) closeListenersLocked() error {
	s.closed = true
	var err error
	for l := range s.listeners {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
		delete(s.listeners, l)
	}
	return err
}

// Close closes all listeners and connections at once. Sessions are ended
// (their processes get SIGHUP; one that ignores it is left running) in the
// background; Shutdown waits for that. Close returns the first error from closing a listener.
func (s *Server) Close() error {
	s.mu.Lock()
	err := s.closeListenersLocked()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return err
}

// Shutdown closes all listeners, then waits for the open connections to end
// by themselves. If ctx ends first it returns ctx's error and leaves the
// connections open; call Close to end them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	err := s.closeListenersLocked()
	s.mu.Unlock()
	wait := time.Millisecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			wait = min(2*wait, 100*time.Millisecond)
			t.Reset(wait)
		}
	}
}

// remoteLabel names the peer of c for logs and audit events.
func remoteLabel(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return "unknown"
}

// remoteIP returns the client's IP address, or an invalid Addr when the
// connection is not an IP one.
func remoteIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		// With the zone: a link-local client on one link is not the same
		// address on another, and from= rules may name it (OpenSSH
		// matches the numeric host with its %zone).
		return ip.Unmap().WithZone(a.Zone)
	case nil:
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func sourceOf(a net.Addr, label string) string {
	if ip := remoteIP(a); ip.IsValid() {
		return ip.String()
	}
	return label
}
