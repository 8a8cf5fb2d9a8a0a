package console

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

func testServer(t *testing.T) *Server {
	t.Helper()
	return newTestServer(t, Config{})
}

// standInVendor stands in for xterm.js and its files, which a fresh clone has
// only after `make console-assets`: the tests that do not run a browser need
// the files to be there, not to be xterm.js (TestBrowser runs the real ones).
func standInVendor() fstest.MapFS {
	return fstest.MapFS{
		"xterm.js": {Data: []byte("//")}, "xterm.css": {Data: []byte("")}, "addon-fit.js": {Data: []byte("//")}}
}

// newTestServer is a server of cfg with the access token "the-access-token" and
// stand-ins for xterm.js.
func newTestServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.AccessToken = "the-access-token"
	cfg.Vendor = standInVendor()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// consoleAddr is where request makes requests arrive.
var consoleAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8088}

// request is a request to a console listening on consoleAddr, by that address.
func request(method, target string, body io.Reader) *http.Request {
	req := httptest.NewRequest(method, "http://127.0.0.1:8088"+target, body)
	return req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, net.Addr(consoleAddr)))
}

// TestAccessToken: API calls need "Authorization: Bearer TOKEN"; the page and its
// files hold no secret and need none; no answer sets a cookie and a cookie
// authenticates nothing (a browser sends it to every port of the host).
func TestAccessToken(t *testing.T) {
	s := testServer(t)
	sum := sha256.Sum256([]byte("the-access-token"))
	oldCookie := &http.Cookie{Name: "porthole-console-" + hex.EncodeToString(sum[:4]), Value: "the-access-token"}
	for _, tc := range []struct {
		name, target, auth string
		cookie             *http.Cookie
		want               int
	}{
		{"the page", "/", "", nil, http.StatusOK},
		{"the page's script", "/static/console.js", "", nil, http.StatusOK},
		{"xterm.js", "/vendor/xterm.js", "", nil, http.StatusOK},
		{"no token for the API", "/api/state", "", nil, http.StatusUnauthorized},
		{"wrong token", "/api/state", "Bearer guess", nil, http.StatusUnauthorized},
		{"longer token", "/api/state", "Bearer the-access-token-and-more", nil, http.StatusUnauthorized},
		{"token as Basic", "/api/state", "Basic the-access-token", nil, http.StatusUnauthorized},
		{"token without scheme", "/api/state", "the-access-token", nil, http.StatusUnauthorized},
		{"token in the query", "/api/state?token=the-access-token", "", nil, http.StatusUnauthorized},
		{"the old cookie only", "/api/state", "", oldCookie, http.StatusUnauthorized},
		{"unknown API path", "/api/nonexistent", "", nil, http.StatusUnauthorized},
		{"bearer token", "/api/state", "Bearer the-access-token", nil, http.StatusOK},
		{"bearer, any case", "/api/state", "bearer the-access-token", nil, http.StatusOK},
		{"the old URL form", "/?token=the-access-token", "", nil, http.StatusBadRequest},
		{"the old URL form, wrong token", "/?token=guess", "", nil, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(http.MethodGet, tc.target, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.cookie != nil {
				req.AddCookie(tc.cookie)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("GET %s = %d %s, want %d", tc.target, rec.Code, rec.Body, tc.want)
			}
			if sc := rec.Header().Values("Set-Cookie"); len(sc) != 0 {
				t.Fatalf("GET %s set a cookie: %q", tc.target, sc)
			}
			if loc := rec.Header().Get("Location"); loc != "" {
				t.Fatalf("GET %s redirects to %q", tc.target, loc)
			}
			if rec.Code == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatalf("GET %s: 401 without WWW-Authenticate", tc.target)
			}
			if strings.Contains(tc.target, "token=") && tc.want == http.StatusBadRequest && !strings.Contains(rec.Body.String(), "#token=") {
				t.Fatalf("GET %s: %q does not say the URL form changed", tc.target, rec.Body)
			}
		})
	}
}

