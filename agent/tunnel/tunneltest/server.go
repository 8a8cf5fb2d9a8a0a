package tunneltest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
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

// Subprotocols of spec §2.3, in the order the server prefers them when it has to
// choose; it answers with the first one the client offered.
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

// Server is a fake Secure Tunneling data plane listening on 127.0.0.1.
type Server struct {
	// URL is the endpoint clients dial, "ws://127.0.0.1:PORT", without a path.
	URL string
	// Logf, if not nil, receives a line per connection event. Server and Tunnel
	// methods read it (its server goroutines never do), so setting it right after
	// NewServer, before OpenTunnel, is race-free. Tokens are never logged.
	Logf func(format string, args ...any)

	hs      *httptest.Server
	logfn   atomic.Pointer[func(string, ...any)]
	handler sync.WaitGroup // handler goroutines and their writers

	mu           sync.Mutex
	closed       bool
	tokens       map[string]tokenRef // access token → tunnel side
	clientTokens map[string]string   // client token → the access token that set it
	conns        map[*conn]struct{}  // every WebSocket not yet finished
	handshakes   []Handshake
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

// NewServer starts a Server on 127.0.0.1 and registers its Close with tb.Cleanup.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		tokens:       make(map[string]tokenRef),
		clientTokens: make(map[string]string),
		conns:        make(map[*conn]struct{}),
	}
	s.hs = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	// The raw connection lets Drop cut TCP without a Close frame even while a close
	// handshake is under way.
	s.hs.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, rawConnKey{}, c)
	}
	s.hs.Start()
	s.URL = "ws://" + strings.TrimPrefix(s.hs.URL, "http://")
	tb.Cleanup(s.Close)
	return s
}

// Close closes every WebSocket (without a Close frame) and the listener, and waits
// for every goroutine the server started.
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
	s.hs.Close()
	s.handler.Wait()
}

// OpenTunnel opens a tunnel whose destination config lists services (possibly none)
// and returns it with fresh source and destination access tokens.
func (s *Server) OpenTunnel(services ...string) *Tunnel {
	s.refreshLogf()
	t := &Tunnel{
		SourceToken:      newToken(),
		DestinationToken: newToken(),
		s:                s,
		services:         append([]string(nil), services...),
		started:          make(map[string]bool),
		active:           make(map[string]int32),
		changed:          make(chan struct{}),
	}
	t.pong.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextTunnel++
	t.ID = fmt.Sprintf("tunnel-%d", s.nextTunnel)
	s.tokens[t.SourceToken] = tokenRef{t, Source}
	s.tokens[t.DestinationToken] = tokenRef{t, Destination}
	return t
}

// FailHandshakes makes the next n /tunnel handshakes answer status with body,
// before any other check.
func (s *Server) FailHandshakes(n int, status int, body string) {
	s.refreshLogf()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failStatus, s.failBody = n, status, body
}

// Handshakes returns every upgrade request answered so far, in order, whatever its
// path (Handshake.Path tells).
func (s *Server) Handshakes() []Handshake {
	s.refreshLogf()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Handshake, len(s.handshakes))
	for i, h := range s.handshakes {
		h.Header = h.Header.Clone()
		h.Subprotocols = append([]string(nil), h.Subprotocols...)
		out[i] = h
	}
	return out
}

func (s *Server) refreshLogf() {
	f := s.Logf
	s.logfn.Store(&f)
}

func (s *Server) logf(format string, args ...any) {
	if f := s.logfn.Load(); f != nil && *f != nil {
		(*f)("tunneltest: "+format, args...)
	}
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

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "server closed", http.StatusServiceUnavailable)
		return
	}
	// Hijacked handlers outlive httptest.Server.Close; this group is what Close
	// waits for.
	s.handler.Add(1)
	s.mu.Unlock()
	defer s.handler.Done()

	h := Handshake{
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
	if c := s.upgrade(w, r, &h); c != nil {
		c.run()
	}
}

// recordLocked appends h to the handshakes and returns its index. It is called
// before the response is written, so a client that has its answer finds it.
func (s *Server) recordLocked(h *Handshake) int {
	s.handshakes = append(s.handshakes, *h)
	return len(s.handshakes) - 1
}

