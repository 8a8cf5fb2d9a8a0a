package dataplane

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/internal/tlsbatch"
)

// Side is one end of a tunnel.
type Side int

// The two sides of a tunnel; the values index arrays.
const (
	Source Side = iota
	Destination
)

func (s Side) String() string {
	switch s {
	case Source:
		return "source"
	case Destination:
		return "destination"
	}
	return fmt.Sprintf("Side(%d)", int(s))
}

// other is the opposite side.
func (s Side) other() Side { return 1 - s }

// Subprotocols of spec §2.3. The server answers with the first one the client
// offered: which one AWS picks from several is not known (spec §8), the
// reference clients offer one, and a client lists the ones it offers in the
// order it prefers them (RFC 6455 §4.1).
const (
	SubprotocolV1 = "aws.iot.securetunneling-1.0"
	SubprotocolV2 = "aws.iot.securetunneling-2.0"
	SubprotocolV3 = "aws.iot.securetunneling-3.0"
)

// Handshake bodies the real service is known to send (spec §2.6).
const (
	BodyTokenUsed           = "Invalid access token: The access token was previously used and can not be used again."
	BodyClientTokenMismatch = "Invalid client token: The provided client token does not match the client token that was previously set."
)

// Errors.
var (
	// ErrNotConnected is returned by Send when the side has no WebSocket.
	ErrNotConnected = errors.New("dataplane: side not connected")
	// ErrTunnelClosed is returned by WaitConnects once the tunnel is closed.
	ErrTunnelClosed = errors.New("dataplane: tunnel closed")
	// ErrDuplicate is returned by OpenTunnel for an ID or token already registered.
	ErrDuplicate = errors.New("dataplane: tunnel id or token already registered")
)

// maxRequestSize bounds the upgrade request: request line plus headers (spec §1.3).
const maxRequestSize = 4096

var clientTokenRE = regexp.MustCompile(`^[a-zA-Z0-9-]{32,128}$`)

// Handshake is one upgrade request the server answered.
type Handshake struct {
	Path         string // request path; only "/tunnel" is accepted
	Mode         string // local-proxy-mode query value ("" if absent; the first if repeated)
	AccessToken  string // access-token header, else the awsiot-tunnel-token cookie
	ClientToken  string // client-token header ("" if absent)
	Subprotocols []string
	Header       http.Header // the request headers as received
	Status       int         // 101 on success
	Body         string      // response body of a refused handshake
	Subprotocol  string      // the subprotocol chosen on success
	ChannelID    string      // the channel-id header sent
}

// Server is the data plane: an http.Handler for /tunnel. The zero value is ready to
// use; set its fields before the first request.
type Server struct {
	// Logger receives a record per connection event; nil discards. Access and client
	// tokens are never logged.
	Logger *slog.Logger
	// KeepHandshakes is how many of the latest handshakes Handshakes returns; 0 keeps
	// none, negative keeps all (tests).
	KeepHandshakes int
	// OnChange, if not nil, is called after a side of a tunnel connects (consuming
	// its token) or disconnects, or a failed upgrade gives its token back,
	// without locks held. It must not block.
	OnChange func(*Tunnel)
	// OnFirstUse, if not nil, is called when a handshake consumes an access token
	// (its first use, not a reconnect with the client token), before the 101 is
	// sent and without locks held. An error refuses the handshake with 503 and
	// gives the token back. A service that keeps tokens' use across restarts
	// (tunneld) records it here, so that a crash just after the 101 cannot let a
	// single-use token be used again.
	OnFirstUse func(*Tunnel) error

	// now is the clock; nil means time.Now.
	now func() time.Time
	// closeGrace bounds a graceful close before the connection is cut; 0 means
	// the constant closeGrace.
	closeGrace time.Duration

	handler sync.WaitGroup // handler goroutines and their writers

	mu           sync.Mutex
	closed       bool
	tunnels      map[string]*Tunnel  // id → tunnel
	tokens       map[string]tokenRef // access token → tunnel side
	clientTokens map[string]string   // client token → the access token that set it
	conns        map[*conn]struct{}  // every WebSocket not yet finished
	handshakes   []*Handshake        // the latest KeepHandshakes
	failN        int
	failStatus   int
	failBody     string
	nextTunnel   int
}

