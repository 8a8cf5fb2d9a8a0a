package tunnel

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// tlsService is a minimal TLS data plane: it checks the upgrade, answers with the
// offered subprotocol and a channel-id, sends SERVICE_IDS, then echoes frames.
func tlsService(t *testing.T, check func(r *http.Request) int) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code := check(r); code != 0 {
			http.Error(w, "refused by test", code)
			return
		}
		w.Header().Set("channel-id", "test-channel")
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{V3.Subprotocol(), V2.Subprotocol(), V1.Subprotocol()}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		frame, _ := AppendFrame(nil, &Message{Type: TypeServiceIDs, AvailableServiceIDs: []string{"SSH"}})
		ws.Write(r.Context(), websocket.MessageBinary, frame)
		for {
			typ, b, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			ws.Write(r.Context(), typ, b)
		}
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func writeCA(t *testing.T, srv *httptest.Server) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDialTLS(t *testing.T) {
	var got http.Header
	var mu sync.Mutex
	srv := tlsService(t, func(r *http.Request) int {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		if r.URL.Path != "/tunnel" || r.URL.Query().Get("local-proxy-mode") != "destination" {
			return 400
		}
		return 0
	})
	ca := writeCA(t, srv)
	tok, _ := NewAccessToken("the-access-token")
	ct := GenerateClientToken()
	cfg := &Config{Endpoint: strings.TrimPrefix(srv.URL, "https://"), AccessToken: tok, ClientToken: ct, CAFile: ca, UserAgent: "porthole-test"}

	c, err := Dial(context.Background(), cfg, ModeDestination)
	if err != nil {
		t.Fatalf("Dial with CA file: %v", err)
	}
	defer c.Close()
	if c.Version() != V3 || c.ChannelID() != "test-channel" {
		t.Fatalf("version %v channel %q", c.Version(), c.ChannelID())
	}
	mu.Lock()
	if got.Get("access-token") != "the-access-token" || got.Get("client-token") != ct.Reveal() ||
		got.Get("Sec-WebSocket-Protocol") != "aws.iot.securetunneling-3.0" || got.Get("User-Agent") != "porthole-test" {
		t.Fatalf("handshake headers: %v", got)
	}
	mu.Unlock()
	var m Message
	if err := c.ReadMessage(&m); err != nil || m.Type != TypeServiceIDs {
		t.Fatalf("first message %v, %v; want SERVICE_IDS", &m, err)
	}
	want := Message{Type: TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: []byte("ping")}
	if err := c.WriteMessage(context.Background(), &want); err != nil {
		t.Fatal(err)
	}
	if err := c.ReadMessage(&m); err != nil || string(m.Payload) != "ping" {
		t.Fatalf("echo %v, %v", &m, err)
	}

	// The CA directory form works too.
	cfgDir := *cfg
	cfgDir.CAFile = filepath.Dir(ca)
	if c2, err := Dial(context.Background(), &cfgDir, ModeDestination); err != nil {
		t.Fatalf("Dial with CA directory: %v", err)
	} else {
		c2.Close()
	}

	// Without the CA the certificate is refused, unless verification is turned off.
	noCA := *cfg
	noCA.CAFile = ""
	if _, err := Dial(context.Background(), &noCA, ModeDestination); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Dial without the CA = %v, want a certificate error", err)
	}
	noCA.InsecureSkipVerify = true
	if c3, err := Dial(context.Background(), &noCA, ModeDestination); err != nil {
		t.Fatalf("Dial with InsecureSkipVerify: %v", err)
	} else {
		c3.Close()
	}
	bad := *cfg
	bad.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := Dial(context.Background(), &bad, ModeDestination); err == nil {
		t.Fatal("Dial with a missing CA file succeeded")
	}
}

func TestDialRefusedGivesBodyAndStatus(t *testing.T) {
	srv := tlsService(t, func(r *http.Request) int { return 400 })
	tok, _ := NewAccessToken("t")
	_, err := Dial(context.Background(), &Config{Endpoint: srv.URL, AccessToken: tok, InsecureSkipVerify: true}, ModeSource)
	var he *HandshakeError
	if !errors.As(err, &he) || he.StatusCode != 400 || he.Body != "refused by test" || he.Temporary() {
		t.Fatalf("Dial = %v, want HandshakeError 400", err)
	}
	if !terminal(err) {
		t.Fatal("400 is not terminal")
	}
	if terminal(&HandshakeError{StatusCode: 503}) {
		t.Fatal("503 is terminal")
	}
}