// TestHostCheck: only the address the request came in on, or a loopback name, with
// its port, is served; any other name is a DNS-rebinding page, refused before the
// token or the origin are looked at.
func TestHostCheck(t *testing.T) {
	s := testServer(t)
	lan := &net.TCPAddr{IP: net.IPv4(192, 168, 7, 2), Port: 8088}
	v6 := &net.TCPAddr{IP: net.IPv6loopback, Port: 8088}
	for _, tc := range []struct {
		name, host string
		local      net.Addr
		want       int
	}{
		{"the listen address", "127.0.0.1:8088", consoleAddr, http.StatusOK},
		{"localhost", "localhost:8088", consoleAddr, http.StatusOK},
		{"LOCALHOST", "LOCALHOST:8088", consoleAddr, http.StatusOK},
		{"[::1]", "[::1]:8088", consoleAddr, http.StatusOK},
		{"[::1] listener", "[::1]:8088", v6, http.StatusOK},
		{"a LAN listener by its address", "192.168.7.2:8088", lan, http.StatusOK},
		{"a LAN listener by loopback", "127.0.0.1:8088", lan, http.StatusOK},
		{"a rebound name", "rebind.attacker.example:8088", consoleAddr, http.StatusMisdirectedRequest},
		{"a rebound name without port", "rebind.attacker.example", consoleAddr, http.StatusMisdirectedRequest},
		{"a name that resolves to loopback", "localhost.attacker.example:8088", consoleAddr, http.StatusMisdirectedRequest},
		{"another port", "127.0.0.1:8089", consoleAddr, http.StatusMisdirectedRequest},
		{"no port", "127.0.0.1", consoleAddr, http.StatusMisdirectedRequest},
		{"another address", "192.168.7.2:8088", consoleAddr, http.StatusMisdirectedRequest},
		{"another loopback address", "127.0.0.2:8088", consoleAddr, http.StatusMisdirectedRequest},
		{"empty", "", consoleAddr, http.StatusMisdirectedRequest},
		{"no local address", "127.0.0.1:8088", nil, http.StatusMisdirectedRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/api/state", nil)
			req.Host = tc.host
			if tc.local != nil {
				req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, tc.local))
			}
			req.Header.Set("Authorization", "Bearer the-access-token")
			req.Header.Set("Origin", "http://"+tc.host)
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("GET /api/state with Host %q on %v = %d %s, want %d", tc.host, tc.local, rec.Code, rec.Body, tc.want)
			}
		})
	}
}

// TestHostCheckOverTheWire is a DNS-rebinding page that knows the token: its
// requests name its own host, with a matching Origin.
func TestHostCheckOverTheWire(t *testing.T) {
	l := newTestLab(t, Config{})
	port := strings.TrimPrefix(l.base, "http://127.0.0.1")
	host := "rebind.attacker.example" + port
	for _, target := range []string{"/", "/api/state", "/static/console.js"} {
		req, _ := http.NewRequest(http.MethodGet, l.base+target, nil)
		req.Host = host
		req.Header.Set("Origin", "http://"+host)
		req.Header.Set("Authorization", "Bearer "+l.console.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("GET %s with Host %s = %s, want 421", target, host, resp.Status)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(l.base, "http")+"/api/terminal", &websocket.DialOptions{
		Host: host, HTTPHeader: http.Header{"Origin": {"http://" + host}}})
	if err == nil {
		c.CloseNow()
		t.Fatal("a WebSocket for another host was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("WebSocket with Host %s: %v, %v; want 421", host, err, resp)
	}
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	s := testServer(t)
	for _, target := range []string{"/", "/?token=the-access-token", "/api/state", "/static/console.js", "/nonexistent"} {
		for _, authed := range []bool{false, true} {
			for _, host := range []string{"127.0.0.1:8088", "rebind.attacker.example:8088"} {
				req := request(http.MethodGet, target, nil)
				req.Host = host
				if authed {
					req.Header.Set("Authorization", "Bearer the-access-token")
				}
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, req)
				csp := rec.Header().Get("Content-Security-Policy")
				for _, want := range []string{"script-src 'self';", "default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"} {
					if !strings.Contains(csp, want) {
						t.Errorf("GET %s (token %v, Host %s): CSP %q lacks %q", target, authed, host, csp, want)
					}
				}
				if script := strings.Split(strings.SplitN(csp, "script-src", 2)[1], ";")[0]; strings.TrimSpace(script) != "'self'" {
					t.Errorf("GET %s: CSP %q allows unsafe scripts", target, csp)
				}
				for _, h := range []string{"X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options"} {
					if rec.Header().Get(h) == "" {
						t.Errorf("GET %s: no %s header", target, h)
					}
				}
			}
		}
	}
}

// TestNoInlineScripts: the page loads scripts by src only and has no event
// handler attributes, which the CSP would block anyway.
func TestNoInlineScripts(t *testing.T) {
	s := testServer(t)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, request(http.MethodGet, "/", nil))
	page := rec.Body.String()
	if n, m := strings.Count(page, "<script"), strings.Count(page, "<script src="); n != m || n == 0 {
		t.Fatalf("%d <script> elements, %d with src: want all with src", n, m)
	}
	for _, bad := range []string{" onclick=", " onload=", " onsubmit=", "javascript:", "<style"} {
		if strings.Contains(page, bad) {
			t.Fatalf("the page holds %q", bad)
		}
	}
}

