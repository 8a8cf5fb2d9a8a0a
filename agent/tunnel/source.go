package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Source is the operator's end of a tunnel: it connects as the source, listens on a
// local address per service once the service has sent SERVICE_IDS, and starts a
// stream (or, with a V3 peer, a connection of the service's stream) for each
// accepted connection.
type Source struct {
	Config
	// Listen maps service IDs to listen addresses, "[host:]port" (host 127.0.0.1 when
	// omitted). The key "" may stand alone for a tunnel with one service (or none).
	// Services of the tunnel with no entry get an ephemeral port on 127.0.0.1, reported
	// through OnListen.
	Listen map[string]string
	// PeerVersion is the destination's protocol format. Zero means V3, where
	// concurrent connections share a stream. V2 and V1 are for older destinations
	// (Device Client, Greengrass, localproxy 1.x/2.x): one connection per service at a
	// time, and V1 sends no service id (spec §2.3, localproxy --destination-client-type).
	PeerVersion Version
	// MaxConnections per service; further accepted connections are closed. Zero: 128.
	MaxConnections int
	// ChunkSize is the largest DATA payload sent. Zero (or above 64 512): 64 512.
	ChunkSize int
	// StallTimeout: see Destination. Zero: 30 s.
	StallTimeout time.Duration
	// AnswerWait is how long a local connection whose stream has started waits for
	// the destination's first data before the source logs, once per connection to
	// the service, that the device has not answered (its agent may not have joined
	// the tunnel). The connection is not ended: the device may join later. Zero:
	// 5 s; negative: never.
	AnswerWait time.Duration
	// ReadyWait is how long a local connection accepted while the tunnel is not
	// up (not yet, or reconnecting) waits for it before it is closed, with a
	// line in the log. Zero: 10 s.
	ReadyWait time.Duration
	// OnListen, if set, is called once per listener, once it is open and the
	// tunnel's services are known (its first connection's SERVICE_IDS): the
	// tunnel can then carry connections to it. (A named service's listener
	// accepts from the start; its connections wait for the tunnel.)
	OnListen func(service string, addr net.Addr)
	// DialOnly runs without listeners: local connections come only from
	// DialService (an in-process client such as a web console), so no port is open
	// to other local users. Listen is then ignored.
	DialOnly bool
	// OnServices, if set, is called with the tunnel's services each time a
	// connection to the service has them (SERVICE_IDS, or at once on V1).
	OnServices func(services []string)

	mu        sync.Mutex
	cur       *session
	streamIDs map[string]int32
	connIDs   map[string]uint32
}

// serviceRoute is one service as the source sees it: the wire id carried in frames
// ("" towards a V1 peer) and the tunnel's name for it.
type serviceRoute struct {
	_          [0]func() // not comparable: no equality function in the binary (docs/size.md)
	wire, name string
}

func (src *Source) peerVersion() Version {
	if src.PeerVersion == 0 {
		return V3
	}
	return src.PeerVersion
}

func (src *Source) options() engineOptions {
	return engineOptions{
		chunk:    chunkSize(src.ChunkSize),
		maxConns: intOr(src.MaxConnections, 128),
		stall:    durationOr(src.StallTimeout, 30*time.Second),
		// A device answers in well under a second when it is there (SSH sends its
		// banner at once); 5 s leaves room for a slow link without leaving an
		// operator staring at a silent terminal.
		answerWait: max(durationOr(src.AnswerWait, 5*time.Second), 0),
		log:        src.Config.logger().With("mode", ModeSource),
	}
}