type tokenRef struct {
	t    *Tunnel
	side Side
}

type rawConnKey struct{}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func (s *Server) initLocked() {
	if s.tokens == nil {
		s.tunnels = make(map[string]*Tunnel)
		s.tokens = make(map[string]tokenRef)
		s.clientTokens = make(map[string]string)
		s.conns = make(map[*conn]struct{})
	}
}

// ConnContext is meant for http.Server.ConnContext: it keeps the raw connection in
// the request context so that a cut (Drop, DropAfter, Close of the server) closes TCP
// without a Close frame even while a close handshake is under way.
func (s *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, rawConnKey{}, c)
}

// TunnelConfig describes a tunnel to register with OpenTunnel.
type TunnelConfig struct {
	// ID names the tunnel in logs and Server.Tunnel; empty means "tunnel-N".
	ID string
	// Services are the destination config's service IDs, sent in SERVICE_IDS; none
	// is allowed.
	Services []string
	// Tokens are the source and destination access tokens; an empty one is generated.
	Tokens [2]string
	// Used marks a token as already consumed by a handshake (state restored after a
	// restart); ClientTokens are the client tokens that consumed them, if any. A
	// tunnel with a used token takes DATA for each of its services, and without
	// one, as if a STREAM_START for it had come: one may have, before the restart.
	Used         [2]bool
	ClientTokens [2]string
	// LastUpdated are the sides' last connection-state changes; zero means now.
	LastUpdated [2]time.Time
	// Closed registers the tunnel closed, as it was saved (state restored after
	// a restart): its tokens are refused as a closed tunnel's, its client tokens
	// are free, and nothing is logged, since nobody has just closed it.
	Closed bool
}

// OpenTunnel registers a tunnel. It fails with ErrDuplicate if the ID, a token or a
// client token is already registered.
func (s *Server) OpenTunnel(cfg TunnelConfig) (*Tunnel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if cfg.ID == "" {
		s.nextTunnel++
		cfg.ID = fmt.Sprintf("tunnel-%d", s.nextTunnel)
	}
	now := s.clock()
	t := &Tunnel{
		id:       cfg.ID,
		s:        s,
		services: append([]string(nil), cfg.Services...),
		started:  make(map[string]bool),
		active:   make(map[string]int32),
		changed:  make(chan struct{}),
	}
	t.pong.Store(true)
	if _, ok := s.tunnels[cfg.ID]; ok {
		return nil, fmt.Errorf("opening tunnel %s: %w", cfg.ID, ErrDuplicate)
	}
	for i := range t.sides {
		st := &t.sides[i]
		st.token = cfg.Tokens[i]
		if st.token == "" {
			st.token = NewToken()
		}
		if _, ok := s.tokens[st.token]; ok {
			return nil, fmt.Errorf("opening tunnel %s: %v token: %w", cfg.ID, Side(i), ErrDuplicate)
		}
		st.used, st.clientToken = cfg.Used[i], cfg.ClientTokens[i]
		if st.clientToken != "" && !cfg.Closed {
			if _, ok := s.clientTokens[st.clientToken]; ok {
				return nil, fmt.Errorf("opening tunnel %s: %v client token: %w", cfg.ID, Side(i), ErrDuplicate)
			}
		}
		st.lastUpdated = cfg.LastUpdated[i]
		if st.lastUpdated.IsZero() {
			st.lastUpdated = now
		}
	}
	if t.sides[0].token == t.sides[1].token {
		return nil, fmt.Errorf("opening tunnel %s: same token for both sides: %w", cfg.ID, ErrDuplicate)
	}
	t.closed = cfg.Closed
	if cfg.Used[Source] || cfg.Used[Destination] {
		// Restored in use (tunneld after a restart): its streams were
		// started before, unseen here, and its sides reconnect with their
		// client tokens. A destination that keeps its local connections
		// across a reconnect (aws-c-iot, spec §3.8) sends DATA for them,
		// which spec §1.5 allows (a STREAM_START came first) and which
		// was relayed before the restart, not closed with 1008.
		t.started[""] = true
		for _, svc := range t.services {
			t.started[svc] = true
		}
	}
	s.tunnels[t.id] = t
	for i := range t.sides {
		st := &t.sides[i]
		s.tokens[st.token] = tokenRef{t, Side(i)}
		if st.clientToken != "" && !t.closed {
			s.clientTokens[st.clientToken] = st.token
		}
	}
	return t, nil
}