// connectProxy is an HTTP CONNECT proxy that requires Basic auth user:pass.
func connectProxy(t *testing.T, used *atomic.Int32) *url.URL {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveConnect(t, ln, "Basic "+base64.StdEncoding.EncodeToString([]byte("user:p@ss")), used)
	return &url.URL{Scheme: "http", Host: ln.Addr().String(), User: url.UserPassword("user", "p@ss")}
}

// serveConnect serves HTTP CONNECT on ln until the test ends, counting in used
// the connections it carries; with auth set, only a request whose
// Proxy-Authorization is auth.
func serveConnect(t *testing.T, ln net.Listener, auth string, used *atomic.Int32) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.Method != http.MethodConnect || auth != "" && req.Header.Get("Proxy-Authorization") != auth {
					io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
					return
				}
				up, err := net.Dial("tcp", req.Host)
				if err != nil {
					io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
					return
				}
				defer up.Close()
				used.Add(1)
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				go func() { io.Copy(up, br); up.Close() }()
				io.Copy(c, up)
			}()
		}
	}()
}

// ipv6TLSListener listens on [::1] with srv's certificate, or skips the test
// where there is no IPv6 loopback (fails under CI=true).
func ipv6TLSListener(t *testing.T, srv *httptest.Server) net.Listener {
	ln, err := tls.Listen("tcp", "[::1]:0", &tls.Config{Certificates: srv.TLS.Certificates})
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no IPv6 loopback:", err)
		}
		t.Skip("no IPv6 loopback:", err)
	}
	return ln
}

func TestDialThroughProxy(t *testing.T) {
	srv := tlsService(t, func(r *http.Request) int { return 0 })
	var used atomic.Int32
	proxyURL := connectProxy(t, &used)
	tok, _ := NewAccessToken("t")
	cfg := &Config{Endpoint: srv.URL, AccessToken: tok, CAFile: writeCA(t, srv), Proxy: ProxyURL(proxyURL)}
	c, err := Dial(context.Background(), cfg, ModeSource)
	if err != nil {
		t.Fatalf("Dial through proxy: %v", err)
	}
	c.Close()
	if used.Load() != 1 {
		t.Fatalf("proxy carried %d connections, want 1", used.Load())
	}
	wrong := *proxyURL
	wrong.User = url.UserPassword("user", "wrong")
	cfg.Proxy = ProxyURL(&wrong)
	_, err = Dial(context.Background(), cfg, ModeSource)
	var pe *ProxyError
	if !errors.As(err, &pe) || pe.Status != 407 || !strings.Contains(err.Error(), "refused the user name and password") || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("Dial with bad proxy credentials = %v, want a ProxyError with status 407 that says so, without the password", err)
	}
}

// InsecureSkipVerify is the service's: an https:// proxy's certificate is
// verified all the same (against the CA file and the system roots), or the
// proxy's credentials would go to whoever answers at its address.
func TestDialInsecureSkipVerifyStillVerifiesHTTPSProxy(t *testing.T) {
	srv := tlsService(t, func(r *http.Request) int { return 0 })
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:p@ss"))
	tok, _ := NewAccessToken("t")
	for _, tc := range []struct {
		name   string
		caFile string
		ok     bool
	}{
		{"trusted by the CA file", writeCA(t, srv), true},
		{"untrusted", "", false}, // httptest's certificate, from no CA the system trusts
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var used atomic.Int32
			serveConnect(t, tls.NewListener(ln, &tls.Config{Certificates: srv.TLS.Certificates}), auth, &used)
			proxy := &url.URL{Scheme: "https", Host: ln.Addr().String(), User: url.UserPassword("user", "p@ss")}
			cfg := &Config{Endpoint: srv.URL, AccessToken: tok, CAFile: tc.caFile, InsecureSkipVerify: true,
				Proxy: ProxyURL(proxy), HandshakeTimeout: 5 * time.Second}
			c, err := Dial(context.Background(), cfg, ModeSource)
			if c != nil {
				c.Close()
			}
			var pe *ProxyError
			switch {
			case tc.ok && (err != nil || used.Load() != 1):
				t.Fatalf("Dial through an https proxy the CA file trusts = %v (%d connections carried), want it through", err, used.Load())
			case !tc.ok && (!errors.As(err, &pe) || !IsCertificateError(err) || used.Load() != 0):
				t.Fatalf("Dial through an https proxy with an untrusted certificate under InsecureSkipVerify = %v (%d connections carried), want a ProxyError for its certificate", err, used.Load())
			}
		})
	}
}

