package tunnel

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"time"
)

// Destination is the device end of a tunnel: it connects as the destination, and for
// each stream (V1/V2) or connection (V3) the source starts, dials the service's
// target through Dialer and relays bytes both ways. Run reconnects with the same
// client token after network errors and 5xx answers.
type Destination struct {
	Config
	// Dialer reaches the target of a service ID (required).
	Dialer Dialer
	// DefaultService is the service a V1 stream (no service id) is routed to. Empty:
	// the tunnel's only service, if it has exactly one.
	DefaultService string
	// MaxConnections per service; further CONNECTION_STARTs are refused. Zero: 128.
	MaxConnections int
	// ChunkSize is the largest DATA payload sent. Zero (or above 64 512): 64 512.
	ChunkSize int
	// DialTimeout bounds one Dialer call. Zero: 10 s.
	DialTimeout time.Duration
	// StallTimeout is how long one local connection that does not read may block the
	// tunnel before it is reset. Zero: 30 s.
	StallTimeout time.Duration
}

// Run serves the tunnel until ctx ends (it then returns nil), the service closes it
// (ErrClosedByService), or the service refuses the token (a *HandshakeError).
func (d *Destination) Run(ctx context.Context) error {
	opt := engineOptions{
		chunk:    chunkSize(d.ChunkSize),
		maxConns: intOr(d.MaxConnections, 128),
		stall:    durationOr(d.StallTimeout, 30*time.Second),
		log:      d.Config.logger().With("mode", ModeDestination),
	}
	cfg := d.Config
	cfg.Logger = opt.log
	return run(ctx, cfg, ModeDestination, func(ctx context.Context, c *Conn) error {
		s := newSession(ctx, c, opt)
		return s.serve(func(m *Message) error { return d.handle(s, m) })
	})
}

func chunkSize(n int) int {
	if n <= 0 || n > MaxPayload {
		return MaxPayload
	}
	return n
}

