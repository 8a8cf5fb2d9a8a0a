package sshd

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"
)

// passwordSlots is how many password checks may run at once: half the CPUs
// (at least one), so that a flood of logins, even from many sources, leaves
// the device CPU time for routing and for the sessions already open. bcrypt
// uses one CPU per check.
func (s *Server) passwordSlots() int {
	if s.passwordChecks > 0 {
		return s.passwordChecks
	}
	return max(1, runtime.GOMAXPROCS(0)/2)
}

// acquirePasswordCheck waits for a password check slot; false if c was closed
// first (at the latest by the login grace timer).
func (s *Server) acquirePasswordCheck(c *conn) bool {
	select {
	case s.pwSlots <- struct{}{}:
		return true
	default:
	}
	s.pwWaiting.Add(1) // what the tests watch
	defer s.pwWaiting.Add(-1)
	select {
	case s.pwSlots <- struct{}{}:
		return true
	case <-c.done:
		return false
	}
}

func (s *Server) releasePasswordCheck() { <-s.pwSlots }

// errTooManyFailures refuses a connection, or an attempt on one, from a
// source over MaxAuthFailures.
var errTooManyFailures error = &errorString{"too many failed logins from this source"}

// failureLimiter counts failed logins per source in a sliding window: each
// refused password as it happens, and each connection that ended without
// authenticating and without a refused password. Password checks under way
// count toward the limit too (begin, end), so connections of one source
// working in parallel cannot run more checks that fail than the limit.
type failureLimiter struct {
	max    int // <0: off
	window time.Duration

	mu      sync.Mutex
	hits    map[string][]time.Time
	pending map[string]int // password checks begun and not yet ended
	swept   time.Time      // when failLocked last dropped every expired source
}

// maxTrackedSources bounds the limiter's memory on a small device; when it is
// reached, the sources that are not blocked are dropped, and if every one is
// blocked, a new source is not tracked (failLocked says why).
const maxTrackedSources = 4096

func newFailureLimiter(max int, window time.Duration) *failureLimiter {
	return &failureLimiter{max: max, window: window, hits: make(map[string][]time.Time), pending: make(map[string]int)}
}

// prunedLocked drops the failures of src older than the window.
func (l *failureLimiter) prunedLocked(src string, now time.Time) []time.Time {
	h := l.hits[src]
	i := 0
	for i < len(h) && now.Sub(h[i]) >= l.window {
		i++
	}
	h = h[i:]
	if len(h) == 0 {
		delete(l.hits, src)
		return nil
	}
	l.hits[src] = h
	return h
}

// blocked reports whether src has reached the limit. Checks under way do not
// count: they may still succeed.
func (l *failureLimiter) blocked(src string, now time.Time) bool {
	if l.max < 0 {
		return false
	}
	l.mu.Lock()
	n := len(l.prunedLocked(src, now))
	l.mu.Unlock()
	return n >= l.max
}

// fail records one failed login from src and reports whether src is now
// blocked.
func (l *failureLimiter) fail(src string, now time.Time) bool {
	if l.max < 0 {
		return false
	}
	l.mu.Lock()
	blocked := l.failLocked(src, now)
	l.mu.Unlock()
	return blocked
}

func (l *failureLimiter) failLocked(src string, now time.Time) bool {
	// Each tunnel is a source of its own (the agent labels streams per
	// tunnel), so on a long-running device most sources never come back:
	// once a window, forget those whose failures have all expired, instead
	// of keeping them until maxTrackedSources have piled up.
	if now.Sub(l.swept) >= l.window {
		for k := range l.hits {
			l.prunedLocked(k, now)
		}
		l.swept = now
	}
	if _, ok := l.hits[src]; !ok && len(l.hits) >= maxTrackedSources {
		for k := range l.hits {
			if len(l.prunedLocked(k, now)) < l.max {
				delete(l.hits, k)
			}
		}
		if len(l.hits) >= maxTrackedSources {
			// Every source tracked is blocked. Forgetting any would unblock
			// it, and a blocked host could then free itself with a burst of
			// short connections from other addresses; refusing the new
			// source would let one host lock everyone out. Not counting it
			// lasts until the first blocked source's failures expire (within
			// the window: blocked sources are refused before they can fail
			// again), costs an attacker maxTrackedSources blocked sources
			// each window, and password checks stay bounded by their slots.
			return false
		}
	}
	h := append(l.prunedLocked(src, now), now)
	if len(h) > l.max {
		h = h[len(h)-l.max:]
	}
	l.hits[src] = h
	return len(h) >= l.max
}