// A proxy whose answer echoes the request's Proxy-Authorization, or the user
// name and password in it, gets them quoted in no error (logged, published in
// events): neither whole nor cut where the quote is truncated.
func TestProxyAnswerQuotesNoCredentials(t *testing.T) {
	srv := tlsService(t, func(r *http.Request) int { return 0 })
	const user, pass = "proxyuser", "Zq9wX:S3cret-long-enough-to-be-cut-at-64-bytes"
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	tok, _ := NewAccessToken("t")
	for _, tc := range []struct {
		name, answer, want string
	}{
		{"status line", "ERR Basic " + basic + "\r\n\r\n", "malformed status line"},
		{"decoded status line", "ERR " + user + ":" + pass + "\r\n\r\n", "malformed status line"},
		{"header line", "HTTP/1.1 200 OK\r\n" + basic + "\r\n\r\n", "malformed header line"},
		{"407 scheme", "HTTP/1.1 407 No\r\nProxy-Authenticate: " + basic + "\r\n\r\n", "407"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := &url.URL{Scheme: "http", Host: answerOnce(t, tc.answer), User: url.UserPassword(user, pass)}
			cfg := &Config{Endpoint: srv.URL, AccessToken: tok, CAFile: writeCA(t, srv), Proxy: ProxyURL(proxy), HandshakeTimeout: 5 * time.Second}
			_, err := Dial(context.Background(), cfg, ModeSource)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial = %v, want an error with %q", err, tc.want)
			}
			for _, s := range []string{basic[:12], pass[:9], user} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the error shows the proxy's credentials (%q): %v", s, err)
				}
			}
		})
	}
}

// A proxy's 407 says what is wrong: no credentials, or a scheme porthole does
// not speak.
func TestProxyAuthHint(t *testing.T) {
	for _, tc := range []struct {
		sent    bool
		offered []string
		want    string
	}{
		{false, nil, "wants a user name and password"},
		{false, []string{`Basic realm="corp"`}, "wants a user name and password"},
		{true, []string{`Negotiate`, `NTLM`}, "asks for Negotiate or NTLM authentication, and porthole sends Basic only"},
		{true, []string{`NTLM`, `basic realm="x"`}, "refused the user name and password"},
		{true, []string{"\x1b[2J"}, `asks for \x1b[2J authentication`},
	} {
		if got := proxyAuthHint(tc.sent, tc.offered); !strings.Contains(got, tc.want) {
			t.Errorf("proxyAuthHint(%v, %q) = %q, want %q in it", tc.sent, tc.offered, got, tc.want)
		}
	}
}

// dialSilentPeer connects, pinging every 50 ms with a 300 ms idle timeout, to a
// service that accepts and then neither reads nor writes (answering no ping);
// both end with the test.
func dialSilentPeer(t *testing.T) *Conn {
	t.Helper()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{V3.Subprotocol()}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		<-stop
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) })
	tok, _ := NewAccessToken("t")
	cfg := &Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: tok, PingInterval: 50 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
	c, err := Dial(context.Background(), cfg, ModeDestination)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.closeNow)
	return c
}

func TestIdleTimeoutClosesSilentLink(t *testing.T) {
	c := dialSilentPeer(t)
	var m Message
	start := time.Now()
	err := c.ReadMessage(&m)
	if !errors.Is(err, ErrIdle) {
		t.Fatalf("ReadMessage = %v after %v, want ErrIdle", err, time.Since(start))
	}
}

// Text from the service reaches the operator's terminal in error messages:
// control characters in a refusal's body, its channel-id or a Close reason
// come out escaped, never as escape sequences.
func TestServiceTextIsPrintable(t *testing.T) {
	const evil = "\x1b]0;PWNED\x07\x1b[31mred\r\nnext\xff"
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("channel-id", "ch\x1b[2J")
		w.WriteHeader(400)
		io.WriteString(w, evil)
	}))
	t.Cleanup(srv.Close)
	tok, _ := NewAccessToken("t")
	_, err := Dial(context.Background(), &Config{Endpoint: srv.URL, AccessToken: tok, InsecureSkipVerify: true}, ModeSource)
	var he *HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("Dial = %v, want a HandshakeError", err)
	}
	if msg := err.Error(); strings.ContainsFunc(msg, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }) ||
		!strings.Contains(msg, `\x1b]0;PWNED\a\x1b[31mred\r\nnext\xff`) || !strings.Contains(msg, `channel-id ch\x1b[2J`) {
		t.Errorf("refusal = %q, want its control characters escaped", msg)
	}

	c, _ := wsFromBytes(serverFrame(true, opClose, append([]byte{0x03, 0xe8}, evil...)))
	_, err = io.ReadAll(c)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Reason != `\x1b]0;PWNED\a\x1b[31mred\r\nnext\xff` {
		t.Errorf("Close reason %q, want its control characters escaped", ce.Reason)
	}
}