func intOr(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

func (d *Destination) handle(s *session, m *Message) error {
	switch m.Type {
	case TypeServiceIDs:
		s.serviceIDs(m)
	case TypeStreamStart:
		return d.streamStart(s, m)
	case TypeConnectionStart:
		d.connectionStart(s, m)
	default:
		s.relayed(m)
	}
	return nil
}

// streamStart opens a stream; one that supersedes the service's active stream closes
// the old one's connections and is honoured (spec §3.2; the reference proxy drops it).
func (d *Destination) streamStart(s *session, m *Message) error {
	s.mu.Lock()
	if err := s.adoptFormatLocked(m); err != nil {
		s.mu.Unlock()
		// The stream is refused and the session torn down, as both reference proxies
		// do. aws-c-iot replays the STREAM_START on its next connection; we do not:
		// when a side reconnects the service resets the other side's active streams
		// (spec §3.8), so the source has closed this stream by then, and the DATA
		// that followed the STREAM_START (an SSH client's banner) died with this
		// WebSocket or was dropped while we were away, so a replayed stream would
		// start with a hole in its bytes. The reset says so at once instead.
		// It is written here, not through sendReset (whose writer ends with
		// the session), so that it goes before the Close frame, and within
		// goodbyeTimeout, as the conn is dropped next: without a bound, a
		// service that read nothing held the reader, and with it the
		// session's end and the reconnect, for as long as it read nothing
		// (the agent's destination has no idle or pong timeout).
		s.conn.ws.writesWithin(goodbyeTimeout)
		_ = s.send(&Message{Type: TypeStreamReset, StreamID: m.StreamID, ServiceID: m.ServiceID})
		return err
	}
	reset := func(why string, args ...any) error {
		s.mu.Unlock()
		s.plog.log(s.opt.log, slog.LevelWarn, "refusing stream: "+why, append([]any{"service", loggedName(m.ServiceID), "stream", m.StreamID}, args...)...)
		s.sendStreamReset(m.ServiceID, m.StreamID)
		return nil
	}
	target := m.ServiceID
	// localproxy tears the session down for a STREAM_START before SERVICE_IDS
	// (spec §3.1); refusing the one stream is enough, and keeps the others. A
	// -1.0 connection may get no SERVICE_IDS at all (spec §3.1: unknown), so it
	// is not waited for there; one that comes is recorded all the same.
	if s.conn.Version() > V1 && !s.gotIDs {
		return reset("STREAM_START before SERVICE_IDS")
	}
	if target == "" {
		switch {
		case d.DefaultService != "":
			target = d.DefaultService
		case len(s.services) == 1:
			target = s.services[0]
		default:
			return reset("V1 stream but no default service", "services", loggedServices(s.services))
		}
	} else if !slices.Contains(s.services, target) {
		return reset("service not in the tunnel", "services", loggedServices(s.services))
	}
	if s.crowdedLocked() {
		return reset("too many connections open or closing", "connections", len(s.live))
	}
	var old []*link
	if st := s.streams[m.ServiceID]; st != nil {
		for _, l := range st.links {
			old = append(old, l)
		}
	}
	st := &stream{id: m.StreamID, target: target, links: map[uint32]*link{}}
	s.streams[m.ServiceID] = st
	l := s.newLinkLocked(st, m.ServiceID, m.ConnectionID)
	l.first = true
	s.mu.Unlock()
	for _, o := range old {
		o.supersede()
	}
	if len(old) > 0 {
		s.plog.log(s.opt.log, slog.LevelInfo, "stream superseded", "service", loggedName(m.ServiceID), "stream", m.StreamID, "closed", len(old))
	}
	s.plog.log(s.opt.log, slog.LevelInfo, "stream started", l.attrs()...)
	l.start(nil, d.dial(target))
	return nil
}

// connectionStart opens one more connection on a V3 stream (spec §3.5).
func (d *Destination) connectionStart(s *session, m *Message) {
	s.mu.Lock()
	st := s.streams[m.ServiceID]
	if st != nil && st.id == m.StreamID && s.version != V3 {
		// V1 and V2 carry one connection per stream: as a V2 localproxy does,
		// the stream ends, on both sides (a reset that left the connection
		// open here would orphan it).
		s.mu.Unlock()
		s.plog.log(s.opt.log, slog.LevelWarn, "CONNECTION_START on a stream of a "+s.version.String()+" session: resetting the stream", "service", loggedName(m.ServiceID), "stream", m.StreamID)
		s.endStream(m.ServiceID, m.StreamID, true)
		return
	}
	if st == nil || st.id != m.StreamID || s.version != V3 {
		s.mu.Unlock()
		s.opt.log.Debug("CONNECTION_START for an inactive stream", "frame", m)
		s.resetUnknownStream(m)
		return
	}
	id := s.connKeyLocked(m.ConnectionID)
	if dup, ok := st.links[id]; ok || len(st.links) >= s.opt.maxConns || s.crowdedLocked() {
		// A duplicate id is an error on the source's side: end both, so the two
		// sides agree that the id is closed.
		if ok {
			delete(st.links, id)
		}
		s.mu.Unlock()
		if dup != nil {
			dup.end()
		}
		s.plog.log(s.opt.log, slog.LevelWarn, "refusing connection", "service", loggedName(m.ServiceID), "stream", m.StreamID, "conn", id, "duplicate", ok, "max", s.opt.maxConns)
		reset := &Message{Type: TypeConnectionReset, StreamID: m.StreamID, ServiceID: m.ServiceID, ConnectionID: id}
		s.sendReset(func() { _ = s.send(reset) })
		return
	}
	l := s.newLinkLocked(st, m.ServiceID, id)
	s.mu.Unlock()
	l.start(nil, d.dial(st.target))
}

// dial returns the function that dials target for a link.
//
// Not inlined (agent/tunnel keeps inlining, device.gcflags): each caller would
// carry its own copy of the closure, ~600 B of code on linux/mipsle.
//
//go:noinline
func (d *Destination) dial(target string) func(context.Context) (io.ReadWriteCloser, error) {
	return func(ctx context.Context) (io.ReadWriteCloser, error) {
		ctx, cancel := context.WithTimeout(ctx, durationOr(d.DialTimeout, 10*time.Second))
		defer cancel()
		var c net.Conn
		c, err := d.Dialer.DialService(ctx, target)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// streamFormat is the wire format of a STREAM_START (spec §2.3, aws-c-iot's rule): no
// service id is V1, a service id with connection id 0 is V2, and one with a
// connection id is V3. In a V3 session (cur) with connections open, an absent
// connection id reads as 1 (spec §1.5), so such a STREAM_START is V3 too; without
// open connections it may begin a new format, so it is read as a first one is.
func streamFormat(m *Message, cur Version, open int) Version {
	switch {
	case m.ServiceID == "":
		return V1
	case m.ConnectionID == 0 && (cur != V3 || open == 0):
		return V2
	}
	return V3
}

// formatChangeWait bounds how long a STREAM_START in a new format waits for the
// local connections of the old one that are closing already (their peer reset them,
// or their target hung up) to finish. That normally takes microseconds; a target
// that does not take the last bytes can hold one for longer.
const formatChangeWait = time.Second

// adoptFormatLocked checks the wire format of the STREAM_START m against the
// session's (spec §2.3). The first STREAM_START of the session sets it. One in
// another format while the session is idle sets it again: that is an operator
// changing tools (the AWS console or an old localproxy, then porthole connect; or
// another --destination-client-type), one source after the other on the same
// destination connection. Idle means that no local connection of the session is
// open or closing: streams in s.streams hold only open connections (a reset or a
// local close takes them out first), and s.live holds those whose pumps still
// run. Closing ones can still send frames (DATA read before the close, the
// STREAM_RESET or CONNECTION_RESET of a local close) in the old format, which the
// new peer could take for its own (its stream ids start again at 1, and a V3 peer
// reads a V2 frame's connection id 0 as 1), so they are waited for, up to
// formatChangeWait, with s.mu released. Idle V3 streams (all their connections
// ended, which localproxy keeps) are dropped with the format.
//
// Another format while connections are open is a peer mixing formats, which
// neither reference proxy supports: a protocol error.
func (s *session) adoptFormatLocked(m *Message) error {
	var deadline <-chan time.Time
	for {
		open := s.openLocked()
		v := streamFormat(m, s.version, open)
		switch {
		case s.version == 0:
			s.version = v
			s.opt.log.Info("peer protocol detected", "format", v)
			return nil
		case v == s.version:
			return nil
		case open > 0:
			return protocolErrorf("STREAM_START in %v format in a %v session with connections open (%d)", v, s.version, open)
		case len(s.live) == 0:
			s.plog.log(s.opt.log, slog.LevelInfo, "peer protocol changed", "from", s.version, "to", v)
			s.version = v
			s.streams = map[string]*stream{}
			s.unknownReset = nil
			// The new source's DATA says whether it omits connection ids,
			// not the last one's: a V2-format source's left a V3 one's
			// cuts taken for ends (streamReset).
			s.peerV2 = false
			return nil
		}
		if deadline == nil {
			s.opt.log.Debug("waiting for closing connections before a change of format", "from", s.version, "to", v, "closing", len(s.live))
			t := time.NewTimer(formatChangeWait)
			defer t.Stop()
			deadline = t.C
		}
		s.mu.Unlock()
		expired := false
		select {
		case <-s.linkDone:
		case <-deadline:
			expired = true
		case <-s.ctx.Done():
			expired = true
		}
		s.mu.Lock()
		if expired && len(s.live) > 0 {
			return protocolErrorf("STREAM_START in %v format in a %v session with connections still closing (%d) after %v", v, s.version, len(s.live), formatChangeWait)
		}
	}
}
