package sshd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// dialTimeout bounds resolving and dialling a local forward's destination.
const dialTimeout = 10 * time.Second

// forwardEvent is the forward event of st, logged in on sc, to (or from) dest.
func forwardEvent(st *connState, sc *gossh.ServerConn, direction, dest string) Event {
	return Event{Type: EventForward, Remote: st.remote, SessionID: hex.EncodeToString(sc.SessionID()), User: sc.User(), Direction: direction, Dest: dest}
}

// forwardRefused logs and audits ev, a forward of st's refused for reason.
// The log line is rate-limited per connection (st.fwdLog), as forwardFailed's:
// a client may ask again and again (a tun channel, an X11 request, a
// destination the policy refuses), and each keeps its event; a connection's
// first is always logged, so that an operator sees why a forward failed.
func (s *Server) forwardRefused(st *connState, ev *Event, reason string) {
	ev.Reason = reason
	s.logLimited(&st.fwdLog, slog.LevelInfo, "forward refused", "remote", ev.Remote, "user", ev.User, "direction", ev.Direction, "dest", clipClient(ev.Dest), "reason", reason)
	s.audit(ev)
}

// refuseForward is forwardRefused of the forward event of st's, logged in on
// sc, to (or from) dest.
func (s *Server) refuseForward(st *connState, sc *gossh.ServerConn, direction, dest, reason string) {
	ev := forwardEvent(st, sc, direction, dest)
	s.forwardRefused(st, &ev, reason)
}

// forwardFailed logs and audits ev, a forward of st's allowed whose name
// lookup, dial (ssh -L) or listen (ssh -R) failed with err. The log line is
// rate-limited per connection (st.fwdLog, shared with forwardRefused): a
// client may open channel after channel to a closed port, and each would log
// a line, filling a router's small log. Each failure keeps its event; the
// agent limits the refusals it publishes (agent/refusals.go).
func (s *Server) forwardFailed(st *connState, ev *Event, err error) {
	msg, key := "forward failed", "dest"
	if ev.Direction == "remote" {
		msg, key = "remote forward failed", "bind"
	}
	// The error quotes the name or address the client asked for.
	s.logLimited(&st.fwdLog, slog.LevelInfo, msg, "remote", ev.Remote, "user", ev.User, key, clipClient(ev.Dest), "error", clipClient(err.Error()))
	s.audit(ev)
}

// handleChannel serves the channel types other than "session" (gliderlabs'
// "default" handler: one entry in setup's map, not one per type, as setup runs
// at every start): direct-tcpip, and direct-streamlocal@openssh.com (ssh -L to
// a Unix socket) and tun@openssh.com (ssh -w), which it refuses with a forward
// event, as unknown. Any other type is refused as unknown, as gliderlabs
// refuses it.
func (s *Server) handleChannel(srv *gliderssh.Server, sc *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
	switch nc.ChannelType() {
	case "direct-tcpip":
		s.handleDirectTCPIP(srv, sc, nc, ctx)
		return
	case "direct-streamlocal@openssh.com":
		// OpenSSH's PROTOCOL, section 2.4: the socket path, then reserved
		// fields. Those are not declared: gossh.Unmarshal has set
		// SocketPath when it refuses the bytes after it, and a struct of
		// one string links no equality function of its own (docs/size.md).
		var d struct{ SocketPath string }
		gossh.Unmarshal(nc.ExtraData(), &d)
		s.refuseForward(stateFrom(ctx), sc, "local", d.SocketPath, "forwarding to Unix sockets is not supported")
	case "tun@openssh.com":
		// ssh -w (PROTOCOL, section 2.3). The event has no Dest: no device
		// is made, so the unit asked for names none.
		s.refuseForward(stateFrom(ctx), sc, "tun", "", "tun forwarding is not supported")
	}
	nc.Reject(gossh.UnknownChannelType, "unsupported channel type")
}