// A service that has frozen (SIGSTOP, a hung host) keeps its TCP connection but
// neither reads nor writes: once the socket buffers are full, every write to it
// blocks. The idle timeout must still close the link: nothing has arrived.
func TestIdleTimeoutClosesLinkToFrozenPeer(t *testing.T) {
	c := dialSilentPeer(t)
	// A local connection pumping data into the tunnel, as a download does:
	// its writes fill the socket buffers and then block.
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		m := &Message{Type: TypeData, StreamID: 1, ServiceID: "SSH", ConnectionID: 1, Payload: make([]byte, MaxPayload)}
		for c.WriteMessage(context.Background(), m) == nil {
		}
	}()
	got := make(chan error, 1)
	go func() {
		var m Message
		got <- c.ReadMessage(&m)
	}()
	select {
	case err := <-got:
		if !errors.Is(err, ErrIdle) {
			t.Fatalf("ReadMessage = %v, want ErrIdle", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("link to a frozen peer still open 5 s after its idle timeout of 300ms: the keepalive is stuck behind a blocked write")
	}
	<-writing
}

// TestPingDueAtEveryTick: the ticker's time and lastPing's are read apart, so
// the tick one interval on may find a few nanoseconds less gone: that ping is
// due all the same (it was put off a whole tick, and every second or third gap
// was twice ping_interval). With a tick shorter than the interval (an idle
// timeout set), a ping waits for the interval.
func TestPingDueAtEveryTick(t *testing.T) {
	last := time.Unix(1_700_000_000, 0)
	for _, c := range []struct {
		since, interval, tick time.Duration
		want                  bool
	}{
		{20*time.Second - time.Nanosecond, 20 * time.Second, 20 * time.Second, true},
		{20 * time.Second, 20 * time.Second, 20 * time.Second, true},
		{20*time.Second + time.Millisecond, 20 * time.Second, 20 * time.Second, true},
		{15*time.Second - time.Nanosecond, 20 * time.Second, 5 * time.Second, false},
		{20*time.Second - time.Nanosecond, 20 * time.Second, 5 * time.Second, true},
		{5 * time.Second, 20 * time.Second, 5 * time.Second, false},
	} {
		if got := pingDue(last.Add(c.since), last, c.interval, c.tick); got != c.want {
			t.Errorf("ping_interval %v, tick %v, %v since the last ping: due %v, want %v", c.interval, c.tick, c.since, got, c.want)
		}
	}
}

// What an error quotes of the service's malformed answer to the upgrade
// request never shows the access or client token, even if the answer echoes
// them.
func TestServiceAnswerQuotesNoTokens(t *testing.T) {
	const access, client = "AQGAAXiy-access-token-echoed-back", "client-token-echoed-back-by-the-service"
	tok, err := NewAccessToken(access)
	if err != nil {
		t.Fatal(err)
	}
	ctok, err := NewClientToken(client)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, answer, want string }{
		{"status line", "ERR " + access + "\r\n\r\n", "malformed status line"},
		{"client token in status line", "ERR " + client + "\r\n\r\n", "malformed status line"},
		{"header line", "HTTP/1.1 101 Switching Protocols\r\naccess-token " + access + "\r\n\r\n", "malformed header line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{Endpoint: "ws://" + answerOnce(t, tc.answer), AllowInsecureWebSocket: true, AccessToken: tok, ClientToken: ctok,
				Proxy: ProxyURL(nil), HandshakeTimeout: 5 * time.Second}
			_, err := Dial(context.Background(), cfg, ModeSource)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial = %v, want an error with %q", err, tc.want)
			}
			for _, s := range []string{access[:16], client[:16]} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the error shows a token (%q): %v", s, err)
				}
			}
		})
	}
}