// Run serves the tunnel until ctx ends (nil), the service closes it
// (ErrClosedByService), refuses the token (*HandshakeError) or the tunnel's services
// do not match Listen (ErrConfig). Listeners stay open across reconnects.
func (src *Source) Run(ctx context.Context) error {
	for k, addr := range src.Listen {
		if k != "" {
			if err := ValidateServiceID(k); err != nil {
				return err
			}
		}
		if _, err := listenAddr(addr); err != nil {
			return err
		}
	}
	if _, ok := src.Listen[""]; ok && len(src.Listen) > 1 {
		return fmt.Errorf("%w: a bare [addr:]port mapping is for a one-service tunnel and cannot be mixed with SERVICE=[addr:]port", ErrConfig)
	}
	opt := src.options()
	cfg := src.Config
	cfg.Logger = opt.log

	var lns []net.Listener
	var wg sync.WaitGroup
	// The configured addresses are bound before the first connection, so that a
	// port in use ends the run before it joins the tunnel (where, with a cached
	// client token, it would take the place of a source already connected).
	// They are kept by service name ("" for an unnamed mapping): two services
	// may both ask for port 0 of one address.
	bound := map[string]net.Listener{}
	six := map[string]net.Listener{} // listenMapping's [::1] listeners
	defer func() {
		for _, ln := range bound {
			ln.Close()
		}
		for _, ln := range lns {
			ln.Close()
		}
		for _, ln := range six {
			ln.Close()
		}
		wg.Wait()
	}()
	if !src.DialOnly {
		for k, addr := range src.Listen {
			ln, err := listenMapping(opt.log, six, k, addr)
			if err != nil {
				return err
			}
			bound[k] = ln
		}
	}
	actx, stopAccept := context.WithCancel(ctx) // ends waits in acceptLoop first
	defer stopAccept()
	served := map[string]net.Listener{}
	accept := func(ln net.Listener, r serviceRoute) {
		served[r.name] = ln
		lns = append(lns, ln)
		opt.log.Info("listening", "service", r.name, "addr", ln.Addr().String())
		if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() {
			opt.log.Warn("listening beyond loopback: whoever can reach this address reaches the device's service through the tunnel",
				"service", r.name, "addr", ln.Addr().String())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			src.acceptLoop(actx, ln, r)
		}()
		if l6 := six[ln.Addr().String()]; l6 != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				src.acceptLoop(actx, l6, r)
			}()
		}
	}
	// Named services are served at once: a connection made before the tunnel
	// is up waits for it (ReadyWait), then is closed with a line, instead of
	// sitting unseen in the listen backlog. An unnamed mapping's service is
	// known only from the tunnel's SERVICE_IDS.
	if _, unnamed := src.Listen[""]; !unnamed {
		for name, ln := range bound {
			delete(bound, name)
			accept(ln, serviceRoute{wire: src.wire(name), name: name})
		}
	}
	// What is not served yet is the unnamed mapping's listener, bound above,
	// or a service of the tunnel with no mapping, on a port of its own.
	listen := func(routes []serviceRoute, addrs []string) error {
		for i, r := range routes {
			ln, ok := served[r.name]
			if !ok {
				ln, ok = bound[""]
				delete(bound, "")
				if !ok {
					var err error
					if ln, err = listenMapping(opt.log, six, r.name, addrs[i]); err != nil {
						return err
					}
				}
				accept(ln, r)
			}
			if src.OnListen != nil {
				src.OnListen(r.name, ln.Addr())
			}
		}
		return nil
	}
	planned := false
	return run(ctx, cfg, ModeSource, func(ctx context.Context, c *Conn) error {
		return src.serve(ctx, c, opt, func(ids []string) error {
			if src.OnServices != nil {
				src.OnServices(append([]string(nil), ids...))
			}
			if planned || src.DialOnly {
				return nil // listeners outlive reconnects
			}
			routes, addrs, err := src.plan(ids)
			if err != nil {
				return err
			}
			if err := listen(routes, addrs); err != nil {
				return err
			}
			planned = true
			return nil
		})
	})
}

// serve runs one session; ready is called with the tunnel's services once they are
// known (SERVICE_IDS, or at once on a V1 connection, which gets none).
func (src *Source) serve(ctx context.Context, c *Conn, opt engineOptions, ready func([]string) error) error {
	s := newSession(ctx, c, opt)
	// The destination's format, but never above what the service agreed to
	// carry: one that answers -2.0 to an offer of -3.0 (spec §2.2) gets V2
	// frames, without connection ids.
	s.version = min(src.peerVersion(), c.Version())
	s.source = true
	src.mu.Lock()
	src.cur = s
	src.mu.Unlock()
	defer func() {
		src.mu.Lock()
		src.cur = nil
		src.mu.Unlock()
	}()
	if c.Version() == V1 {
		// No SERVICE_IDS on a V1 connection: the configured service is the tunnel's.
		// Whether AWS sends one to a -1.0 client is unknown (spec §3.1; tunneld
		// does not): one that comes is ignored as a repeat (serviceIDs).
		s.mu.Lock() // readySession may look already (a reconnect while listening)
		s.gotIDs = true
		s.mu.Unlock()
		var ids []string
		for name := range src.Listen {
			if name != "" {
				ids = append(ids, name)
			}
		}
		if err := ready(ids); err != nil {
			s.teardown()
			return err
		}
	}
	return s.serve(func(m *Message) error {
		switch m.Type {
		case TypeServiceIDs:
			if s.serviceIDs(m) {
				return ready(m.AvailableServiceIDs)
			}
		case TypeStreamStart, TypeConnectionStart:
			return protocolErrorf("%v received by the source", m.Type)
		default:
			s.relayed(m)
		}
		return nil
	})
}