// handleRequest answers the global requests other than tcpip-forward
// (gliderlabs' "default" handler, as handleChannel is): cancel-tcpip-forward,
// and streamlocal-forward@openssh.com (ssh -R from a Unix socket), refused with
// a forward event. Any other is refused, as gliderlabs refuses it.
func (s *Server) handleRequest(ctx gliderssh.Context, srv *gliderssh.Server, req *gossh.Request) (bool, []byte) {
	switch req.Type {
	case "cancel-tcpip-forward":
		return s.handleCancelTCPIPForward(ctx, srv, req)
	case "streamlocal-forward@openssh.com":
		if sc, ok := ctx.Value(gliderssh.ContextKeyConn).(*gossh.ServerConn); ok {
			var f struct{ SocketPath string } // PROTOCOL, section 2.4
			gossh.Unmarshal(req.Payload, &f)
			s.refuseForward(stateFrom(ctx), sc, "remote", f.SocketPath, "forwarding from Unix sockets is not supported")
		}
	}
	return false, nil
}

// directTCPIP is the payload of a "direct-tcpip" channel open (RFC 4254
// section 7.2).
type directTCPIP struct {
	DestHost string
	DestPort uint32
	OrigHost string
	OrigPort uint32
	// Rest is what follows the fields: a payload with anything there is
	// refused, as gossh.Unmarshal refuses it for a struct without Rest. The
	// slice makes the type not comparable, so that no equality function is
	// linked for it (docs/size.md): gossh.Unmarshal refuses a `_ [0]func()`
	// field.
	Rest []byte `ssh:"rest"`
}

// handleDirectTCPIP serves ssh -L: the destination is resolved here, every
// resolved address is checked against the policy (and the key's permitopen=
// list), and the allowed addresses are dialled as such, in turn until one
// answers, so a name cannot resolve to one address for the check and another
// for the dial.
func (s *Server) handleDirectTCPIP(_ *gliderssh.Server, sc *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
	st := stateFrom(ctx)
	if !st.enter() {
		nc.Reject(gossh.ResourceShortage, "connection closing")
		return
	}
	defer st.leave()
	var d directTCPIP
	if err := gossh.Unmarshal(nc.ExtraData(), &d); err != nil || len(d.Rest) != 0 {
		nc.Reject(gossh.ConnectionFailed, "bad direct-tcpip request")
		return
	}
	dest := net.JoinHostPort(d.DestHost, strconv.FormatUint(uint64(d.DestPort), 10))
	ev := forwardEvent(st, sc, "local", dest)
	refuse := func(reason string) {
		s.forwardRefused(st, &ev, reason)
		nc.Reject(gossh.Prohibited, reason)
	}
	r := restrictionsOf(sc.Permissions)
	if r.noForward {
		refuse("port forwarding not allowed for this key")
		return
	}
	if r.permitOpen != nil && !permitOpenMatch(r.permitOpen, d.DestHost, d.DestPort) {
		refuse("destination not in the key's permitopen list")
		return
	}
	if !s.acquireForward() {
		ev.Reason = "too many forwarded connections"
		s.logLimited(&s.forwardLog, slog.LevelWarn, "forward refused: too many forwarded connections", "remote", st.remote, "user", sc.User(), "dest", clipClient(dest))
		s.audit(&ev)
		nc.Reject(gossh.ResourceShortage, ev.Reason)
		return
	}
	defer s.releaseForward()
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	addrs, err := s.resolve(dctx, d.DestHost)
	if err != nil {
		// As sshd: the resolver's words, a connection failure, not a refusal.
		ev.Reason = "cannot resolve destination: " + err.Error()
		s.forwardFailed(st, &ev, err)
		nc.Reject(gossh.ConnectionFailed, "Name or service not known")
		return
	}
	var targets []netip.AddrPort
	for _, ip := range addrs {
		ap := netip.AddrPortFrom(ip, uint16(d.DestPort))
		if d.DestPort <= 0xffff && s.permitLocal(sc.User(), ap) {
			targets = append(targets, ap)
		}
	}
	if len(targets) == 0 {
		refuse("destination not allowed by policy")
		return
	}
	dial, err := s.forwardDial(sc.User())
	if err != nil {
		ev.Reason = "cannot dial as the user: " + err.Error()
		s.forwardFailed(st, &ev, err)
		nc.Reject(gossh.ConnectionFailed, "Cannot connect")
		return
	}
	// Each allowed address in turn, as sshd (and net.Dial for a name) does:
	// "localhost" may resolve to ::1 first for a service on 127.0.0.1 only.
	var tc net.Conn
	var target netip.AddrPort
	// Each gets its share of the time left, as net.Dialer gives the addresses
	// of a name: one that never answers (a black-holed IPv6 route) must not
	// use up the time of those after it.
	for i := range targets {
		target = targets[i]
		actx, acancel := context.WithTimeout(dctx, dialShare(dctx, len(targets)-i))
		tc, err = dial(actx, "tcp", target.String())
		acancel()
		if err == nil || dctx.Err() != nil {
			break
		}
	}
	if err != nil {
		ev.Reason = "connect failed: " + err.Error()
		s.forwardFailed(st, &ev, err)
		nc.Reject(gossh.ConnectionFailed, connectFailure(err))
		return
	}
	ch, reqs, err := nc.Accept()
	ev.Allowed = true
	ev.Dest = dest + " (" + target.String() + ")"
	if err != nil {
		// The destination has had a connection: recorded, though the
		// client is gone.
		tc.Close()
		ev.Reason = "the client went away while the destination was dialled"
		s.log().Info("forward closed: "+ev.Reason, "remote", st.remote, "user", sc.User(), "dest", clipClient(ev.Dest))
		s.audit(&ev)
		return
	}
	s.log().Info("forward opened", "remote", st.remote, "user", sc.User(), "dest", clipClient(ev.Dest))
	s.audit(&ev)
	proxy(ctx, ch, reqs, tc)
}