// The handshake's default outlasts the slowest lookup Go's resolver makes of a
// name that does resolve (up to three nameservers, asked twice, 5 s each, for
// a query a DNS drops), with room left for TCP, TLS and the upgrade.
func TestHandshakeTimeoutOutlastsSlowLookup(t *testing.T) {
	const slowestLookup = 3 * 2 * 5 * time.Second
	if DefaultHandshakeTimeout < slowestLookup+10*time.Second {
		t.Errorf("DefaultHandshakeTimeout = %v, want at least %v", DefaultHandshakeTimeout, slowestLookup+10*time.Second)
	}
}

// answerOnce serves one connection on a loopback address it returns: it reads
// an HTTP request and writes answer, whatever that is, then closes.
func answerOnce(t *testing.T, answer string) string {
	t.Helper()
	return answerRequest(t, func(*http.Request) string { return answer })
}

// answerRequest is answerOnce with the answer made from the request.
func answerRequest(t *testing.T, answer func(*http.Request) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if r, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, answer(r))
			// Ended with a FIN, and what the client sends meanwhile (its TLS
			// hello after a 200) read: closed with it unread, the kernel
			// sends a reset instead, which a slow client (qemu-user) could
			// meet first.
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, c)
		}
	}()
	return ln.Addr().String()
}

// TestHandshakeTimeoutAfterTLS: an endpoint, or an https:// proxy, that
// completes TLS and then never answers is given up at the handshake timeout.
// The timeout's callback read the variable that the TLS connection had since
// replaced: a data race (go test -race) on every such attempt.
func TestHandshakeTimeoutAfterTLS(t *testing.T) {
	srv := tlsService(t, func(*http.Request) int { return 0 })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	silent := tls.NewListener(ln, &tls.Config{Certificates: srv.TLS.Certificates})
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				bufio.NewReader(c).ReadString('\n') // completes TLS, reads the request's first line
				<-done
			}()
		}
	}()
	tok, _ := NewAccessToken("t")
	for name, cfg := range map[string]*Config{
		"endpoint": {Endpoint: "wss://" + ln.Addr().String(), Proxy: ProxyURL(nil)},
		"proxy":    {Endpoint: srv.URL, Proxy: ProxyURL(&url.URL{Scheme: "https", Host: ln.Addr().String()})},
	} {
		cfg.AccessToken, cfg.CAFile, cfg.HandshakeTimeout = tok, writeCA(t, srv), 300*time.Millisecond
		start := time.Now()
		if _, err := Dial(context.Background(), cfg, ModeSource); err == nil {
			t.Errorf("%s silent after TLS: Dial succeeded", name)
		} else if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s silent after TLS: Dial returned after %v (%v), want about the 300ms timeout", name, d, err)
		}
	}
}

// A proxy that answers CONNECT with 200 and then drops the connection, as some
// do for a site they block, is named in the error: it said only "EOF", and
// with the proxy taken from the environment nothing else said one was used.
// A proxy that refuses is named once ("via proxy P: proxy P refused").
func TestProxyThatDropsAfter200IsNamed(t *testing.T) {
	srv := tlsService(t, func(*http.Request) int { return 0 })
	tok, _ := NewAccessToken("t")
	for _, answer := range []string{"HTTP/1.1 200 Connection established\r\n\r\n", "HTTP/1.1 403 Forbidden\r\n\r\n"} {
		host := answerOnce(t, answer)
		cfg := &Config{Endpoint: srv.URL, AccessToken: tok, CAFile: writeCA(t, srv),
			Proxy: ProxyURL(&url.URL{Scheme: "http", Host: host}), HandshakeTimeout: 5 * time.Second}
		_, err := Dial(context.Background(), cfg, ModeSource)
		if err == nil || !strings.Contains(err.Error(), "via proxy "+host) || strings.Count(err.Error(), host) != 1 {
			t.Fatalf("Dial through a proxy answering %q = %v, want an error that names the proxy %s once", answer, err, host)
		}
	}
}