// Tunnel returns the registered tunnel with the given ID, or nil.
func (s *Server) Tunnel(id string) *Tunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tunnels[id]
}

// Remove closes t (see Tunnel.Close) and forgets it: its tokens become unknown.
func (s *Server) Remove(t *Tunnel) {
	t.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tunnels[t.id] == t {
		delete(s.tunnels, t.id)
	}
	for i := range t.sides {
		if ref, ok := s.tokens[t.sides[i].token]; ok && ref.t == t {
			delete(s.tokens, t.sides[i].token)
		}
	}
}

// FailHandshakes makes the next n /tunnel handshakes answer status with body,
// before any other check.
func (s *Server) FailHandshakes(n int, status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failStatus, s.failBody = n, status, body
}

// Handshakes returns the latest upgrade requests answered (see KeepHandshakes), in
// order, whatever their path (Handshake.Path tells).
func (s *Server) Handshakes() []Handshake {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Handshake, len(s.handshakes))
	for i, h := range s.handshakes {
		out[i] = *h
		out[i].Header = h.Header.Clone()
		out[i].Subprotocols = append([]string(nil), h.Subprotocols...)
	}
	return out
}

// Close closes every WebSocket (without a Close frame), refuses later requests with
// 503, and waits for every goroutine the server started. It does not close the
// listener: the http.Server does.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.cut()
	}
	s.handler.Wait()
}

// recorder keeps the status and body of a handshake response.
type recorder struct {
	http.ResponseWriter
	status    int
	body      strings.Builder
	switching func() // called before a 101 is written
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
		if code == http.StatusSwitchingProtocols && r.switching != nil {
			r.switching()
		}
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.body.Len() < 4096 {
		r.body.Write(b)
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets websocket.Accept find the Hijacker.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// frameWriter is a recorder whose connection, once hijacked, buffers a whole
// WebSocket frame before writing: the library writes into the hijacked 4 KiB
// buffer, so each relayed frame of up to 64 KiB took two or three write system
// calls, about a third of the service's CPU per relayed MiB without TLS. It
// costs 64 KiB per connection. Only a writer that can be hijacked gets one, so that a request on
// one that cannot is still refused before its 101.
type frameWriter struct {
	*recorder
	hj http.Hijacker
	c  *conn // gets the wire the buffer writes to
}

// frameWriteBuffer holds the largest message this server relays, one tunnel
// frame (2-byte length and Message), with its WebSocket header. Messages that
// carry several frames (the rechunking knob) take more than one write.
const frameWriteBuffer = 2 + tunnel.MaxMessageSize + 14

func (w frameWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := w.hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil { // nothing is expected in it
		c.Close()
		return nil, nil, err
	}
	var out io.Writer = c
	if t, ok := c.(*tls.Conn); ok { // over BatchingListener: the frame's records in one write too
		out = tlsbatch.Writer(t)
	}
	w.c.wire = &wire{w: out}
	return c, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.c.wire, frameWriteBuffer)), nil
}

// BatchingListener wraps l for a TLS server on top of it (http.Server.ServeTLS):
// the data plane then writes each relayed frame, all its TLS records, with one
// system call; crypto/tls alone writes each record (at most 16 KiB) by itself.
func BatchingListener(l net.Listener) net.Listener { return tlsbatch.Listener(l) }

// withFrameWriter gives rec a frame-sized write buffer when the writer under it
// can be hijacked, and c the wire under it.
func withFrameWriter(rec *recorder, c *conn) http.ResponseWriter {
	for w := rec.ResponseWriter; ; {
		switch t := w.(type) {
		case http.Hijacker:
			return frameWriter{rec, t, c}
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return rec
		}
	}
}