// forwardDial returns what dials the local forwards of user: dialAs with
// user's ids when the server is root and user is not, so that the connection
// is the user's, as OpenSSH's (see dialAs).
func (s *Server) forwardDial(user string) (func(ctx context.Context, network, addr string) (net.Conn, error), error) {
	if s.dial != nil {
		return s.dial, nil
	}
	var d net.Dialer
	if s.euid() != 0 {
		return d.DialContext, nil
	}
	a, err := s.lookupUser(user)
	if err != nil {
		return nil, err
	}
	if s.sameUser(a) {
		return d.DialContext, nil
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialAs(ctx, network, addr, a.UID, a.GID)
	}, nil
}

// dialShare is the time one of n remaining addresses gets to answer: an equal
// share of what is left of ctx, but at least 2 s (net.Dialer's partialDeadline).
func dialShare(ctx context.Context, n int) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return dialTimeout
	}
	left := time.Until(dl)
	share := left / time.Duration(n)
	if share < 2*time.Second {
		share = min(2*time.Second, left)
	}
	return share
}

// connectFailure is the message of a direct-tcpip open refused because the
// dial failed. The client prints it after the reason code's own text
// ("open failed: connect failed: Connection refused"), so it says only what
// went wrong, as sshd does with strerror(3): no address, and no Go error
// chain that would repeat "connect".
func connectFailure(err error) string {
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		msg := errno.Error()
		return strings.ToUpper(msg[:1]) + msg[1:]
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "Connection timed out"
	default:
		return "Cannot connect"
	}
}

func (s *Server) permitLocal(user string, ap netip.AddrPort) bool {
	if s.PermitLocalForward != nil {
		return s.PermitLocalForward(user, ap)
	}
	return ap.Addr().IsLoopback()
}