// TestOriginCheck: WebSockets and state-changing calls must come from the
// console's own origin, as browsers write it: scheme, host and port. Over TLS
// that is https. Behind a reverse proxy it is Config.PublicURL's, whether the
// proxy keeps the Host header or sends the console's address.
func TestOriginCheck(t *testing.T) {
	const public = "https://console.example.com"
	for _, tc := range []struct {
		name, method, target, origin string
		tls                          bool   // the request came over TLS
		host                         string // Host header; "" means 127.0.0.1:8088
		public                       string // Config.PublicURL
		want                         int
	}{
		{name: "POST without Origin", method: http.MethodPost, target: "/api/tunnels", want: http.StatusForbidden},
		{name: "POST from another site", method: http.MethodPost, target: "/api/tunnels", origin: "http://evil.example", want: http.StatusForbidden},
		{name: "POST from another port", method: http.MethodPost, target: "/api/tunnels", origin: "http://127.0.0.1:1", want: http.StatusForbidden},
		{name: "POST from localhost", method: http.MethodPost, target: "/api/tunnels", origin: "http://localhost:8088", want: http.StatusForbidden},
		{name: "POST from a null origin", method: http.MethodPost, target: "/api/tunnels", origin: "null", want: http.StatusForbidden},
		{name: "POST from the console with a path", method: http.MethodPost, target: "/api/tunnels", origin: "http://127.0.0.1:8088/x", want: http.StatusForbidden},
		{name: "DELETE from another site", method: http.MethodDelete, target: "/api/tunnels/x", origin: "http://evil.example", want: http.StatusForbidden},
		{name: "WebSocket without Origin", method: http.MethodGet, target: "/api/terminal", want: http.StatusForbidden},
		{name: "WebSocket from another site", method: http.MethodGet, target: "/api/terminal", origin: "http://evil.example", want: http.StatusForbidden},
		{name: "POST from the console", method: http.MethodPost, target: "/api/tunnels", origin: "http://127.0.0.1:8088", want: http.StatusBadRequest}, // reaches the handler
		{name: "GET without Origin", method: http.MethodGet, target: "/api/state", want: http.StatusOK},

		// Served over TLS: the page's origin is https.
		{name: "TLS: POST from the console", method: http.MethodPost, target: "/api/tunnels", origin: "https://127.0.0.1:8088", tls: true, want: http.StatusBadRequest},
		{name: "TLS: WebSocket from the console", method: http.MethodGet, target: "/api/terminal", origin: "https://127.0.0.1:8088", tls: true, want: http.StatusUpgradeRequired}, // reaches Accept
		{name: "TLS: POST from the http origin", method: http.MethodPost, target: "/api/tunnels", origin: "http://127.0.0.1:8088", tls: true, want: http.StatusForbidden},
		{name: "TLS: POST from another site", method: http.MethodPost, target: "/api/tunnels", origin: "https://evil.example", tls: true, want: http.StatusForbidden},
		{name: "no TLS: POST from the https origin", method: http.MethodPost, target: "/api/tunnels", origin: "https://127.0.0.1:8088", want: http.StatusForbidden},

		// Behind a reverse proxy with https.
		{name: "proxy sends the console's address: POST", method: http.MethodPost, target: "/api/tunnels", origin: public, public: public, want: http.StatusBadRequest},
		{name: "proxy sends the console's address: WebSocket", method: http.MethodGet, target: "/api/terminal", origin: public, public: public, want: http.StatusUpgradeRequired},
		{name: "proxy keeps the Host: POST", method: http.MethodPost, target: "/api/tunnels", origin: public, host: "console.example.com", public: public, want: http.StatusBadRequest},
		{name: "proxy keeps the Host: WebSocket", method: http.MethodGet, target: "/api/terminal", origin: public, host: "console.example.com", public: public, want: http.StatusUpgradeRequired},
		{name: "proxy keeps the Host, with its port", method: http.MethodPost, target: "/api/tunnels", origin: public, host: "Console.Example.com:443", public: public + "/", want: http.StatusBadRequest},
		{name: "proxy on another port", method: http.MethodPost, target: "/api/tunnels", origin: public + ":8443", host: "console.example.com:8443", public: public + ":8443", want: http.StatusBadRequest},
		{name: "proxy keeps the Host: GET", method: http.MethodGet, target: "/api/state", host: "console.example.com", public: public, want: http.StatusOK},
		{name: "proxy: POST from the http origin", method: http.MethodPost, target: "/api/tunnels", origin: "http://console.example.com", public: public, want: http.StatusForbidden},
		{name: "proxy keeps the Host: POST from the http origin", method: http.MethodPost, target: "/api/tunnels", origin: "http://console.example.com", host: "console.example.com", public: public, want: http.StatusForbidden},
		{name: "proxy: POST from another port", method: http.MethodPost, target: "/api/tunnels", origin: public + ":444", public: public, want: http.StatusForbidden},
		{name: "proxy: POST from another site", method: http.MethodPost, target: "/api/tunnels", origin: "https://evil.example", public: public, want: http.StatusForbidden},
		{name: "proxy: POST from a longer name", method: http.MethodPost, target: "/api/tunnels", origin: public + ".evil.example", public: public, want: http.StatusForbidden},
		{name: "proxy: WebSocket from another site", method: http.MethodGet, target: "/api/terminal", origin: "https://evil.example", host: "console.example.com", public: public, want: http.StatusForbidden},
		{name: "proxy: another Host", method: http.MethodGet, target: "/api/state", host: "other.example.com", public: public, want: http.StatusMisdirectedRequest},
		{name: "proxy: its name on another port", method: http.MethodGet, target: "/api/state", host: "console.example.com:8443", public: public, want: http.StatusMisdirectedRequest},
		{name: "proxy on another port: its name on the default one", method: http.MethodGet, target: "/api/state", host: "console.example.com", public: public + ":8443", want: http.StatusMisdirectedRequest},
		{name: "no public URL: the proxy's Host", method: http.MethodGet, target: "/api/state", host: "console.example.com", want: http.StatusMisdirectedRequest},
		{name: "no public URL: the proxy's origin", method: http.MethodPost, target: "/api/tunnels", origin: public, want: http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Config{PublicURL: tc.public})
			req := request(tc.method, tc.target, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer the-access-token")
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("%s %s from %q to %q = %d %s, want %d", tc.method, tc.target, tc.origin, req.Host, rec.Code, rec.Body, tc.want)
			}
		})
	}
}

