package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/acceptretry"
	"github.com/porthole-iot/porthole/tools/internal/rebind"
	"github.com/porthole-iot/porthole/tools/internal/servertls"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

// Key is a private key file offered for logins. It is read at each login and never
// sent to the browser.
type Key struct {
	Name string // shown in the page
	Path string // OpenSSH or PEM private key, without passphrase
}

// Config configures a Server. Its zero value serves the paste-a-token page only.
type Config struct {
	// ControlPlane opens and closes tunnels from the page, and tells whether their
	// devices are connected; nil means the page only takes pasted source tokens.
	ControlPlane ControlPlane
	// Endpoint is the data-plane endpoint for tunnels opened through ControlPlane and
	// the page's default for pasted tokens: host[:port] or a wss:// URL. "" means the
	// endpoint of Region. New refuses a ws:// one, as the page refuses a pasted
	// one, unless AllowInsecureWebSocket.
	Endpoint string
	// Region is the default region; "" means us-east-1.
	Region string
	// CAFile is an extra PEM trust anchor for the data plane (the lab's dev CA); ""
	// means the system roots.
	CAFile string
	// AllowInsecureWebSocket permits ws:// endpoints, here and pasted in the page.
	// Only for tests: porthole-console has no flag for it.
	AllowInsecureWebSocket bool
	// Proxy picks the data plane's HTTPS proxy, as tunnel.Config.Proxy; nil
	// means https_proxy and HTTPS_PROXY, honouring NO_PROXY.
	Proxy func(target *url.URL) (*url.URL, error)
	// Thing and User pre-fill the page's forms; "" means empty and "root".
	Thing, User string
	// Keys are offered for key logins, the first pre-selected. nil means none
	// (the operator pastes a key or uses a password).
	Keys []Key
	// HostKeys is the trust-on-first-use store; nil means memory only.
	HostKeys *HostKeys
	// AccessToken is the secret every API call and terminal needs (in the printed
	// URL's fragment); "" means a random one made by New.
	AccessToken string
	// PublicURL is the console's address as the browser has it when a reverse
	// proxy serves it, typically over https: scheme://host[:port], e.g.
	// https://console.example.com. Requests may then name that host (a proxy that
	// keeps the Host header) and come from that origin, and URL prints it. ""
	// means the console is opened by its own address.
	PublicURL string
	// Vendor holds the third-party browser files (xterm.js, xterm.css, addon-fit.js);
	// nil means the copy embedded at build time (make console-assets).
	Vendor fs.FS
	// TLS, with a certificate (Certificates or GetCertificate), makes Serve
	// serve https, and URL print it; nil means plain HTTP, for loopback or a
	// reverse proxy that does TLS. Its minimum version is raised to TLS 1.2,
	// and nil CipherSuites mean the host tools' AEAD suites
	// (tools/internal/servertls), without Go's CBC ones.
	TLS *tls.Config
	// Logger receives the server's records; nil means discard. Tokens, passwords
	// and keys are never logged.
	Logger *slog.Logger

	// loginTimeout bounds an SSH login's handshake, with the wait for a device
	// whose agent has not joined the tunnel yet; 0 means 30 s. (Tests shorten it.)
	loginTimeout time.Duration
	// authTimeout bounds the wait for a terminal WebSocket's auth message; 0 means
	// 5 s. (Tests shorten it.)
	authTimeout time.Duration
	// closeTimeout bounds closing, at shutdown, the tunnels the console opened; 0
	// means 5 s. (Tests shorten it.)
	closeTimeout time.Duration
	// orphanTimeout bounds the search, after an OpenTunnel whose answer was
	// lost, for the tunnel it may have opened (closeAttempt); 0 means 10 s.
	// (Tests shorten it.)
	orphanTimeout time.Duration
	// strayRetry is how often the console tries again to close a tunnel it
	// opened, has no source side for, and could not close (tunnels.closeLater);
	// 0 means a minute. (Tests shorten it.)
	strayRetry time.Duration
	// readTimeout bounds reading one request, headers and body, from its first
	// byte; 0 means requestReadTimeout. writeTimeout bounds a request from the
	// end of its headers to the end of its answer; 0 means requestWriteTimeout.
	// idleTimeout bounds a keep-alive connection's wait for its next request; 0
	// means keepAliveTimeout. Terminal WebSockets are bound by none of them. (Tests
	// shorten them.)
	readTimeout, writeTimeout, idleTimeout time.Duration
}