// resolve returns host's addresses; an IP literal is returned as is.
func (s *Server) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	lookup := s.lookup
	if lookup == nil {
		lookup = net.DefaultResolver.LookupNetIP
	}
	ips, err := lookup(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

// permitOpenMatch applies permitopen="host:port" entries (port may be *).
func permitOpenMatch(list []string, host string, port uint32) bool {
	for _, e := range list {
		h, p := entryHostPort(e)
		if h != "*" && h != host {
			continue
		}
		if p == "*" || p == strconv.FormatUint(uint64(port), 10) {
			return true
		}
	}
	return false
}

// serveForward accepts on l until it is closed (or the connection ends, which the
// caller's leave balances) and carries each accepted connection over a channel that
// open asks the client for: remote (ssh -R) and agent (ssh -A) forwarding alike.
// It holds one of st's slots while it runs, taken by the caller, and each
// connection one of the server's MaxForwards.
func (s *Server) serveForward(ctx context.Context, st *connState, l net.Listener, open func(net.Conn) (gossh.Channel, <-chan *gossh.Request, error)) {
	defer st.leave()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if !s.acceptRetry(ctx, err, &delay, "forward listener: accepting failed; retrying", "remote", st.remote, "listener", l.Addr().String()) {
				return
			}
			continue
		}
		delay = 0
		if !st.enter() {
			c.Close()
			return
		}
		if !s.acquireForward() {
			s.logLimited(&s.forwardLog, slog.LevelWarn, "forwarded connection refused: too many forwarded connections", "remote", st.remote, "listener", l.Addr().String())
			c.Close()
			st.leave()
			continue
		}
		go func() {
			defer st.leave()
			defer s.releaseForward()
			ch, reqs, err := open(c)
			if err != nil {
				c.Close()
				return
			}
			proxy(ctx, ch, reqs, c)
		}()
	}
}

// proxy copies both ways between an SSH channel and a connection, passing
// half-closes on, and returns when both directions are done or when ctx (the
// SSH connection's) ends: a peer that ignores EOF must not outlive it. The
// channel's requests are refused; their end is the client's CLOSE, after
// which, as in OpenSSH's sshd (chan_rcvd_oclose), what the client sent is
// written out and the connection closed: a quiet target must not hold it,
// its descriptor and a MaxForwards slot until the SSH connection ends.
func proxy(ctx context.Context, ch gossh.Channel, reqs <-chan *gossh.Request, c net.Conn) {
	discardExtended(ch)
	done := make(chan struct{})
	defer close(done)
	peerClosed := make(chan struct{})
	go func() {
		defer close(peerClosed)
		for req := range reqs {
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}()
	toTarget := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			ch.Close()
			c.Close()
			return
		case <-done:
			return
		case <-peerClosed:
		}
		select {
		case <-toTarget:
			c.Close()
		case <-ctx.Done():
			ch.Close()
			c.Close()
		case <-done:
		}
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(toTarget)
		copyStream(c, ch)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			c.Close()
		}
	}()
	go func() {
		defer wg.Done()
		copyStream(ch, c)
		ch.CloseWrite()
	}()
	wg.Wait()
	ch.Close()
	c.Close()
}

// tcpipForward is the payload of "tcpip-forward" and its cancel (RFC 4254
// section 7.1).
type tcpipForward struct {
	BindAddr string
	BindPort uint32
	Rest     []byte `ssh:"rest"` // refused if not empty, as directTCPIP.Rest
}

// maxRemoteForwards bounds the ssh -R listeners of one connection. Unlike
// OpenSSH's, whose listeners are the sockets of a process per login, these are
// the agent's own descriptors, which its broker and tunnel connections need
// too (MaxForwards bounds the connections forwarded, not the listeners).
const maxRemoteForwards = 16

// listenersLocked is the number of ssh -R listeners open: a forward on
// "localhost" has two (127.0.0.1 and ::1), and one for port 0 is also kept
// under port 0, for its cancel, not counted again.
func (st *connState) listenersLocked() int {
	n := 0
	for k, rf := range st.forwards {
		if !strings.HasSuffix(k, ":0") {
			n += len(rf.ls)
		}
	}
	return n
}

// listeners is listenersLocked under st.mu.
func (st *connState) listeners() int {
	st.mu.Lock()
	n := st.listenersLocked()
	st.mu.Unlock()
	return n
}