// TestPublicURL: New refuses a public URL that is not an origin; the printed URL
// is the public one, with the access token.
func TestPublicURL(t *testing.T) {
	for _, bad := range []string{"console.example.com", "ftp://console.example.com", "https://", "https://console.example.com/console",
		"https://console.example.com/?x=1", "https://user@console.example.com",
		"https://console.example.com:0", "https://console.example.com:65536", "https://console.example.com?x=1", "https://console.example.com?"} {
		if s, err := New(Config{PublicURL: bad}); err == nil {
			s.Close()
			t.Errorf("New with PublicURL %q succeeded", bad)
		}
	}
	s := newTestServer(t, Config{PublicURL: "https://console.example.com/"})
	if got, want := s.URL(consoleAddr), "https://console.example.com/#token=the-access-token"; got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
}

// TestURLOfEveryInterface: a console listening on every interface prints a
// loopback address, which its Host check takes, not the unspecified one.
func TestURLOfEveryInterface(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, ip := range []net.IP{net.IPv4zero, net.IPv6unspecified} {
		if got, want := s.URL(&net.TCPAddr{IP: ip, Port: 8088}), "http://127.0.0.1:8088/#token=the-access-token"; got != want {
			t.Errorf("URL of %v = %q, want %q", ip, got, want)
		}
	}
}