// A proxy that sends anything after its 200 before the client has spoken
// (the client speaks first: TLS's hello, the upgrade request) is refused with
// that said: the bytes would be lost, or taken for the service's. The answer
// and its extra bytes go in one write, so they come in one read.
func TestProxyEarlyDataRefused(t *testing.T) {
	srv := tlsService(t, func(*http.Request) int { return 0 })
	tok, _ := NewAccessToken("t")
	host := answerOnce(t, "HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 101 early")
	cfg := &Config{Endpoint: srv.URL, AccessToken: tok, CAFile: writeCA(t, srv),
		Proxy: ProxyURL(&url.URL{Scheme: "http", Host: host}), HandshakeTimeout: 5 * time.Second}
	if _, err := Dial(context.Background(), cfg, ModeSource); err == nil || !strings.Contains(err.Error(), "proxy sent data before the tunnel was up") {
		t.Fatalf("Dial through a proxy that sent data after its 200 = %v, want it refused for that", err)
	}
}

// TestProxyRefusalIsAnyAnswerBut2xx: only a 2xx answer to CONNECT opens the
// tunnel (RFC 9110 §9.3.6). A redirect (a captive portal's login page) or an
// interim answer is the proxy's refusal, with its status: taken for a tunnel,
// the upgrade and its tokens went to whatever answered.
func TestProxyRefusalIsAnyAnswerBut2xx(t *testing.T) {
	srv := tlsService(t, func(*http.Request) int { return 0 })
	tok, _ := NewAccessToken("t")
	for _, status := range []int{302, 307, 100, 101} {
		host := answerOnce(t, "HTTP/1.1 "+strconv.Itoa(status)+" Whatever\r\nLocation: http://portal.example/\r\n\r\n")
		cfg := &Config{Endpoint: srv.URL, AccessToken: tok, CAFile: writeCA(t, srv),
			Proxy: ProxyURL(&url.URL{Scheme: "http", Host: host}), HandshakeTimeout: 5 * time.Second}
		_, err := Dial(context.Background(), cfg, ModeSource)
		var pe *ProxyError
		if !errors.As(err, &pe) || pe.Status != status {
			t.Errorf("Dial through a proxy answering %d = %v, want a *ProxyError with that status", status, err)
		}
	}
}

// TestConnOutlivesTheHandshakeTimeout: the handshake's deadline is taken off
// the connection once it is up. Left on, every tunnel connection ended with
// an i/o timeout HandshakeTimeout after it was made, and reconnected.
func TestConnOutlivesTheHandshakeTimeout(t *testing.T) {
	srv := tlsService(t, func(*http.Request) int { return 0 })
	tok, _ := NewAccessToken("t")
	const timeout = 5 * time.Second // room for TLS on a slow (emulated) machine
	cfg := &Config{Endpoint: srv.URL, AccessToken: tok, CAFile: writeCA(t, srv), HandshakeTimeout: timeout, PingInterval: -1}
	c, err := Dial(context.Background(), cfg, ModeSource)
	if err != nil {
		t.Fatal(err)
	}
	up := time.Now() // the handshake's deadline was set before this
	defer c.Close()
	var m Message
	if err := c.ReadMessage(&m); err != nil || m.Type != TypeServiceIDs {
		t.Fatalf("first message = %v, %v; want SERVICE_IDS", m.Type, err)
	}
	// Not an assertion on time: the exchange below must come after the
	// handshake's deadline would have passed.
	time.Sleep(time.Until(up.Add(timeout + 100*time.Millisecond)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WriteMessage(ctx, &Message{Type: TypeStreamReset, StreamID: 7, ServiceID: "SSH"}); err != nil {
		t.Fatalf("WriteMessage after the handshake timeout: %v", err)
	}
	if err := c.ReadMessage(&m); err != nil || m.Type != TypeStreamReset || m.StreamID != 7 {
		t.Fatalf("ReadMessage after the handshake timeout = %v %d, %v; want the echoed STREAM_RESET 7", m.Type, m.StreamID, err)
	}
}

// TestServiceChoosesTheVersion: the version is the subprotocol the service
// answered with, not the one offered: a service that answers -2.0 to an
// offer of -3.0 (spec §2.2) gets V2 frames, without connection ids.
func TestServiceChoosesTheVersion(t *testing.T) {
	addr := answerRequest(t, func(r *http.Request) string {
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + wsGUID))
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\nSec-WebSocket-Protocol: " + V2.Subprotocol() + "\r\n\r\n"
	})
	tok, _ := NewAccessToken("t")
	cfg := &Config{Endpoint: "ws://" + addr, AllowInsecureWebSocket: true, AccessToken: tok, PingInterval: -1, Protocol: V3}
	c, err := Dial(context.Background(), cfg, ModeSource)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Version() != V2 {
		t.Errorf("Version() = %v after the service chose %s, want V2", c.Version(), V2.Subprotocol())
	}
}