// handleTCPIPForward serves ssh -R when PermitRemoteForward allows it. Ports
// below the kernel's unprivileged port start are for root logins only
// (mayBindPrivileged); port 0 asks for any free port.
func (s *Server) handleTCPIPForward(ctx gliderssh.Context, _ *gliderssh.Server, req *gossh.Request) (bool, []byte) {
	st := stateFrom(ctx)
	sc, ok := ctx.Value(gliderssh.ContextKeyConn).(*gossh.ServerConn)
	if !ok {
		return false, nil
	}
	var f tcpipForward
	if err := gossh.Unmarshal(req.Payload, &f); err != nil || len(f.Rest) != 0 {
		return false, nil
	}
	bind := net.JoinHostPort(f.BindAddr, strconv.FormatUint(uint64(f.BindPort), 10))
	ev := forwardEvent(st, sc, "remote", bind)
	refuse := func(reason string) (bool, []byte) {
		ev.Reason = reason
		// Rate-limited as forwardRefused's lines: a client may ask again and again.
		s.logLimited(&st.fwdLog, slog.LevelInfo, "remote forward refused", "remote", st.remote, "user", sc.User(), "bind", clipClient(bind), "reason", reason)
		s.audit(&ev)
		return false, nil
	}
	r := restrictionsOf(sc.Permissions)
	low := s.unprivilegedPortStart()
	listenOn, permitted := f.BindAddr, false
	if s.PermitRemoteForward != nil {
		listenOn, permitted = s.remoteBind(sc.User(), f.BindAddr, f.BindPort)
	}
	switch {
	case f.BindPort > 0xffff:
		return refuse("no such port")
	case s.PermitRemoteForward == nil:
		return refuse("remote forwarding is off")
	case r.noForward:
		return refuse("port forwarding not allowed for this key")
	case r.permitListen != nil && !permitListenMatch(r.permitListen, f.BindAddr, f.BindPort):
		return refuse("bind address not in the key's permitlisten list")
	case f.BindPort != 0 && f.BindPort < low && !s.mayBindPrivileged(sc.User()):
		return refuse(fmt.Sprintf("port %d is privileged (below %d) and only root may listen on it", f.BindPort, low))
	case !permitted:
		return refuse("not allowed by policy")
	case st.listeners() >= maxRemoteForwards:
		return refuse(fmt.Sprintf("%d remote forward listeners are open on this connection already", maxRemoteForwards))
	}
	if !st.enter() {
		return false, nil
	}
	rf, err := s.listenForward(listenOn, f.BindPort)
	if err != nil {
		st.leave()
		// Allowed, and failed: the cause (a port in use, an address the
		// device does not have), as sshd logs it.
		ev.Reason = "listen failed: " + err.Error()
		s.forwardFailed(st, &ev, err)
		return false, nil
	}
	port := uint32(rf.ls[0].Addr().(*net.TCPAddr).Port)
	key := net.JoinHostPort(f.BindAddr, strconv.FormatUint(uint64(port), 10))
	// One slot per listener: serveForward leaves one as each returns.
	entered := 1
	for range rf.ls[1:] {
		if !st.enter() {
			break
		}
		entered++
	}
	st.mu.Lock()
	if st.forwards == nil {
		st.forwards = make(map[string]*remoteForward)
	}
	over := st.listenersLocked()+len(rf.ls) > maxRemoteForwards
	if st.done || entered < len(rf.ls) || over {
		st.mu.Unlock()
		rf.Close()
		for range entered {
			st.leave()
		}
		if over {
			return refuse(fmt.Sprintf("its %d listeners would pass the %d one connection may hold", len(rf.ls), maxRemoteForwards))
		}
		return false, nil
	}
	st.forwards[key] = rf
	if f.BindPort == 0 {
		// Cancels name the port the client asked for.
		st.forwards[net.JoinHostPort(f.BindAddr, "0")] = rf
	}
	st.mu.Unlock()
	ev.Allowed = true
	ev.Dest = key
	s.log().Info("remote forward listening", "remote", st.remote, "user", sc.User(), "bind", rf.String())
	s.audit(&ev)
	// Answered before the listeners accept, as OpenSSH's sshd answers before
	// it polls them: a client that handles packets in order and registers a
	// forward when its answer comes (libssh2) refuses a forwarded-tcpip
	// channel that comes first, and a connection already waiting was closed
	// unserved. gliderlabs answers after the return; WantReply false makes
	// that answer send nothing.
	var answer []byte
	if f.BindPort == 0 {
		answer = gossh.Marshal(struct{ Port uint32 }{port})
	}
	req.Reply(true, answer)
	req.WantReply = false
	for _, l := range rf.ls {
		go s.serveForward(ctx, st, l, func(c net.Conn) (gossh.Channel, <-chan *gossh.Request, error) {
			oh, op := splitAddr(c.RemoteAddr())
			opn, _ := strconv.ParseUint(op, 10, 32)
			payload := gossh.Marshal(directTCPIP{DestHost: f.BindAddr, DestPort: port, OrigHost: oh, OrigPort: uint32(opn)})
			return sc.OpenChannel("forwarded-tcpip", payload)
		})
	}
	return true, nil
}