// maxSourceServices is the most services a source takes from a tunnel's
// SERVICE_IDS.
const maxSourceServices = 64

// wire is the service id a stream of service name carries: none to a V1
// destination.
func (src *Source) wire(name string) string {
	if src.peerVersion() == V1 {
		return ""
	}
	return name
}

// plan matches Listen against the tunnel's services (spec §3.1).
func (src *Source) plan(ids []string) ([]serviceRoute, []string, error) {
	// A tunnel has up to 3 services (an adjustable AWS quota); each one not
	// mapped costs a listener here, so a list no real service sends is refused.
	if len(ids) > maxSourceServices {
		return nil, nil, fmt.Errorf("%w: the tunnel lists %d services, more than %d", ErrConfig, len(ids), maxSourceServices)
	}
	for i, id := range ids {
		if slices.Contains(ids[:i], id) {
			return nil, nil, fmt.Errorf("%w: the tunnel lists service %q twice", ErrConfig, loggedServices([]string{id})[0])
		}
	}
	if src.peerVersion() == V1 && len(ids) > 1 {
		return nil, nil, errOneService("a V1 destination", ids)
	}
	var routes []serviceRoute
	var addrs []string
	if addr, ok := src.Listen[""]; ok {
		if len(ids) > 1 {
			return nil, nil, errOneService("an unnamed mapping", ids)
		}
		name := ""
		if len(ids) == 1 {
			name = ids[0]
		}
		return []serviceRoute{{wire: src.wire(name), name: name}}, []string{addr}, nil
	}
	if len(ids) == 0 {
		return nil, nil, fmt.Errorf("%w: the tunnel has no services; give one unnamed mapping", ErrConfig)
	}
	for name := range src.Listen {
		if !slices.Contains(ids, name) {
			return nil, nil, errNotInTunnel(name, ids)
		}
	}
	for _, name := range ids {
		a := "0" // a port of its own, on loopback
		if addr, ok := src.Listen[name]; ok {
			a = addr
		}
		routes = append(routes, serviceRoute{wire: src.wire(name), name: name})
		addrs = append(addrs, a)
	}
	return routes, addrs, nil
}

// errOneService refuses a tunnel of several services, ids, to what can carry
// one only: a V1 destination, whose frames name no service, or a mapping or
// stdio connection that names none.
func errOneService(what string, ids []string) error {
	return fmt.Errorf("%w: %s needs a one-service tunnel; it has %q", ErrConfig, what, loggedServices(ids))
}

// errNotInTunnel refuses service name, which the tunnel, of services ids,
// does not have.
func errNotInTunnel(name string, ids []string) error {
	has := "no services"
	if len(ids) > 0 {
		has = fmt.Sprintf("%q", loggedServices(ids))
	}
	return fmt.Errorf("%w: service %q is not in the tunnel, which has %s", ErrConfig, name, has)
}

