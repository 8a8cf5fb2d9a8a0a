package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/coder/websocket"
)

func testServer(t *testing.T) *Server {
	t.Helper()
	s, err := New(Config{AccessToken: "the-access-token", Vendor: fstest.MapFS{
		"xterm.js": {Data: []byte("//")}, "xterm.css": {Data: []byte("")}, "addon-fit.js": {Data: []byte("//")}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestAccessToken(t *testing.T) {
	s := testServer(t)
	cookie := "porthole-console-" // + fingerprint
	for _, tc := range []struct {
		name, target, cookie string
		want                 int
		location             string
	}{
		{"no token", "/", "", http.StatusUnauthorized, ""},
		{"no token for the API", "/api/state", "", http.StatusUnauthorized, ""},
		{"no token for assets", "/static/console.js", "", http.StatusUnauthorized, ""},
		{"wrong token in the URL", "/?token=guess", "", http.StatusUnauthorized, ""},
		{"token in the URL", "/?token=the-access-token", "", http.StatusSeeOther, "/"},
		{"wrong cookie", "/api/state", "guess", http.StatusUnauthorized, ""},
		{"cookie", "/api/state", "the-access-token", http.StatusOK, ""},
		{"cookie for the page", "/", "the-access-token", http.StatusOK, ""},
		{"cookie for the page's script", "/static/console.js", "the-access-token", http.StatusOK, ""},
		{"cookie for xterm.js", "/vendor/xterm.js", "the-access-token", http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tc.target, nil)
			if tc.cookie != "" {
				req.AddCookie(&http.Cookie{Name: s.cookie, Value: tc.cookie})
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("GET %s = %d %s, want %d", tc.target, rec.Code, rec.Body, tc.want)
			}
			if tc.location != "" {
				if got := rec.Header().Get("Location"); got != tc.location {
					t.Fatalf("Location = %q, want %q (without the token)", got, tc.location)
				}
				sc := rec.Header().Get("Set-Cookie")
				for _, want := range []string{cookie, "HttpOnly", "SameSite=Strict", "Path=/"} {
					if !strings.Contains(sc, want) {
						t.Fatalf("Set-Cookie = %q, want %q in it", sc, want)
					}
				}
			}
		})
	}
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	s := testServer(t)
	for _, target := range []string{"/", "/?token=the-access-token", "/api/state", "/static/console.js", "/nonexistent"} {
		for _, authed := range []bool{false, true} {
			req := httptest.NewRequest(http.MethodGet, target, nil)
			if authed {
				req.AddCookie(&http.Cookie{Name: s.cookie, Value: "the-access-token"})
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			csp := rec.Header().Get("Content-Security-Policy")
			for _, want := range []string{"script-src 'self';", "default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("GET %s (cookie %v): CSP %q lacks %q", target, authed, csp, want)
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

// TestNoInlineScripts: the page loads scripts by src only and has no event
// handler attributes, which the CSP would block anyway.
func TestNoInlineScripts(t *testing.T) {
	s := testServer(t)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.AddCookie(&http.Cookie{Name: s.cookie, Value: "the-access-token"})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
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

func TestOriginCheck(t *testing.T) {
	s := testServer(t)
	for _, tc := range []struct {
		name, method, target, origin string
		want                         int
	}{
		{"POST without Origin", http.MethodPost, "/api/tunnels", "", http.StatusForbidden},
		{"POST from another site", http.MethodPost, "/api/tunnels", "http://evil.example", http.StatusForbidden},
		{"POST from another port", http.MethodPost, "/api/tunnels", "http://console.test:1", http.StatusForbidden},
		{"DELETE from another site", http.MethodDelete, "/api/tunnels/x", "http://evil.example", http.StatusForbidden},
		{"WebSocket without Origin", http.MethodGet, "/api/terminal", "", http.StatusForbidden},
		{"WebSocket from another site", http.MethodGet, "/api/terminal", "http://evil.example", http.StatusForbidden},
		{"POST from the console", http.MethodPost, "/api/tunnels", "http://console.test", http.StatusBadRequest}, // reaches the handler
		{"GET without Origin", http.MethodGet, "/api/state", "", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://console.test"+tc.target, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			req.AddCookie(&http.Cookie{Name: s.cookie, Value: "the-access-token"})
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("%s %s from %q = %d %s, want %d", tc.method, tc.target, tc.origin, rec.Code, rec.Body, tc.want)
			}
		})
	}
}

// TestWebSocketOtherOriginOverTheWire dials the terminal like a page of another
// site would, with the cookie (a browser would not even send a Strict one).
func TestWebSocketOtherOriginOverTheWire(t *testing.T) {
	l := newTestLab(t, Config{})
	h := http.Header{"Origin": {"http://evil.example"}}
	h.Set("Cookie", l.cookie().String())
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
	// A pasted token to an endpoint where nothing listens.
	pasted := "AQGAAXhpasted-source-token-0123456789"
	var v tunnelView
	l.api(c, http.MethodPost, "/api/tunnels", openRequest{Mode: "token", Token: pasted, Label: "pasted", Endpoint: "ws://127.0.0.1:1"}, &v, http.StatusOK)
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