// remoteBind decides where a remote forward asked for on bind:port listens:
// on bind if PermitRemoteForward allows it; for an address of every interface
// ("", "*", "0.0.0.0", "::") that it does not allow, on loopback as for
// "localhost", if it allows that. OpenSSH's sshd with its default GatewayPorts
// no listens on loopback whatever the address asked for, and clients ask for
// these: paramiko's request_port_forward("", port), asyncssh's
// forward_remote_port("", ...), ssh -R 0.0.0.0:.... A policy that allows
// loopback only (the agent's) would refuse them. permitted is false if
// neither is allowed.
func (s *Server) remoteBind(user, bind string, port uint32) (listenOn string, permitted bool) {
	if s.PermitRemoteForward(user, bind, port) {
		return bind, true
	}
	switch bind {
	case "", "*", "0.0.0.0", "::":
		if s.PermitRemoteForward(user, "localhost", port) {
			return "localhost", true
		}
	}
	return bind, false
}

// remoteForward is the listeners of one ssh -R: one, or two for "localhost".
type remoteForward struct {
	ls []net.Listener
}

func (rf *remoteForward) Close() {
	for _, l := range rf.ls {
		l.Close()
	}
}

func (rf *remoteForward) String() string {
	addrs := make([]string, len(rf.ls))
	for i, l := range rf.ls {
		addrs[i] = l.Addr().String()
	}
	return strings.Join(addrs, " ")
}

// listenForward opens the listeners of an ssh -R to bind:port. "" and "*" are
// every address; "localhost" is the loopback address of each family, as in
// OpenSSH's sshd (ssh sends "localhost" when -R names no bind address, and a
// program on the device that connects to localhost may try ::1 first): 127.0.0.1,
// then ::1 on the same port where the host has IPv6. Only the first must
// succeed, as in sshd, which keeps the sockets it could bind.
//
// The listeners are the server's, not the user's as a local forward's
// connection is (dialAs), and so are the connections they carry: the kernel
// gives an accepted connection the ids of the thread that calls accept(2),
// not the listener's, and Go's Accept waits in the poller and accepts on
// whichever thread then runs it. A listener of the user's alone would show
// the user in ss and change no rule on a connection's owner.
func (s *Server) listenForward(bind string, port uint32) (*remoteForward, error) {
	listen := s.listen
	if listen == nil {
		listen = net.Listen
	}
	host := bind
	switch bind {
	case "", "*":
		host = ""
	case "localhost":
		host = "127.0.0.1"
	}
	l, err := listen("tcp", net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10)))
	if err != nil {
		return nil, err
	}
	rf := &remoteForward{ls: []net.Listener{l}}
	if bind == "localhost" {
		p := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		if l6, err := listen("tcp", net.JoinHostPort("::1", p)); err == nil {
			rf.ls = append(rf.ls, l6)
		} else {
			s.log().Debug("remote forward on localhost: not listening on ::1", "port", p, "error", err)
		}
	}
	return rf, nil
}

// unprivilegedPortStart is the first port any user may listen on: the
// kernel's net.ipv4.ip_unprivileged_port_start (Linux 4.11 and later; 0 in
// many containers), read at each request since an administrator may change
// it, or 1024 (IPPORT_RESERVED) when it cannot be read.
func (s *Server) unprivilegedPortStart() uint32 {
	return portStart(s.portStartFile)
}

// UnprivilegedPortStart is the first port any process may bind, as
// unprivilegedPortStart reads it (the agent's ssh.listen hint).
func UnprivilegedPortStart() int {
	return int(portStart(""))
}