// With Config.TLS the console serves https (HTTP/1.1, for the terminal's
// WebSocket), prints an https URL, and takes its page's https origin; a plain
// HTTP request to it is refused.
func TestServeTLS(t *testing.T) {
	if _, err := New(Config{TLS: &tls.Config{}}); err == nil {
		t.Error("New with a TLS config without a certificate succeeded")
	}
	cert := httptest.NewUnstartedServer(nil) // for its certificate for 127.0.0.1
	cert.StartTLS()
	cert.Close()
	pool := x509.NewCertPool()
	pool.AddCert(cert.Certificate())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()

	s := newTestServer(t, Config{TLS: &tls.Config{Certificates: cert.TLS.Certificates}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	base := "https://" + ln.Addr().String()
	if got := s.URL(ln.Addr()); got != base+"/#token=the-access-token" {
		t.Errorf("URL = %q, want %s/#token=…", got, base)
	}
	resp, err := client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/1.1" {
		t.Errorf("GET / over TLS: %s %s, want HTTP/1.1 200", resp.Proto, resp.Status)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/api/tunnels", strings.NewReader("{"))
	req.Header.Set("Authorization", "Bearer the-access-token")
	req.Header.Set("Origin", base)
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest { // past the origin check, to the body
		t.Errorf("POST from the https page: %s, want 400 for its body", resp.Status)
	}
	resp, err = http.Get("http://" + ln.Addr().String() + "/")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS console: %s, want 400", resp.Status)
		}
	}
	// A client that offers only h2 gets no HTTP/2: net/http adds h2 to a TLS
	// server's protocols unless told not to, and its HTTP/2 server (with
	// Go 1.26.8's GO-2026-6617, a crash) was open to anyone, before the token.
	h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Protocols: new(http.Protocols)}
	h2.Protocols.SetHTTP2(true)
	defer h2.CloseIdleConnections()
	if resp, err = (&http.Client{Transport: h2}).Get(base + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("GET / from an HTTP/2-only client: %s %s, want no HTTP/2", resp.Proto, resp.Status)
	}
}

// Over TLS 1.2 the console takes ECDHE with AES-GCM or ChaCha20-Poly1305
// only: with Go's defaults it also took AES-CBC with HMAC-SHA1 (testssl.sh:
// LUCKY13). Config.TLS as porthole-console makes it, without a minimum version.
func TestTLS12AEADOnly(t *testing.T) {
	ln, pool := serveTLS(t, Config{})
	testenv.TLS12AEADOnly(t, ln.Addr().String(), pool)
}

// Answers the console serves over TLS, by a name, carry Strict-Transport-Security
// (a year, without includeSubDomains); over plain HTTP, by an address (which
// browsers ignore) or by localhost (which would hold every other local port to
// https) they do not.
func TestHSTS(t *testing.T) {
	ln, pool := serveTLS(t, Config{PublicURL: "https://example.com"})
	byName := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		}}}
	defer byName.CloseIdleConnections()
	byAddr := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer byAddr.CloseIdleConnections()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	get := func(c *http.Client, url, host string) http.Header {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s (Host %s): %s, want 200", url, host, resp.Status)
		}
		return resp.Header
	}
	for _, path := range []string{"/", "/api/state"} { // the page, and a refused API call
		req, _ := http.NewRequest(http.MethodGet, "https://example.com"+path, nil)
		resp, err := byName.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
			t.Errorf("GET https://example.com%s (%s): Strict-Transport-Security %q, want max-age=31536000", path, resp.Status, got)
		}
	}
	for _, host := range []string{ln.Addr().String(), "localhost:" + port, "[::1]:" + port} {
		if got := get(byAddr, "https://"+ln.Addr().String()+"/", host).Get("Strict-Transport-Security"); got != "" {
			t.Errorf("GET / over TLS by %s: Strict-Transport-Security %q, want none", host, got)
		}
	}

	// Plain HTTP behind a TLS reverse proxy, opened by the same name: the
	// proxy's to send.
	plain := newTestServer(t, Config{PublicURL: "https://example.com"})
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go plain.Serve(pl)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	for _, host := range []string{"example.com", pl.Addr().String()} {
		if got := get(client, "http://"+pl.Addr().String()+"/", host).Get("Strict-Transport-Security"); got != "" {
			t.Errorf("GET / over plain HTTP by %s: Strict-Transport-Security %q, want none", host, got)
		}
	}
}