// begin reserves a password check for src. It is false when the failures of
// src and its checks under way reach the limit: the check must not run.
// Every true must be followed by one end.
func (l *failureLimiter) begin(src string, now time.Time) bool {
	if l.max < 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.prunedLocked(src, now))+l.pending[src] >= l.max {
		return false
	}
	l.pending[src]++
	return true
}

// end finishes a check begun with begin, recording a failure if it failed,
// and reports whether src is now blocked.
func (l *failureLimiter) end(src string, failed bool, now time.Time) bool {
	if l.max < 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending[src]--; l.pending[src] <= 0 {
		delete(l.pending, src)
	}
	if !failed {
		return false
	}
	return l.failLocked(src, now)
}

// startupsFull is how many connections, as a multiple of MaxStartups, may be
// unauthenticated at once (started or waiting to start) before new ones are
// closed at once. With the default MaxStartups of 10 that is 100, the "full"
// of OpenSSH's default MaxStartups 10:30:100.
const startupsFull = 10

// startup is a connection that has not authenticated yet.
type startup struct {
	_        [0]func()     // not comparable: no equality function in the binary (docs/size.md)
	ready    chan struct{} // closed once it holds a MaxStartups slot
	admitted bool          // it holds one (or there is no limit)
	counted  bool          // a failure was counted for it already, or it was closed for its source's failures
	closing  bool          // closeUnauthenticated closed it
	src      string        // its source, as the failed-login limit counts them
}

func (s *Server) maxStartups() int {
	if s.MaxStartups == 0 {
		return 10
	}
	return s.MaxStartups
}

// addStartupLocked tracks c until it authenticates or ends; it starts at once
// if fewer than MaxStartups connections are starting, else it waits in line.
// It is false, and c not tracked, when startupsFull*MaxStartups connections
// are unauthenticated already.
func (s *Server) addStartupLocked(c *conn) bool {
	limit := s.maxStartups()
	// Divided, not multiplied: startupsFull*limit overflows int for a limit
	// meant as none (math.MaxInt32 on a 32-bit device), refusing everyone.
	if limit > 0 && len(s.unauth)/startupsFull >= limit {
		return false
	}
	if s.unauth == nil {
		s.unauth = make(map[*conn]*startup)
	}
	su := &startup{ready: make(chan struct{}), src: c.st.src}
	s.unauth[c] = su
	s.queue = append(s.queue, su)
	s.admitLocked()
	return true
}

// admitLocked gives free MaxStartups slots to the connections waiting
// longest, each source at most half of them (at least one): connections
// from one source that never log in (a stuck script or a scanner with one
// tunnel's source token, its connections one source; an address on the LAN)
// left every other tunnel and address waiting until the login grace time
// closed them. OpenSSH's PerSourceMaxStartups, which is off by default there,
// where no tunnel makes many clients one source.
func (s *Server) admitLocked() {
	limit := s.maxStartups()
	for _, su := range s.queue {
		if su.admitted {
			continue
		}
		all, mine := 0, 0
		for _, o := range s.queue {
			if o.admitted {
				all++
				if o.src == su.src {
					mine++
				}
			}
		}
		if limit >= 0 && all >= limit {
			return
		}
		if limit < 0 || mine < max(1, limit/2) {
			su.admitted = true
			close(su.ready)
		}
	}
}

// removeStartup stops tracking c, which authenticated or ended, and passes
// its slot on. It returns c's record, nil if c was not tracked (any more).
func (s *Server) removeStartup(c *conn) *startup {
	s.mu.Lock()
	defer s.mu.Unlock()
	su := s.unauth[c]
	if su == nil {
		return nil
	}
	delete(s.unauth, c)
	for i, o := range s.queue {
		if o == su {
			// As slices.Delete, the freed element cleared, without its
			// instantiation for *startup (1.2 KB of code on linux/mipsle).
			n := copy(s.queue[i:], s.queue[i+1:])
			s.queue[i+n] = nil
			s.queue = s.queue[:i+n]
			break
		}
	}
	if su.admitted {
		s.admitLocked()
	}
	return su
}

// awaitStartup waits, before a byte is exchanged, until c holds a
// MaxStartups slot, then checks its source again. It is false if c was
// closed meanwhile (at the latest by the login grace timer) or refused.
func (s *Server) awaitStartup(c *conn) bool {
	s.mu.Lock()
	su := s.unauth[c]
	s.mu.Unlock()
	if su == nil {
		return false // newConn tracks every connection it lets through
	}
	select {
	case <-su.ready:
	case <-c.done:
		return false
	}
	if s.limiter.blocked(c.st.src, s.clock()) {
		s.removeStartup(c)
		s.refused(&s.blockedLog, "connection refused: too many failed logins", c.st.remote, errTooManyFailures.Error())
		return false
	}
	return true
}