// ServeHTTP answers a data-plane handshake and, if it is accepted, serves the
// WebSocket until it ends.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.initLocked()
	if s.closed {
		s.mu.Unlock()
		w.Header().Set("channel-id", NewUUID()) // as every refusal's (spec §2.2)
		http.Error(w, "server closed", http.StatusServiceUnavailable)
		return
	}
	// Hijacked handlers outlive http.Server.Shutdown; this group is what Close
	// waits for.
	s.handler.Add(1)
	s.mu.Unlock()
	defer s.handler.Done()

	h := &Handshake{
		Path:         r.URL.Path,
		Mode:         r.URL.Query().Get("local-proxy-mode"),
		ClientToken:  r.Header.Get("client-token"),
		Subprotocols: headerTokens(r.Header, "Sec-WebSocket-Protocol"),
		Header:       r.Header.Clone(),
	}
	if v := r.Header.Values("access-token"); len(v) > 0 {
		h.AccessToken = v[0]
	} else if c, err := r.Cookie("awsiot-tunnel-token"); err == nil {
		h.AccessToken = c.Value
	}
	if c := s.upgrade(w, r, h); c != nil {
		c.run()
	}
}

// recordLocked keeps h. It is called before the response is written, so a client
// that has its answer finds it.
func (s *Server) recordLocked(h *Handshake) {
	if s.KeepHandshakes == 0 {
		return
	}
	s.handshakes = append(s.handshakes, h)
	if s.KeepHandshakes > 0 && len(s.handshakes) > s.KeepHandshakes {
		s.handshakes = s.handshakes[len(s.handshakes)-s.KeepHandshakes:]
	}
}