// refuse records the handshake and answers it with status and exactly body.
func (s *Server) refuse(w http.ResponseWriter, h *Handshake, status int, body string) {
	// Error responses carry a channel-id too (spec §2.2).
	h.Status, h.Body, h.ChannelID = status, body, newUUID()
	w.Header().Set("channel-id", h.ChannelID)
	s.mu.Lock()
	s.recordLocked(h)
	s.mu.Unlock()
	s.logf("handshake %s refused: %d %s", h.Path, status, body)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// upgrade applies the handshake rules of spec §2 and, if they hold, accepts the
// WebSocket and attaches it to its tunnel.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, h *Handshake) *conn {
	if r.URL.Path != "/tunnel" {
		s.refuse(w, h, http.StatusBadRequest, fmt.Sprintf("Invalid path %q: want /tunnel", r.URL.Path))
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

	t, side, undo, status, body := s.admit(token, clientToken, mode)
	if status != 0 {
		s.refuse(w, h, status, body)
		return nil
	}
	raw, _ := r.Context().Value(rawConnKey{}).(net.Conn)
	h.Status, h.Subprotocol, h.ChannelID = http.StatusSwitchingProtocols, proto, newUUID()
	s.mu.Lock()
	i := s.recordLocked(h)
	s.mu.Unlock()
	w.Header().Set("channel-id", h.ChannelID)
	c := newConn(s, t, side, raw, proto, h.ChannelID)
	attached := false
	rec := &recorder{ResponseWriter: w, switching: func() {
		// Accept is past its checks and the 101 is not on the wire until it
		// hijacks: attaching now means a client that has its 101 is connected,
		// and frames relayed to it meanwhile wait in its queue.
		attached = t.attach(c)
	}}
	ws, err := websocket.Accept(rec, r, &websocket.AcceptOptions{
		Subprotocols:       []string{proto},
		InsecureSkipVerify: true, // the service does not check Origin
		OnPingReceived: func(context.Context, []byte) bool {
			return t.pong.Load()
		},
	})
	if err != nil {
		if attached {
			// The hijack failed after the 101: the client sees a broken connection.
			t.detach(c)
			c.cut()
			s.logf("%s %v: upgrade: %v", t.ID, side, err)
			return nil
		}
		// Accept answered a bad WebSocket request itself.
		undo()
		s.mu.Lock()
		s.handshakes[i].Status, s.handshakes[i].Body = rec.status, rec.body.String()
		s.handshakes[i].Subprotocol = ""
		s.mu.Unlock()
		s.logf("%s %v: upgrade: %v", t.ID, side, err)
		return nil
	}
	ws.SetReadLimit(maxWebSocketMessage)
	c.setWS(ws)
	if !attached {
		// The server or the tunnel closed during the handshake.
		c.cut()
		ws.CloseNow()
		return nil
	}
	return c
}

// admit checks and consumes the access token (spec §3.8). On refusal status is
// non-zero; undo gives the token back if the upgrade fails later.
func (s *Server) admit(token, clientToken string, mode Side) (t *Tunnel, side Side, undo func(), status int, body string) {
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
		case clientToken != st.clientToken:
			return nil, 0, nil, http.StatusBadRequest, BodyClientTokenMismatch
		}
		return t, side, func() {}, 0, ""
	}
	if clientToken != "" {
		if owner, ok := s.clientTokens[clientToken]; ok && owner != token {
			// Client tokens are unique across open tunnels (spec §2.1, §3.8).
			return nil, 0, nil, http.StatusBadRequest, "Invalid client token: The provided client token is already in use."
		}
		s.clientTokens[clientToken] = token
	}
	st.used, st.clientToken = true, clientToken
	undo = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		st.used, st.clientToken = false, ""
		if clientToken != "" {
			delete(s.clientTokens, clientToken)
		}
	}
	return t, side, undo, 0, ""
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

// newToken returns a random access token of 64 URL-safe characters.
func newToken() string {
	b := make([]byte, 48)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newUUID returns a random version 4 UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