// listenMapping listens on a mapping's address given, "[host:]port". With no
// host, or localhost, that is 127.0.0.1, and [::1] with the same port is taken
// too when it can be, into six by the 127.0.0.1 address: clients that try
// localhost by ::1 first (curl, browsers) would otherwise reach whichever
// local user had taken it. (net.Listen takes one address of a name:
// "localhost:2222" listened on 127.0.0.1 alone.)
func listenMapping(log *slog.Logger, six map[string]net.Listener, service, given string) (net.Listener, error) {
	a, _ := listenAddr(given)
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return nil, fmt.Errorf("%w for service %q on %s: %w", ErrListen, service, a, err)
	}
	if i := strings.LastIndexByte(given, ':'); i > 0 && given[:i] != "localhost" {
		return ln, nil // a host was given
	}
	a = ln.Addr().String()
	l6, err := net.Listen("tcp", "[::1]"+a[len("127.0.0.1"):])
	if err == nil {
		six[a] = l6
	} else if errors.Is(err, errAddrInUse) {
		log.Warn("[::1] with this port is another program's: clients that try localhost by ::1 first reach it; connect to 127.0.0.1",
			"service", service, "addr", a)
	}
	return ln, nil
}

// listenAddr turns "[host:]port" into host:port.
func listenAddr(s string) (string, error) {
	if _, err := strconv.ParseUint(s, 10, 16); err == nil {
		return net.JoinHostPort("127.0.0.1", s), nil
	} else if _, err := strconv.ParseUint(s, 10, 64); err == nil {
		return "", errors.New("tunnel: listen port " + s + " is out of range (0-65535)")
	}
	// One error for both: a port that SplitHostPort did not find is "".
	host, port, _ := net.SplitHostPort(s)
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("tunnel: listen address %q: want [host:]port, a port of 0-65535%s", s, IPv6Hint(s, "[::1]:8080"))
	}
	if host == "" || host == "localhost" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// ParseListen parses a "SERVICE=[addr:]port" or "[addr:]port" mapping, as given on a
// command line.
func ParseListen(s string) (service, addr string, err error) {
	if k, v, ok := strings.Cut(s, "="); ok {
		if err := ValidateServiceID(k); err != nil {
			return "", "", err
		}
		service, s = k, v
	}
	if _, err := listenAddr(s); err != nil {
		return "", "", err
	}
	return service, s, nil
}

// defaultReadyWait is ReadyWait's default.
const defaultReadyWait = 10 * time.Second

// acceptWarnEvery is the least time between two lines about accept errors.
const acceptWarnEvery = 10 * time.Second

// maxWaiting bounds the local connections of one listener that wait for the
// tunnel at once; more are closed at once.
const maxWaiting = 64