// refuse records the handshake and answers it with status and exactly body.
func (s *Server) refuse(w http.ResponseWriter, h *Handshake, status int, body string) {
	// Error responses carry a channel-id too (spec §2.2).
	h.Status, h.Body, h.ChannelID = status, body, NewUUID()
	w.Header().Set("channel-id", h.ChannelID)
	s.mu.Lock()
	s.recordLocked(h)
	s.mu.Unlock()
	// Debug: anyone who reaches the service can cause it, and tunneld logs
	// refusals itself, rate-limited, with the body as their reason.
	s.log().Debug("handshake refused", "path", h.Path, "status", status, "body", body, "channel", h.ChannelID)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// upgrade applies the handshake rules of spec §2 and, if they hold, accepts the
// WebSocket and attaches it to its tunnel.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, h *Handshake) *conn {
	if r.URL.Path != "/tunnel" {
		p := r.URL.Path
		if len(p) > 128 {
			p = p[:128] + "…"
		}
		s.refuse(w, h, http.StatusBadRequest, fmt.Sprintf("Invalid path %q: want /tunnel", p))
		return nil
	}
	s.mu.Lock()
	if s.failN > 0 {
		s.failN--
		status, body := s.failStatus, s.failBody
		s.mu.Unlock()
		s.refuse(w, h, status, body)
		return nil
	}
	s.mu.Unlock()

	if n := requestSize(r); n > maxRequestSize {
		s.refuse(w, h, http.StatusBadRequest, fmt.Sprintf("Request too large: %d bytes, limit %d", n, maxRequestSize))
		return nil
	}
	modes := r.URL.Query()["local-proxy-mode"]
	if len(modes) != 1 || (modes[0] != "source" && modes[0] != "destination") {
		s.refuse(w, h, http.StatusBadRequest, "Invalid local-proxy-mode: want exactly one of source or destination")
		return nil
	}
	mode := Source
	if modes[0] == "destination" {
		mode = Destination
	}
	var cookies []string
	for _, c := range r.Cookies() {
		if c.Name == "awsiot-tunnel-token" {
			cookies = append(cookies, c.Value)
		}
	}
	headers := r.Header.Values("access-token")
	switch n := len(headers) + len(cookies); {
	case n == 0:
		s.refuse(w, h, http.StatusBadRequest, "Missing access token: send an access-token header or an awsiot-tunnel-token cookie")
		return nil
	case n > 1:
		s.refuse(w, h, http.StatusBadRequest, "Invalid access token: more than one access token (header and cookie values count together)")
		return nil
	}
	token := h.AccessToken
	cts := r.Header.Values("client-token")
	if len(cts) > 1 {
		s.refuse(w, h, http.StatusBadRequest, "Invalid client token: more than one client-token header")
		return nil
	}
	clientToken := ""
	if len(cts) == 1 {
		clientToken = cts[0]
		if !clientTokenRE.MatchString(clientToken) {
			s.refuse(w, h, http.StatusBadRequest, "Invalid client token: it must match ^[a-zA-Z0-9-]{32,128}$")
			return nil
		}
	}
	proto := ""
	for _, p := range h.Subprotocols {
		if p == SubprotocolV1 || p == SubprotocolV2 || p == SubprotocolV3 {
			proto = p
			break
		}
	}
	if proto == "" {
		s.refuse(w, h, http.StatusBadRequest, "Invalid Sec-WebSocket-Protocol: offer "+SubprotocolV3+", "+SubprotocolV2+" or "+SubprotocolV1)
		return nil
	}

	// A request that is no WebSocket upgrade is refused before its token is
	// looked at: Accept would refuse it after admit had consumed the token and
	// OnFirstUse recorded that (tunneld saves it), and a restart would then
	// refuse the token's real first handshake.
	if status, body := upgradeError(r); status != 0 {
		s.refuse(w, h, status, body)
		return nil
	}
	// A connect dates from its admission: a first use is saved (OnFirstUse)
	// with this time before the 101, so that a crash after it leaves on disk
	// no time earlier than the one the side was reported connected since.
	at := s.clock()
	t, side, undo, status, body := s.admit(token, clientToken, mode, at)
	if status != 0 {
		s.refuse(w, h, status, body)
		return nil
	}
	if undo != nil && s.OnFirstUse != nil {
		if err := s.OnFirstUse(t); err != nil {
			undo()
			s.log().Error("recording an access token's first use", "tunnel", t.id, "side", side, "error", err)
			s.refuse(w, h, http.StatusServiceUnavailable, "Service unavailable: the tunneling service could not record the access token's use; try again")
			return nil
		}
	}
	raw, _ := r.Context().Value(rawConnKey{}).(net.Conn)
	h.Status, h.Subprotocol, h.ChannelID = http.StatusSwitchingProtocols, proto, NewUUID()
	s.mu.Lock()
	s.recordLocked(h)
	s.mu.Unlock()
	w.Header().Set("channel-id", h.ChannelID)
	c := newConn(s, t, side, raw, proto, h.ChannelID)
	c.token, c.admitted = token, at
	attached := false
	rec := &recorder{ResponseWriter: w, switching: func() {
		// Accept is past its checks and the 101 is not on the wire until it
		// hijacks: attaching now means a client that has its 101 is connected,
		// and frames relayed to it meanwhile wait in its queue.
		attached = t.attach(c)
	}}
	ws, err := websocket.Accept(withFrameWriter(rec, c), r, &websocket.AcceptOptions{
		Subprotocols:       []string{proto},
		InsecureSkipVerify: true, // the service does not check Origin
		// A ping and its pong count toward the bandwidth (spec §3.7).
		OnPingReceived: c.onPing,
		OnPongReceived: func(ctx context.Context, p []byte) {
			t.limit.wait(ctx, 2+len(p))
		},
	})
	if err != nil {
		if attached {
			// The hijack failed after the 101: the client sees a broken
			// connection. c never runs, so nothing else forgets it.
			t.detach(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.cut()
			s.log().Info("upgrade failed", "tunnel", t.id, "side", side, "error", err)
			return nil
		}
		// Accept answered a bad WebSocket request itself.
		if undo != nil {
			undo()
		}
		s.mu.Lock()
		h.Status, h.Body, h.Subprotocol = rec.status, rec.body.String(), ""
		s.mu.Unlock()
		s.log().Info("upgrade refused", "tunnel", t.id, "side", side, "error", err)
		return nil
	}
	ws.SetReadLimit(maxWebSocketMessage)
	c.setWS(ws)
	if !attached {
		// The server closed, or the token was rotated, during the handshake.
		c.cut()
		ws.CloseNow()
		return nil
	}
	return c
}

// admit checks and consumes the access token (spec §3.8). On refusal status is
// non-zero. When admit consumed the token, it dates the side's state at, the
// connect's time, and undo gives both back if the upgrade fails later; a
// reconnect with the client token consumes nothing, and undo is nil.
func (s *Server) admit(token, clientToken string, mode Side, at time.Time) (t *Tunnel, side Side, undo func(), status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, ok := s.tokens[token]
	switch {
	case !ok:
		return nil, 0, nil, http.StatusBadRequest, "Invalid access token: The access token is not valid."
	case ref.t.closed:
		return nil, 0, nil, http.StatusBadRequest, "Invalid access token: The tunnel is closed."
	case ref.side != mode:
		return nil, 0, nil, http.StatusBadRequest, fmt.Sprintf("Invalid local-proxy-mode: the access token is for %v mode", ref.side)
	}
	t, side = ref.t, ref.side
	st := &t.sides[side]
	if st.used {
		switch {
		case st.clientToken == "" || clientToken == "":
			return nil, 0, nil, http.StatusBadRequest, BodyTokenUsed
		case subtle.ConstantTimeCompare([]byte(clientToken), []byte(st.clientToken)) != 1:
			// A secret compared in constant time: whoever holds the access
			// token must not learn the client token byte by byte.
			return nil, 0, nil, http.StatusBadRequest, BodyClientTokenMismatch
		}
		return t, side, nil, 0, ""
	}
	if clientToken != "" {
		if owner, ok := s.clientTokens[clientToken]; ok && owner != token {
			// Client tokens are unique across open tunnels (spec §2.1, §3.8).
			return nil, 0, nil, http.StatusBadRequest, "Invalid client token: The provided client token is already in use."
		}
		s.clientTokens[clientToken] = token
	}
	st.used, st.clientToken = true, clientToken
	before := st.lastUpdated
	st.lastUpdated = at
	undo = func() {
		s.mu.Lock()
		// Not once a connection is up with the token: the same client's
		// reconnect, admitted meanwhile (it consumed nothing), holds it.
		if st.token == token && st.conn != nil {
			s.mu.Unlock()
			return
		}
		if st.token == token {
			st.used, st.clientToken = false, ""
		}
		if st.lastUpdated.Equal(at) {
			st.lastUpdated = before // nothing changed since
		}
		if clientToken != "" && s.clientTokens[clientToken] == token {
			delete(s.clientTokens, clientToken)
		}
		s.mu.Unlock()
		// A save since the admission may have written the token used
		// (another's, while OnFirstUse's failed): without a word, the
		// service's file would say so until its next change, and refuse the
		// token after a restart.
		s.changed(t)
	}
	return t, side, undo, 0, ""
}

// upgradeError checks r as a WebSocket upgrade (RFC 6455 §4.2.1), as
// websocket.Accept does, and says why it is none: a status and a body, or 0.
func upgradeError(r *http.Request) (int, string) {
	keys := r.Header.Values("Sec-WebSocket-Key")
	key := ""
	if len(keys) == 1 {
		key = strings.TrimSpace(keys[0])
	}
	switch k, err := base64.StdEncoding.DecodeString(key); {
	case !r.ProtoAtLeast(1, 1) || !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket"):
		return http.StatusUpgradeRequired, "Not a WebSocket upgrade: want HTTP/1.1 with Connection: Upgrade and Upgrade: websocket"
	case r.Method != http.MethodGet:
		return http.StatusMethodNotAllowed, "Not a WebSocket upgrade: want GET"
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return http.StatusBadRequest, "Unsupported Sec-WebSocket-Version: want 13"
	case err != nil || len(k) != 16:
		return http.StatusBadRequest, "Invalid Sec-WebSocket-Key: want one, 16 bytes in base64"
	}
	return 0, ""
}

// headerHasToken reports whether a comma-separated header has token, ignoring case.
func headerHasToken(h http.Header, key, token string) bool {
	return slices.ContainsFunc(headerTokens(h, key), func(t string) bool { return strings.EqualFold(t, token) })
}

// requestSize is the size of the request line and headers as sent (Go moves Host out
// of the header map).
func requestSize(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	n += len("Host: ") + len(r.Host) + 2
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n + 2
}

// headerTokens splits the comma-separated values of header key.
func headerTokens(h http.Header, key string) []string {
	var out []string
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// NewToken returns a random access token of 64 URL-safe characters.
func NewToken() string {
	b := make([]byte, 48)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewUUID returns a random version 4 UUID (channel ids here, tunnel ids in tunneld).
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