// Without these an unauthenticated client (the page is public, and the token is
// checked once net/http has read the headers) held a connection, its goroutine
// and its descriptor for as long as it liked: idle after a GET /, or stopped
// in the body of a POST that was refused before it was read, or pipelining
// requests and never reading the answers; enough of them and the console served
// nobody.
const (
	// requestReadTimeout: a request's body is a JSON object of at most 64 KiB
	// (readJSON).
	requestReadTimeout = 30 * time.Second
	// requestWriteTimeout runs from the end of a request's headers: its body (at
	// most requestReadTimeout), the call (POST /api/tunnels: OpenTunnel, 30 s of
	// its own, and CloseTunnel, Config.closeTimeout, when the open failed;
	// after an answer lost, the search for the tunnel, Config.orphanTimeout,
	// and its CloseTunnel, closeTimeout;
	// DELETE: CloseTunnel, 30 s, then up to 5 s for the service to close the
	// source side and the source side's end), and the answer (xterm.js,
	// a few hundred KiB, the largest). 2 min leaves room for a slow link.
	requestWriteTimeout = 2 * time.Minute
	// keepAliveTimeout is above the idle timeouts of reverse proxies' upstream
	// connections (nginx's keepalive_timeout 60 s, Traefik's 90 s, Caddy's 2 min):
	// the proxy, not the console, closes an idle connection, so that the proxy
	// never sends a request on one the console is closing. The page asks for
	// /api/state every 1.5 s: its connection is never idle that long.
	keepAliveTimeout = 3 * time.Minute
)

// Server is the console's web server. Create it with New, then Serve.
type Server struct {
	cfg     Config
	log     *slog.Logger
	token   string
	sum     [sha256.Size]byte // of token, compared in constant time
	static  fs.FS
	vendor  fs.FS
	public  *origin // of Config.PublicURL; nil without one
	mux     *http.ServeMux
	tunnels *tunnels
	http    *http.Server

	mu       sync.Mutex
	sessions map[*terminal]struct{}
	closed   bool
	wg       sync.WaitGroup // terminals
}

// New checks cfg and makes a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.loginTimeout == 0 {
		cfg.loginTimeout = 30 * time.Second
	}
	if cfg.authTimeout == 0 {
		cfg.authTimeout = 5 * time.Second
	}
	if cfg.closeTimeout == 0 {
		cfg.closeTimeout = 5 * time.Second
	}
	if cfg.orphanTimeout == 0 {
		cfg.orphanTimeout = 10 * time.Second
	}
	if cfg.strayRetry == 0 {
		cfg.strayRetry = time.Minute
	}
	if cfg.readTimeout == 0 {
		cfg.readTimeout = requestReadTimeout
	}
	if cfg.writeTimeout == 0 {
		cfg.writeTimeout = requestWriteTimeout
	}
	if cfg.idleTimeout == 0 {
		cfg.idleTimeout = keepAliveTimeout
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.User == "" {
		cfg.User = "root"
	}
	if cfg.HostKeys == nil {
		cfg.HostKeys = &HostKeys{}
	}
	if cfg.AccessToken == "" {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		cfg.AccessToken = base64.RawURLEncoding.EncodeToString(b)
	}
	static, vendor, err := assets(cfg.Vendor)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, token: cfg.AccessToken, sum: sha256.Sum256([]byte(cfg.AccessToken)),
		static: static, vendor: vendor, sessions: map[*terminal]struct{}{}}
	if err := s.checkEndpoint(cfg.Endpoint, cfg.Region); err != nil {
		return nil, err
	}
	if cfg.PublicURL != "" {
		o, ok := parseOrigin(strings.TrimSuffix(cfg.PublicURL, "/"))
		if ok {
			o, ok = canonicalOrigin(o)
		}
		if !ok || strings.Contains(cfg.PublicURL, "#") {
			return nil, fmt.Errorf("console: public URL %q: want http[s]://host[:port] and nothing after it, "+
				"the host name in ASCII (xn--… for an international name)", cfg.PublicURL)
		}
		s.public = &o
		s.cfg.PublicURL = o.String()
	}
	s.tunnels = newTunnels(&s.cfg, s.log)
	s.routes()
	// The timeouts do not cut the terminal WebSockets: net/http clears a
	// connection's deadlines when it is hijacked (conn.hijackLocked), as
	// websocket.Accept does (TestTerminalOutlivesTimeouts).
	s.http = &http.Server{Handler: s,
		// The page's requests carry a bearer token and no cookie of the
		// console's; a browser may add other servers' cookies for the same host
		// (the reverse proxy's domain), a few KiB. Not net/http's 1 MiB, which
		// a stalled request kept in memory.
		MaxHeaderBytes:    64 << 10,
		ReadHeaderTimeout: min(10*time.Second, cfg.readTimeout),
		ReadTimeout:       cfg.readTimeout,
		WriteTimeout:      cfg.writeTimeout,
		IdleTimeout:       cfg.idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	if cfg.TLS != nil {
		if len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil {
			return nil, errors.New("console: TLS without a certificate")
		}
		// HTTP/1.1 only: the terminal is a WebSocket, which browsers open over
		// HTTP/1.1 unless the server offers WebSockets over HTTP/2. A non-nil
		// TLSNextProto keeps net/http from adding h2 to NextProtos, where a
		// client offering only h2 would get it, as tunneld's does.
		s.http.TLSConfig = cfg.TLS.Clone()
		s.http.TLSConfig.NextProtos = []string{"http/1.1"}
		s.http.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		s.http.TLSConfig.MinVersion = max(s.http.TLSConfig.MinVersion, tls.VersionTLS12)
		servertls.Restrict(s.http.TLSConfig)
	}
	return s, nil
}