// portStart reads net.ipv4.ip_unprivileged_port_start from the file p ("":
// the kernel's), or gives 1024.
func portStart(p string) uint32 {
	if p == "" {
		p = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
	}
	b, err := os.ReadFile(p)
	n, err2 := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil || err2 != nil {
		return 1024
	}
	return uint32(n)
}

// mayBindPrivileged reports whether user may have a remote forward listen on
// a port below unprivilegedPortStart. The listener is opened by the server,
// which runs as root, so the kernel's own check does not apply: OpenSSH
// opens it in the user's unprivileged process (and checks bind_permitted
// where it cannot), so only a root login gets such ports.
func (s *Server) mayBindPrivileged(user string) bool {
	a, err := s.lookupUser(user)
	return err == nil && a.UID == 0
}

func (s *Server) handleCancelTCPIPForward(ctx gliderssh.Context, _ *gliderssh.Server, req *gossh.Request) (bool, []byte) {
	st := stateFrom(ctx)
	var f tcpipForward
	if err := gossh.Unmarshal(req.Payload, &f); err != nil || len(f.Rest) != 0 {
		return false, nil
	}
	key := net.JoinHostPort(f.BindAddr, strconv.FormatUint(uint64(f.BindPort), 10))
	st.mu.Lock()
	rf, ok := st.forwards[key]
	if ok {
		for k, v := range st.forwards {
			if v == rf {
				delete(st.forwards, k)
			}
		}
	}
	st.mu.Unlock()
	if ok {
		rf.Close()
	}
	return ok, nil
}

// permitListenMatch applies permitlisten="[host:]port" entries. As in
// sshd's remote_open_match, the host is a pattern (with * and ?) that the
// requested host, in lower case, must match; a bare port is any host.
func permitListenMatch(list []string, host string, port uint32) bool {
	host = strings.ToLower(host)
	for _, e := range list {
		h, p := entryHostPort(e)
		if !matchPattern(host, h) {
			continue
		}
		if p == "*" || p == strconv.FormatUint(uint64(port), 10) {
			return true
		}
	}
	return false
}

// handTo gives the user the socket, then its directory. Not the other way
// round: once the directory is the user's, the user may rename a link to any
// file (/etc/shadow) over the socket, which a chown by name would follow and
// hand over (AT_SYMLINK_NOFOLLOW: lchown).
func handTo(dir, sock string, uid, gid int) error {
	const atFDCWD, atSymlinkNofollow = -100, 0x100 // the same on every Linux; not in package syscall
	return errors.Join(syscall.Fchownat(atFDCWD, sock, uid, gid, atSymlinkNofollow), os.Chown(dir, uid, gid))
}

// startAgentForwarding makes a Unix socket for ssh -A in a fresh directory
// owned by the login user, and forwards each connection to it over an
// "auth-agent@openssh.com" channel. stop closes and removes it.
func (sess *session) startAgentForwarding() (sock string, stop func(), err error) {
	a, err := sess.srv.lookupUser(sess.sc.User())
	if err != nil {
		return "", nil, wrapErr("agent forwarding", err)
	}
	dir, err := os.MkdirTemp("", "porthole-agent-")
	if err != nil {
		return "", nil, wrapErr("agent forwarding", err)
	}
	sock = filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, wrapErr("agent forwarding", err)
	}
	if sess.srv.credential(a) != nil {
		if err := handTo(dir, sock, int(a.UID), int(a.GID)); err != nil {
			l.Close()
			os.RemoveAll(dir)
			return "", nil, wrapErr("agent forwarding", err)
		}
	}
	st := sess.st
	if !st.enter() {
		l.Close()
		os.RemoveAll(dir)
		return "", nil, errors.New("connection closing")
	}
	ev := forwardEvent(st, sess.sc, "agent", sock)
	ev.Allowed = true
	sess.srv.audit(&ev)
	go sess.srv.serveForward(sess.ctx, st, l, func(net.Conn) (gossh.Channel, <-chan *gossh.Request, error) {
		return sess.sc.OpenChannel("auth-agent@openssh.com", nil)
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			l.Close()
			os.RemoveAll(dir)
		})
	}
	return sock, stop, nil
}