// TestHSTSNotForLocalhostNames: a console served over TLS by a name under
// .localhost (its public URL) sends no Strict-Transport-Security, which would
// hold every port of that name to https for a year; by another name it does.
func TestHSTSNotForLocalhostNames(t *testing.T) {
	for _, tc := range []struct {
		public, host string
		want         string
	}{
		{"https://console.localhost:8443", "console.localhost:8443", ""},
		{"https://Console.Localhost.:8443", "Console.Localhost.:8443", ""},
		{"https://localhost:8443", "localhost:8443", ""},
		{"https://console.example.com:8443", "console.example.com:8443", hsts},
	} {
		s := newTestServer(t, Config{PublicURL: tc.public})
		req := httptest.NewRequest(http.MethodGet, "https://"+tc.host+"/", nil)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET / over TLS by %s (PublicURL %s) = %d %s, want 200", tc.host, tc.public, rec.Code, rec.Body)
		}
		if got := rec.Header().Get("Strict-Transport-Security"); got != tc.want {
			t.Errorf("GET / over TLS by %s: Strict-Transport-Security %q, want %q", tc.host, got, tc.want)
		}
	}
}

// serveTLS serves a console with cfg and Config.TLS as porthole-console makes
// it (a certificate, for 127.0.0.1, ::1 and example.com, and nothing else) on
// 127.0.0.1, and returns its listener and the pool that trusts the certificate.
func serveTLS(t *testing.T, cfg Config) (net.Listener, *x509.CertPool) {
	t.Helper()
	cert := httptest.NewUnstartedServer(nil) // for its certificate
	cert.StartTLS()
	cert.Close()
	pool := x509.NewCertPool()
	pool.AddCert(cert.Certificate())
	cfg.TLS = &tls.Config{Certificates: cert.TLS.Certificates}
	s := newTestServer(t, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	return ln, pool
}

// TestReverseProxyOverTheWire: the console behind a TLS reverse proxy
// (httputil.ReverseProxy, which sends the proxy's own Host header), opened as
// Config.PublicURL: the page's calls and its terminal WebSocket, with an https
// Origin, get through; another site's do not.
func TestReverseProxyOverTheWire(t *testing.T) {
	proxy := httptest.NewUnstartedServer(nil)
	public := "https://" + proxy.Listener.Addr().String()
	l := newTestLab(t, Config{PublicURL: public})
	target, _ := url.Parse(l.base)
	proxy.Config.Handler = httputil.NewSingleHostReverseProxy(target)
	proxy.StartTLS()
	defer proxy.Close()
	c := proxy.Client()

	req, _ := http.NewRequest(http.MethodPost, public+"/api/tunnels", strings.NewReader(`{"mode":"token"}`))
	req.Header.Set("Origin", public)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+l.console.token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "source token") {
		t.Fatalf("POST through the proxy = %s %s, want the handler's 400 about the token", resp.Status, b)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wsURL := "wss" + strings.TrimPrefix(public, "https") + "/api/terminal"
	for _, o := range []string{"https://evil.example", "http" + strings.TrimPrefix(public, "https")} {
		ws, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: c, HTTPHeader: http.Header{"Origin": {o}}})
		if err == nil {
			ws.CloseNow()
			t.Fatalf("a WebSocket from %s was accepted", o)
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("WebSocket from %s: %v, %v; want 403", o, err, resp)
		}
	}
	ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: c, HTTPHeader: http.Header{"Origin": {public}}})
	if err != nil {
		t.Fatalf("the terminal WebSocket through the proxy: %v", err)
	}
	defer ws.CloseNow()
	for _, m := range []any{authMessage{Type: "auth", Token: l.console.token}, loginRequest{Tunnel: "no-such-tunnel", Auth: "password", Password: "x"}} {
		b, _ := json.Marshal(m)
		if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	_, b, err = ws.Read(ctx)
	var m serverMessage
	if err != nil || json.Unmarshal(b, &m) != nil || m.Type != "end" || !strings.Contains(m.Text, "no such tunnel") {
		t.Fatalf("the terminal answered %s, %v; want the end: no such tunnel", b, err)
	}
}