// URL is the address to open in a browser for a server listening on addr,
// http://HOST:PORT/#token=TOKEN, or the PublicURL's: it carries the access token,
// so print it only to the operator. The token is in the fragment, which browsers send neither to a
// server nor in a Referer; the page takes it from there (see ServeHTTP).
func (s *Server) URL(addr net.Addr) string {
	if s.public != nil {
		return s.cfg.PublicURL + "/#token=" + url.QueryEscape(s.token)
	}
	host := addr.String()
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		host = net.JoinHostPort("127.0.0.1", fmt.Sprint(ta.Port))
	}
	scheme := "http://"
	if s.cfg.TLS != nil {
		scheme = "https://"
	}
	return scheme + host + "/#token=" + url.QueryEscape(s.token)
}

// Serve serves the console on l until Shutdown or Close, over TLS when
// Config.TLS is set. Accept errors that pass by themselves (out of descriptors
// or memory) are waited out, the first of a run logged at Warn: net/http's
// Serve returns on ENOBUFS and ENOMEM, and logs EMFILE only at Debug.
func (s *Server) Serve(l net.Listener) error {
	l = acceptretry.Wrap(l, s.log)
	if s.cfg.TLS != nil {
		return s.http.ServeTLS(l, "", "")
	}
	return s.http.Serve(l)
}

// Shutdown stops the server: no new requests, every terminal and tunnel ended. The
// tunnels it opened through the control plane, and has not closed, are closed at
// the service meanwhile, within 5 s of their own: not what is left of ctx once
// requests in flight have ended. An open through the control plane under way
// is cut short, and waited for while it closes what it may have opened (after
// an answer lost, the search for it, Config.orphanTimeout, and its close):
// the caller typically exits once Shutdown returns. Other requests still in
// flight when ctx ends are left to finish, and Shutdown returns ctx's error
// once the tunnels are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	// The tunnels are closed while the requests end, not after: one request
	// whose body never comes (any local client can send one: the token is
	// checked after net/http has read the headers, and the rest of a body is
	// read after the handler refused it) held http.Shutdown till ctx's end,
	// and CloseTunnel then failed at once on the expired ctx, the tunnels
	// left open, their devices connected, for their whole lifetime.
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		s.endAll(context.WithoutCancel(ctx))
	}()
	err := s.http.Shutdown(ctx)
	<-ended
	return err
}

// Close stops the server at once, but for closing at the service the tunnels it
// opened, which takes up to 5 s, and, as in Shutdown, for an open under way to
// close what it may have opened.
func (s *Server) Close() error {
	err := s.http.Close()
	s.endAll(context.Background())
	return err
}

func (s *Server) endAll(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	for t := range s.sessions {
		t.cancel()
	}
	s.mu.Unlock()
	// The tunnels are closed at the service while the terminals end, not
	// after: a terminal whose page no longer answers takes 5 s to end (the
	// WebSocket's close handshake), which would leave the tunnels nothing of
	// ctx, and open with their devices for the rest of their lifetime.
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		s.tunnels.close(ctx)
	}()
	s.wg.Wait()
	<-closed
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.handleIndex)
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(s.static)))
	m.Handle("GET /vendor/", http.StripPrefix("/vendor/", http.FileServerFS(s.vendor)))
	m.HandleFunc("GET /api/state", s.handleState)
	m.HandleFunc("POST /api/tunnels", s.handleOpen)
	m.HandleFunc("DELETE /api/tunnels/{id}", s.handleClose)
	m.HandleFunc("GET /api/terminal", s.handleTerminal)
	s.mux = m
}