// endStartup stops tracking c, which has ended. If it never authenticated,
// it counts as a failed login, unless one was counted for it already, its
// refusals were all for the server's own lack (onlyLacked), it never got a
// MaxStartups slot, or it ended before it asked to authenticate:
// a key exchange that fails (no common algorithm), a client that drops a host
// key it does not know, ssh-keyscan, a health check guess nothing. Counted,
// ten of them locked a source out for a minute, and a tunnel's streams share
// one source: every operator of the tunnel.
func (s *Server) endStartup(c *conn) {
	su := s.removeStartup(c)
	if su == nil || !su.admitted || su.counted || !c.st.triedAuth.Load() || c.st.onlyLacked() { // an authenticated c is untracked already
		return
	}
	if s.limiter.fail(c.st.src, s.clock()) {
		s.closeUnauthenticated(c.st.src)
	}
}

// failureCounted marks c as having its failed login counted already.
func (s *Server) failureCounted(c *conn) {
	s.mu.Lock()
	if su := s.unauth[c]; su != nil {
		su.counted = true
	}
	s.mu.Unlock()
}

// closeUnauthenticated closes the connections of src that have not
// authenticated (started or waiting): once a source is over
// MaxAuthFailures, none of them may try again, as each would otherwise keep
// its MaxAuthTries attempts.
func (s *Server) closeUnauthenticated(src string) {
	var victims []*conn
	s.mu.Lock()
	for c, su := range s.unauth {
		if c.st.src == src && !su.closing {
			su.counted, su.closing = true, true
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	if len(victims) == 0 {
		return
	}
	s.log().Warn("closing unauthenticated connections: too many failed logins", "source", src, "connections", len(victims))
	for _, c := range victims {
		ev := c.st.unauthEvent(errTooManyFailures.Error())
		s.audit(&ev)
		c.Close()
	}
}

// refusalLogInterval is the least time between two log lines about
// connections refused for one reason: a flood would otherwise log a line per
// connection.
const refusalLogInterval = 10 * time.Second

// logLimit lets one log line through per refusalLogInterval and counts the
// ones it holds back.
type logLimit struct {
	_          [0]func() // not comparable: no equality function in the binary (docs/size.md)
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow reports whether to log now and how many lines were held back since
// the last one.
func (l *logLimit) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	if now.Before(l.next) {
		l.suppressed++
		l.mu.Unlock()
		return false, 0
	}
	n := l.suppressed
	l.suppressed = 0
	l.next = now.Add(refusalLogInterval)
	l.mu.Unlock()
	return true, n
}

// refused audits a connection closed before its key exchange and logs it,
// rate-limited by rl; the audit event is not rate-limited.
func (s *Server) refused(rl *logLimit, msg, remote, reason string) {
	s.logLimited(rl, slog.LevelWarn, msg, "remote", remote)
	s.audit(&Event{Type: EventLoginFailure, Remote: remote, Reason: reason})
}

// Defaults of MaxSessions and MaxForwards.
const (
	defaultMaxSessions = 10
	defaultMaxForwards = 32
)

// acquireSession takes one of the MaxSessions slots.
func (s *Server) acquireSession() bool {
	return s.acquireSlot(&s.sessions, s.MaxSessions, defaultMaxSessions)
}

func (s *Server) releaseSession() { s.releaseSlot(&s.sessions) }

// acquireForward takes one of the MaxForwards slots.
func (s *Server) acquireForward() bool {
	return s.acquireSlot(&s.forwards, s.MaxForwards, defaultMaxForwards)
}

func (s *Server) releaseForward() { s.releaseSlot(&s.forwards) }

// acquireSlot counts one more in *n (under s.mu) unless that would pass limit:
// 0 means def, negative no limit.
func (s *Server) acquireSlot(n *int, limit, def int) bool {
	if limit == 0 {
		limit = def
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit > 0 && *n >= limit {
		return false
	}
	(*n)++
	return true
}

func (s *Server) releaseSlot(n *int) {
	s.mu.Lock()
	(*n)--
	s.mu.Unlock()
}

// logLimited logs msg at level at most once per refusalLogInterval (rl),
// with how many lines rl held back since: a connection or channel refused for
// want of a slot, an accept error, a forward whose dial or listen failed;
// whatever a client, or a flood, can repeat at will.
func (s *Server) logLimited(rl *logLimit, level slog.Level, msg string, attrs ...any) {
	if ok, held := rl.allow(s.clock()); ok {
		if held > 0 {
			attrs = append(attrs, "not_logged_since_last", held)
		}
		s.log().Log(context.Background(), level, msg, attrs...)
	}
}