// TestWebSocketOtherOriginOverTheWire dials the terminal like a page of another
// site would.
func TestWebSocketOtherOriginOverTheWire(t *testing.T) {
	l := newTestLab(t, Config{})
	h := http.Header{"Origin": {"http://evil.example"}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(l.base, "http")+"/api/terminal", &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		c.CloseNow()
		t.Fatal("a WebSocket from another origin was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dial from another origin: %v, %v; want 403", err, resp)
	}
}

// TestSecretsNeverLogged drives every path that handles a secret with debug logs
// on and looks for the secrets in them: the console's access token, a pasted source
// token, a source token from the control plane, a password and a pasted key.
func TestSecretsNeverLogged(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-log")
	c := l.client()
	// A request with the token in the URL, a wrong one too.
	resp, err := http.Get(l.base + "/?token=" + "not-the-token-" + l.console.token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// A pasted token to an endpoint that hangs up on every connection (a port
	// of its own: what listens on a fixed one is not this test's to know).
	hangup, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hangup.Close()
	go func() {
		for {
			c, err := hangup.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	pasted := "AQGAAXhpasted-source-token-0123456789"
	var v tunnelView
	l.api(c, http.MethodPost, "/api/tunnels", openRequest{Mode: "token", Token: pasted, Label: "pasted", Endpoint: "ws://" + hangup.Addr().String()}, &v, http.StatusOK)
	// A tunnel through the control plane, a wrong password, a pasted key.
	tv := l.openTunnel(c, "dev-log")
	l.terminal(loginRequest{Tunnel: tv.ID, Auth: "password", Password: "a-secret-password"}).end()
	l.terminal(loginRequest{Tunnel: tv.ID, Auth: "pem", PEM: "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-material\n"}).end()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(l.console.tunnels.get(v.ID).view().Reason, "retrying") {
		if time.Now().After(deadline) {
			t.Fatalf("the pasted token's tunnel: %+v, want it retrying", l.console.tunnels.get(v.ID).view())
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.api(c, http.MethodDelete, "/api/tunnels/"+tv.ID, nil, nil, http.StatusOK)
	logs := l.logs.String()
	if !strings.Contains(logs, "component=console") || !strings.Contains(logs, "path=/api/terminal") {
		t.Fatalf("the console logged nothing at debug level: the check below would prove nothing")
	}
	secrets := map[string]string{"access token": l.console.token, "pasted token": pasted,
		"password": "a-secret-password", "key": "secret-key-material"}
	for name, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the %s reached the log", name)
		}
	}
	// The control plane's source token: tunneld's state knows it; the console
	// logs only its fingerprint.
	for _, t2 := range l.console.tunnels.list {
		if tok := t2.spec.Token.Reveal(); strings.Contains(logs, tok) {
			t.Errorf("the source token of %s reached the log", t2.spec.Thing)
		}
		if !strings.Contains(logs, t2.spec.Token.Fingerprint()) {
			t.Errorf("the log lacks the fingerprint of %s's token", t2.spec.Thing)
		}
	}
}

// TestWebSocketAuth: a terminal WebSocket must send the access token first; one
// that sends nothing, a login first, a wrong token or only the old cookie is closed
// with StatusPolicyViolation before anything else happens (no login, no host key);
// one whose first message is over 4 KiB, with StatusMessageTooBig, however right
// its token.
func TestWebSocketAuth(t *testing.T) {
	l := newTestLab(t, Config{authTimeout: 300 * time.Millisecond}, "dev-ws")
	tv := l.openTunnel(l.client(), "dev-ws")
	login, _ := json.Marshal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	wrong, _ := json.Marshal(authMessage{Type: "auth", Token: "guess"})
	sum := sha256.Sum256([]byte(l.console.token))
	padded := []byte(`{"type":"auth","token":"` + l.console.token + `"` + strings.Repeat(" ", 4<<10) + `}`)
	for _, tc := range []struct {
		name   string
		cookie bool
		send   [][]byte
		want   websocket.StatusCode // 0 means StatusPolicyViolation
	}{
		{"nothing", false, nil, 0},
		{"a login first", false, [][]byte{login}, 0},
		{"a wrong token", false, [][]byte{wrong, login}, 0},
		{"the token as binary", false, [][]byte{nil}, 0},
		{"only the old cookie", true, [][]byte{login}, 0},
		{"the token in over 4 KiB", false, [][]byte{padded, login}, websocket.StatusMessageTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h := http.Header{"Origin": {l.base}}
			if tc.cookie {
				h.Set("Cookie", (&http.Cookie{Name: "porthole-console-" + hex.EncodeToString(sum[:4]), Value: l.console.token}).String())
			}
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(l.base, "http")+"/api/terminal", &websocket.DialOptions{HTTPHeader: h})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			start := time.Now()
			for _, b := range tc.send {
				typ := websocket.MessageText
				if b == nil {
					typ, b = websocket.MessageBinary, []byte(`{"type":"auth","token":"`+l.console.token+`"}`)
				}
				c.Write(ctx, typ, b) // may fail once the server has closed
			}
			typ, b, err := c.Read(ctx)
			if err == nil {
				t.Fatalf("the unauthenticated WebSocket got a message: %v %q", typ, b)
			}
			want := cmp.Or(tc.want, websocket.StatusPolicyViolation)
			if st := websocket.CloseStatus(err); st != want {
				t.Fatalf("Read = %v (status %v), want closed with %v", err, st, want)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("closed after %v, want within the auth timeout", d)
			}
		})
	}
	if fp, _ := l.console.cfg.HostKeys.Fingerprint("dev-ws"); fp != "" {
		t.Fatalf("an unauthenticated WebSocket logged in to the device (host key %s recorded)", fp)
	}
	// The right token first: the login goes ahead.
	l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"}).ready()
}

// TestPublicURLAsBrowsersWriteIt: a PublicURL that New accepts must match
// the origin and Host a browser sends for it (browsers write an IDN host in
// punycode, an IPv6 address compressed, a port without leading zeros), and the
// printed URL must carry the token; otherwise New must refuse it.
func TestPublicURLAsBrowsersWriteIt(t *testing.T) {
	for _, tc := range []struct{ public, browserOrigin string }{
		{"https://bücher.example", "https://xn--bcher-kva.example"},
		{"https://[0:0:0:0:0:0:0:1]:8443", "https://[::1]:8443"},
		{"https://console.example.com:08443", "https://console.example.com:8443"},
		{"https://console.example.com#", "https://console.example.com"},
	} {
		cfg := Config{PublicURL: tc.public, AccessToken: "the-access-token", Vendor: standInVendor()}
		s, err := New(cfg)
		if err != nil {
			continue // refused: fine
		}
		defer s.Close()
		if u := s.URL(consoleAddr); !strings.HasSuffix(u, "/#token=the-access-token") || strings.Count(u, "#") != 1 {
			t.Errorf("PublicURL %q: printed URL %q", tc.public, u)
		}
		req := request(http.MethodPost, "/api/tunnels", strings.NewReader("{}"))
		req.Host = strings.TrimPrefix(tc.browserOrigin, "https://")
		req.Header.Set("Origin", tc.browserOrigin)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer the-access-token")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest { // reaches the handler
			t.Errorf("PublicURL %q accepted, but a POST from its page (Origin and Host %s) = %d %s", tc.public, tc.browserOrigin, rec.Code, strings.TrimSpace(rec.Body.String()))
		}
	}
}

// FuzzParseOrigin parses an Origin header as the console's same-origin
// check does: an origin it takes names a scheme of its own, a host and a
// port, and written out as browsers write it, it parses to itself.
func FuzzParseOrigin(f *testing.F) {
	for _, s := range []string{"http://localhost:8080", "https://Console.Example", "http://[::1]:80", "http://127.0.0.1",
		"null", "http://u@h", "http://h/", "http://[fe80::1%25eth0]:1", "https://h:0443", "http://h:", "http://[h]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, ok := parseOrigin(s)
		if !ok {
			return
		}
		if o.scheme != "http" && o.scheme != "https" || o.host == "" || o.port == "" || o.host != strings.ToLower(o.host) {
			t.Fatalf("parseOrigin(%q) = %+v", s, o)
		}
		c, ok := canonicalOrigin(o)
		if !ok {
			return
		}
		again, ok := parseOrigin(c.String())
		if !ok || again != c {
			t.Fatalf("parseOrigin(%q) = %+v, canonical %+v written %q, which parses to %+v, %v", s, o, c, c.String(), again, ok)
		}
	})
}