// securityHeaders are on every answer (and, over TLS, hsts). Scripts come from this server only; xterm.js
// writes its theme into <style> elements, hence 'unsafe-inline' for styles alone.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
		"connect-src 'self'; img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options":        "DENY",
	"Referrer-Policy":        "no-referrer",
	"Cache-Control":          "no-store",
}

// hsts is the Strict-Transport-Security of answers the console serves over TLS
// itself: a year, as Mozilla's guidelines. Without includeSubDomains, which
// would hold every other server under the console's name to https for that
// year (a device's page forwarded by name, another team's plain-http tool):
// the console knows nothing of them. Not over plain HTTP, where browsers
// ignore it (RFC 6797 §8.1) and, behind a TLS reverse proxy, it is the proxy's
// to send.
const hsts = "max-age=31536000"

// hstsHost reports whether the console sends hsts to a request for host, a
// Host header that passed hostOK. Not for an IP address, for which browsers
// ignore it (RFC 6797 §8.1), nor for localhost or a name under .localhost:
// browsers keep HSTS per host name whatever the port, so a console served at
// https://localhost:8443 would have the browser turn every http://localhost:PORT
// to https for a year, among them what porthole connect forwards from a
// device's web page, and a dev server's.
func hstsHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if _, err := netip.ParseAddr(host); err == nil {
		return false
	}
	return host != "localhost" && !strings.HasSuffix(host, ".localhost")
}

