package tunnel

import (
	"context"
	"io"
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
	// The wire format is fixed by the first STREAM_START (spec §2.3).
	v := V3
	switch {
	case m.ServiceID == "":
		v = V1
	case m.ConnectionID == 0 && s.version != V3:
		v = V2
	}
	if s.version == 0 {
		s.version = v
		s.opt.log.Info("peer protocol detected", "format", v)
	} else if v != s.version {
		s.mu.Unlock()
		return protocolErrorf("STREAM_START in %v format in a %v session", v, s.version)
	}
	reset := func(why string, args ...any) error {
		s.mu.Unlock()
		s.opt.log.Warn("refusing stream: "+why, append([]any{"service", m.ServiceID, "stream", m.StreamID}, args...)...)
		return s.send(&Message{Type: TypeStreamReset, StreamID: m.StreamID, ServiceID: m.ServiceID})
	}
	target := m.ServiceID
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
			return reset("V1 stream but no default service", "services", s.services)
		}
	} else if !slices.Contains(s.services, target) {
		return reset("service not in the tunnel", "services", s.services)
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
	s.mu.Unlock()
	for _, o := range old {
		o.quiet.Store(true)
		o.end()
	}
	if len(old) > 0 {
		s.opt.log.Info("stream superseded", "service", m.ServiceID, "stream", m.StreamID, "closed", len(old))
	}
	s.opt.log.Info("stream started", l.attrs()...)
	l.start(nil, d.dial(target))
	return nil
}

// connectionStart opens one more connection on a V3 stream (spec §3.5).
func (d *Destination) connectionStart(s *session, m *Message) {
	s.mu.Lock()
	st := s.streams[m.ServiceID]
	if st == nil || st.id != m.StreamID || s.version != V3 {
		s.mu.Unlock()
		s.opt.log.Debug("CONNECTION_START for an inactive stream", "msg", m)
		s.resetUnknownStream(m)
		return
	}
	id := s.connKeyLocked(m.ConnectionID)
	if dup, ok := st.links[id]; ok || len(st.links) >= s.opt.maxConns {
		// A duplicate id is an error on the source's side: end both, so the two
		// sides agree that the id is closed.
		if ok {
			delete(st.links, id)
		}
		s.mu.Unlock()
		if dup != nil {
			dup.end()
		}
		s.opt.log.Warn("refusing connection", "service", m.ServiceID, "stream", m.StreamID, "conn", id, "duplicate", ok, "max", s.opt.maxConns)
		_ = s.send(&Message{Type: TypeConnectionReset, StreamID: m.StreamID, ServiceID: m.ServiceID, ConnectionID: id})
		return
	}
	l := s.newLinkLocked(st, m.ServiceID, id)
	s.mu.Unlock()
	l.start(nil, d.dial(st.target))
}

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