// acceptLoop serves ln's connections. One accepted while the tunnel is down
// waits for it (ReadyWait) beside the others, so that each is closed ReadyWait
// after it came, not after those before it have waited their turn.
func (src *Source) acceptLoop(ctx context.Context, ln net.Listener, r serviceRoute) {
	var waits sync.WaitGroup
	defer waits.Wait()
	slots := make(chan struct{}, maxWaiting)
	var delay time.Duration
	var warned time.Time // the last accept error logged
	unlogged := 0        // runs of them since, not logged
	for {
		c, err := ln.Accept()
		if err != nil {
			if !TemporaryAcceptError(err) {
				return
			}
			// Out of descriptors for a moment: wait, as net/http's Serve does,
			// rather than leave the listener open with nobody accepting. The
			// first error of a run is logged, once per acceptWarnEvery: out of
			// descriptors while connections come and go, each that ends lets
			// one Accept through, and every run is one failure long.
			if now := time.Now(); delay == 0 && now.Sub(warned) >= acceptWarnEvery {
				args := []any{"service", r.name, "error", err}
				if unlogged > 0 {
					args = append(args, "runs_not_logged", unlogged)
				}
				src.options().log.Warn("accepting local connections failed; retrying", args...)
				warned, unlogged = now, 0
			} else if delay == 0 {
				unlogged++
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if !sleepCtx(ctx, delay) {
				return
			}
			continue
		}
		delay = 0
		if s := src.readyNow(); s != nil {
			src.open(s, r, c) // in order, as a V1/V2 peer's streams supersede
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			src.options().log.Warn("too many local connections waiting for the tunnel, closing this one", "service", r.name, "max", maxWaiting)
			abortConn(c)
			continue
		}
		waits.Add(1)
		go func() {
			defer waits.Done()
			defer func() { <-slots }()
			s := src.readySession(ctx)
			if s == nil {
				if ctx.Err() == nil { // not at the source's own end
					src.options().log.Warn("tunnel not connected, closing local connection", "service", r.name)
				}
				abortConn(c)
				return
			}
			src.open(s, r, c)
		}()
	}
}

// readyNow returns the current session if it has its service IDs, else nil.
func (src *Source) readyNow() *session {
	src.mu.Lock()
	s := src.cur
	src.mu.Unlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	ready := s.gotIDs && !s.closed
	s.mu.Unlock()
	if ready {
		return s
	}
	return nil
}

// readySession returns the current session once it has its service IDs, waiting up to
// ReadyWait for a reconnect.
func (src *Source) readySession(ctx context.Context) *session {
	wait := src.ReadyWait
	if wait <= 0 {
		wait = defaultReadyWait
	}
	deadline := time.Now().Add(wait)
	for {
		if s := src.readyNow(); s != nil {
			return s
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 20*time.Millisecond) {
			return nil
		}
	}
}

// nextStreamID returns the next stream id of a service: one after the last, wrapping
// to 1 (spec §3.2). The first is random, not 1 as the reference source's: ids
// must be "temporally unique", and `porthole connect --stdio` runs as a new
// process for each ssh connection. Each starting at 1, the device's reset of
// the last process's connection (its sshd closed it as the client left), still
// on its way, was taken by the next process's new connection, stream 1 again,
// which ended before the device answered (tunneld relays what the device sends
// by stream id to whichever source is connected).
func (src *Source) nextStreamID(wire string) int32 {
	src.mu.Lock()
	if src.streamIDs == nil {
		src.streamIDs = map[string]int32{}
	}
	id, ok := src.streamIDs[wire]
	if !ok {
		id = rand.Int32N(math.MaxInt32 - 1) // the first is id+1: 1 to MaxInt32-1
	}
	if id == math.MaxInt32 {
		id = 0
	}
	id++
	src.streamIDs[wire] = id
	src.mu.Unlock()
	return id
}

func (src *Source) nextConnID(wire string) uint32 {
	src.mu.Lock()
	if src.connIDs == nil {
		src.connIDs = map[string]uint32{}
	}
	id := src.connIDs[wire] + 1
	if id == 0 {
		id = 1
	}
	src.connIDs[wire] = id
	src.mu.Unlock()
	return id
}

// open carries a local connection: STREAM_START, or CONNECTION_START on the active
// stream of a V3 peer. Towards V1/V2 peers a new connection supersedes the old one.
// It returns the link, or nil if the connection was refused.
func (src *Source) open(s *session, r serviceRoute, conn io.ReadWriteCloser) *link {
	s.opening.Lock() // until the start frame is sent
	defer s.opening.Unlock()
	s.mu.Lock()
	if s.closed || !s.gotIDs {
		s.mu.Unlock()
		s.opt.log.Warn("tunnel not ready, closing local connection", "service", r.name)
		abortConn(conn)
		return nil
	}
	var old []*link
	m := Message{ServiceID: r.wire}
	st := s.streams[r.wire]
	// A destination that answers in V2 format takes no CONNECTION_START: with no
	// connection of the service open, a new stream starts instead.
	if s.version == V3 && st != nil && (!s.peerV2 || len(st.links) > 0) {
		if s.peerV2 {
			warn := !s.v2Warned
			s.v2Warned = true
			s.mu.Unlock()
			if warn {
				s.opt.log.Warn("refusing a second local connection: the device answers in V2 format, one connection per service at a time, "+
					"and would end both; the open one goes on. With --destination-client-type V2 a new connection replaces the open one instead",
					"service", r.name)
			}
			abortConn(conn)
			return nil
		}
		if len(st.links) >= s.opt.maxConns {
			s.mu.Unlock()
			s.opt.log.Warn("too many connections, refusing", "service", r.name, "max", s.opt.maxConns)
			abortConn(conn)
			return nil
		}
		m.Type, m.StreamID = TypeConnectionStart, st.id
	} else {
		if st != nil {
			for _, l := range st.links {
				old = append(old, l)
			}
		}
		st = &stream{id: src.nextStreamID(r.wire), target: r.name, links: map[uint32]*link{}}
		src.mu.Lock()
		delete(src.connIDs, r.wire) // a stream's connections count from 1
		src.mu.Unlock()
		s.streams[r.wire] = st
		m.Type, m.StreamID = TypeStreamStart, st.id
	}
	if s.version == V3 {
		// Past 2^32 connections the ids wrap: skip one still open, which the
		// destination would take as a duplicate and end (maxConns bounds them).
		m.ConnectionID = src.nextConnID(r.wire)
		for st.links[m.ConnectionID] != nil {
			m.ConnectionID = src.nextConnID(r.wire)
		}
	}
	l := s.newLinkLocked(st, r.wire, m.ConnectionID)
	s.mu.Unlock()
	if len(old) > 0 {
		// The protocol's limit, not ours: the operator's earlier session ends here,
		// which otherwise looks like the device hanging up.
		s.opt.log.Warn("a new local connection replaces the open one: a "+s.version.String()+
			" destination (--destination-client-type) carries one connection per service at a time",
			"service", r.name)
	}
	// No STREAM_RESET for the old stream goes first: the destination takes
	// that as its connection closed normally, and a transfer cut short would
	// look complete there. The new STREAM_START alone ends it as cut short
	// (spec §3.2). localproxy 1.x/2.x ends the old stream on it but drops the
	// new one (spec §5.3): the operator connects again (README).
	for _, o := range old {
		o.supersede()
	}
	if err := s.send(&m); err != nil {
		// Turned away with a reset, as abortConn turns away one that comes
		// before the tunnel is ready: a FIN made a raw download a whole,
		// empty one.
		l.reset.Store(true)
		l.end() // start then closes conn
	} else {
		s.opt.log.Debug("connection started", l.attrs()...)
		if s.opt.answerWait > 0 {
			time.AfterFunc(s.opt.answerWait, func() { s.hintUnanswered(st, l, r.name) })
		}
	}
	l.start(conn, nil)
	return l
}

// hintUnanswered says, once per session, that a connection still open has had no
// data from the destination: the service drops frames for a side that is not
// connected and tells the other side nothing (spec §3.8), so without this an
// operator's ssh hangs in silence until the device joins. It logs after
// releasing s.mu, so that a slow log sink cannot hold up the session's frames.
func (s *session) hintUnanswered(st *stream, l *link, service string) {
	s.mu.Lock()
	say := !s.closed && !s.hinted && !st.answered && s.streams[l.service] == st && st.links[l.id] == l
	s.hinted = s.hinted || say
	s.mu.Unlock()
	if !say {
		return
	}
	s.opt.log.Warn("the device has not answered yet: its agent may not have joined the tunnel. "+
		"Check destinationConnectionState in `aws iotsecuretunneling describe-tunnel --tunnel-id ID` "+
		"(the device must be online and its agent must have received the tunnel's notification); "+
		"the connection stays open until the device answers",
		"service", service, "waited", s.opt.answerWait)
}

// DialService opens a connection to service through the running Run, as if a
// client had connected to its listener: the returned end is the client's. It waits
// up to ReadyWait for a connected session, and fails for a service the tunnel does
// not have.
func (src *Source) DialService(ctx context.Context, service string) (net.Conn, error) {
	s := src.readySession(ctx)
	if s == nil {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("tunnel: not connected to the service")
	}
	s.mu.Lock()
	services := s.services
	s.mu.Unlock()
	if len(services) > 0 && !slices.Contains(services, service) {
		return nil, fmt.Errorf("tunnel: service %q is not in the tunnel, which has %q", service, services)
	}
	r := serviceRoute{wire: service, name: service}
	if src.peerVersion() == V1 {
		r.wire = ""
	}
	ours, theirs := net.Pipe()
	if src.open(s, r, ours) == nil {
		theirs.Close()
		return nil, errors.New("tunnel: the connection was refused (tunnel not ready, too many connections, or a second one to a V2-format device: see the log)")
	}
	return theirs, nil
}

// TemporaryAcceptError reports whether an Accept error may go away by itself:
// a timeout, or what acceptRetryable (per system) takes: a process or system
// out of descriptors or memory for the moment (EMFILE, ENFILE, ENOBUFS,
// ENOMEM), one connection's failure, which an accept loop should wait out
// rather than stop accepting. net/http's Serve waits out only some of them (it
// returns on ENOBUFS and ENOMEM); the host tools' servers wrap their listeners
// for that (tools/internal/acceptretry).
func TemporaryAcceptError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || acceptRetryable(err)
}