// ServeHTTP checks the Host header, the access token and the origin of
// state-changing requests and WebSockets, and then routes. Only method and path
// are logged, never the query or headers.
//
// Authentication: the page holds the access token itself (from the printed URL's
// fragment, in sessionStorage) and sends it as "Authorization: Bearer TOKEN" on
// every API call; the terminal WebSocket, which a browser cannot give headers,
// sends it in its first message (handleTerminal). No cookie is set or read: a
// browser sends a host's cookies to every port of it, so any other web server on
// 127.0.0.1 (a device's page forwarded through a tunnel, another user's server)
// would receive the token. The page, its script and xterm.js hold no secrets and
// are served to anyone who passes the Host check.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for k, v := range securityHeaders {
		w.Header().Set(k, v)
	}
	s.log.Debug("request", "method", r.Method, "path", r.URL.Path)
	// Before anything else: a page of another name (DNS rebinding) is not served.
	if !s.hostOK(r) {
		s.log.Warn("request for another host refused", "method", r.Method, "path", r.URL.Path, "host", r.Host)
		refuse(w, r, http.StatusMisdirectedRequest, "misdirected request: open the console by the address it printed, or give it the address it is opened by (--public-url, as for a certificate issued for a name)")
		return
	}
	if r.TLS != nil && hstsHost(r.Host) {
		w.Header().Set("Strict-Transport-Security", hsts)
	}
	switch p := r.URL.Path; {
	case p == "/" && r.URL.Query().Has("token"):
		// The old URL form (?token=, exchanged for a cookie). No cookie and no
		// redirect: a redirect would carry the token in a URL again.
		http.Error(w, "the console's address has changed: the access token now follows a # (http://HOST:PORT/#token=…), "+
			"which the browser keeps to itself; open the address the console printed", http.StatusBadRequest)
		return
	case p == "/" || strings.HasPrefix(p, "/static/") || strings.HasPrefix(p, "/vendor/"):
		// public: no secrets
	case p == "/api/terminal":
		// authenticated by its first message
	default:
		if !s.bearerOK(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="porthole console"`)
			refuse(w, r, http.StatusUnauthorized, "access token required: open the URL the console printed (http://…/#token=…)")
			return
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead || r.URL.Path == "/api/terminal" {
		if !s.sameOrigin(r) {
			s.log.Warn("cross-origin request refused", "method", r.Method, "path", r.URL.Path, "origin", r.Header.Get("Origin"))
			refuse(w, r, http.StatusForbidden, "cross-origin request refused (behind a reverse proxy, the console needs its public URL: --public-url)")
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// refuse answers a refused request: in JSON for the API, whose error the
// page shows (it reads no other body), as text for the rest.
func refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		writeError(w, code, msg)
		return
	}
	http.Error(w, msg, code)
}

// bearerOK reports whether r carries "Authorization: Bearer TOKEN".
func (s *Server) bearerOK(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && s.tokenOK(strings.TrimSpace(tok))
}

// tokenOK compares hashes, so that neither the bytes nor the length of the token
// show in the time taken.
func (s *Server) tokenOK(got string) bool {
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], s.sum[:]) == 1
}

// hostOK accepts a Host header that names the address the request came in on,
// or a loopback name, with its port (rebind.LocalHost), or the PublicURL's host
// and port. Any other name is a page that rebound its DNS name to this address.
func (s *Server) hostOK(r *http.Request) bool {
	return s.viaPublic(r) || rebind.LocalHost(r)
}

// viaPublic reports whether r names the PublicURL's host and port: it came
// through the reverse proxy, which kept the Host header.
func (s *Server) viaPublic(r *http.Request) bool {
	if s.public == nil {
		return false
	}
	h, ok := hostOrigin(s.public.scheme, r.Host)
	return ok && h.host == s.public.host && h.port == s.public.port
}

// sameOrigin requires an Origin header (browsers always send one on WebSocket
// upgrades and on fetch calls other than GET) that is the console's own origin.
// Origins compare whole, as browsers write them: scheme, host name and port. The
// PublicURL's origin is the console's: behind a reverse proxy, which may have
// changed the scheme, the Host header or both. So is, for a request that names
// the console's own address, that address with the scheme it came by: https over
// TLS. A request that names the PublicURL's host comes from its origin only: the
// same name over plain http is another origin, which the network can fake.
func (s *Server) sameOrigin(r *http.Request) bool {
	o, ok := parseOrigin(r.Header.Get("Origin"))
	if !ok {
		return false
	}
	if s.public != nil && o == *s.public {
		return true
	}
	if s.viaPublic(r) {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	own, ok := hostOrigin(scheme, r.Host)
	return ok && o == own
}

// origin is a web origin (RFC 6454): scheme, host name in lower case, and port,
// the scheme's default filled in.
type origin struct{ scheme, host, port string }

// canonicalOrigin writes o as browsers write an origin: an IP address in its
// canonical form, the port without leading zeros. A host name that is not ASCII
// is refused: browsers send its punycode (xn--…), which the operator gives.
func canonicalOrigin(o origin) (origin, bool) {
	if ip, err := netip.ParseAddr(o.host); err == nil {
		if ip.Zone() != "" {
			return origin{}, false
		}
		o.host = ip.String()
	}
	for _, c := range []byte(o.host) {
		if c >= 0x80 {
			return origin{}, false
		}
	}
	port, err := strconv.Atoi(o.port)
	if err != nil || port < 1 || port > 65535 {
		return origin{}, false
	}
	o.port = strconv.Itoa(port)
	return o, true
}

// String is the origin as a URL: scheme://host[:port], without the scheme's
// default port.
func (o origin) String() string {
	if (o.scheme == "http" && o.port == "80") || (o.scheme == "https" && o.port == "443") {
		if strings.Contains(o.host, ":") {
			return o.scheme + "://[" + o.host + "]"
		}
		return o.scheme + "://" + o.host
	}
	return o.scheme + "://" + net.JoinHostPort(o.host, o.port)
}

// parseOrigin parses an Origin header, or a URL with nothing after its port:
// http[s]://host[:port]. "null" and other schemes are not origins the console
// has.
func parseOrigin(s string) (origin, bool) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.Opaque != "" ||
		u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return origin{}, false
	}
	return hostOrigin(u.Scheme, u.Host)
}

// hostOrigin is the origin of host[:port], a Host header, under scheme.
func hostOrigin(scheme, hostport string) (origin, bool) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil { // no port: the scheme's
		host, port = hostport, "80"
		if scheme == "https" {
			port = "443"
		}
		if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		}
	}
	// Brackets only enclose an IPv6 address, and a name has no colon or
	// percent sign (only an IPv6 address's zone has one): "]]", "[a]b" and
	// "%0" (from http://%250) are not hosts, and the last one, written out,
	// is not a URL.
	if _, err := netip.ParseAddr(host); host == "" || port == "" || strings.ContainsAny(host, "[]") || strings.ContainsAny(host, ":%") && err != nil {
		return origin{}, false
	}
	return origin{scheme, strings.ToLower(host), port}, true
}

// track registers a running terminal; it fails once the server is closing.
func (s *Server) track(t *terminal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("console: closing")
	}
	s.sessions[t] = struct{}{}
	s.wg.Add(1)
	return nil
}

func (s *Server) untrack(t *terminal) {
	s.mu.Lock()
	delete(s.sessions, t)
	s.mu.Unlock()
	s.wg.Done()
}
