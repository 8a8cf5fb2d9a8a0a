package console

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/tools/tunneld"
)

// TestRefusalsReachThePage: the page's api() (console.js) shows data.error of a
// JSON answer, and for anything else only "STATUS statusText". Behind a reverse
// proxy without --public-url, the page loads and lists its tunnels, but opening
// or closing a tunnel is refused with 403: its explanation ("… needs its public
// URL: --public-url") is JSON for the API, or the operator read "403 Forbidden".
func TestRefusalsReachThePage(t *testing.T) {
	s := testServer(t)
	for _, tc := range []struct{ method, target string }{
		{http.MethodPost, "/api/tunnels"},
		{http.MethodDelete, "/api/tunnels/x"},
	} {
		req := request(tc.method, tc.target, strings.NewReader(`{"mode":"token"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer the-access-token")
		req.Header.Set("Origin", "https://console.example.com") // the proxy's; it sent Host 127.0.0.1:8088
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		var body struct{ Error string }
		err := json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusForbidden || err != nil || !strings.Contains(body.Error, "--public-url") {
			t.Errorf("%s %s from the proxy's origin = %d %s %q: the page shows only %q",
				tc.method, tc.target, rec.Code, rec.Header().Get("Content-Type"), rec.Body, "403 Forbidden")
		}
	}
}

// TestControlPlaneThroughProxy: behind an HTTPS proxy (https_proxy), the
// console's control-plane calls go through it, as its data plane and the AWS
// CLI's calls do: with a bare http.Transport they went straight to the host,
// which such a network does not let through, and opening a tunnel failed while
// a pasted token worked.
func TestControlPlaneThroughProxy(t *testing.T) {
	cp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		io.WriteString(w, `{"tunnel":{"status":"OPEN","destinationConnectionState":{"status":"CONNECTED"}}}`)
	}))
	defer cp.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cp.Certificate().Raw}), 0o600)

	var mu sync.Mutex
	var connects []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		mu.Lock()
		connects = append(connects, r.Host)
		mu.Unlock()
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
		c, buf, _ := w.(http.Hijacker).Hijack()
		go func() { io.Copy(up, buf); up.Close() }()
		io.Copy(c, up)
		c.Close()
	}))
	defer proxy.Close()
	t.Setenv("https_proxy", proxy.URL)
	t.Setenv("HTTPS_PROXY", proxy.URL)

	api := &ControlPlaneAPI{URL: cp.URL, CAFile: ca}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := api.DestinationConnected(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(connects) == 0 {
		t.Errorf("with https_proxy=%s, DescribeTunnel went straight to %s, not through the proxy", proxy.URL, cp.URL)
	}
}

// TestControlPlaneCADirectory: --ca-file may name a directory of certificates,
// as porthole connect's and the data plane's do; the control plane read it as
// one file and failed every call.
func TestControlPlaneCADirectory(t *testing.T) {
	cp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		io.WriteString(w, `{"tunnel":{"status":"OPEN","destinationConnectionState":{"status":"CONNECTED"}}}`)
	}))
	defer cp.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cp.Certificate().Raw}), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not a certificate\n"), 0o600)
	os.Mkdir(filepath.Join(dir, "old"), 0o700)

	api := &ControlPlaneAPI{URL: cp.URL, CAFile: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if joined, err := api.DestinationConnected(ctx, "t1"); err != nil || !joined {
		t.Fatalf("DestinationConnected with CAFile a directory = %v, %v; want true", joined, err)
	}
}

// TestShutdownClosesTunnelsDespiteASilentPage: porthole-console stops with
// Shutdown(5 s). A terminal's page that no longer answers (a laptop that went
// to sleep, a network that dropped, with no FIN) holds the terminal's teardown
// for the WebSocket close handshake (coder/websocket waits 5 s for the peer's
// close frame). The tunnels the console opened are closed at the service all
// the same: they were closed only after every terminal, with nothing left of
// ctx, and stayed open, their devices connected, for up to 12 h.
func TestShutdownClosesTunnelsDespiteASilentPage(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-silent")
	tv := l.openTunnel(l.client(), "dev-silent")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.ready()
	// From here the page reads nothing: it does not answer a close frame.
	// porthole-console talks to its control plane over HTTP (ControlPlaneAPI),
	// whose calls end with their ctx; the lab's in-process adapter ignores ctx.
	l.console.cfg.ControlPlane = &ControlPlaneAPI{URL: "http://" + l.tdAddr}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // as porthole-console
	defer cancel()
	start := time.Now()
	l.console.Shutdown(ctx)
	took := time.Since(start)
	d, err := l.td.DescribeTunnel(context.Background(), &tunneld.DescribeTunnelInput{TunnelID: tv.TunnelID})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shutdown took %v: %s", took, d.Tunnel.Status)
	if d.Tunnel.Status != tunneld.StatusClosed {
		t.Errorf("after Shutdown(5 s), which took %v, the tunnel the console opened is %s at the service, want CLOSED",
			took.Round(time.Millisecond), d.Tunnel.Status)
	}
}

// TestPastedKeyWrongPassphrase: a pasted encrypted key with a mistyped
// passphrase, or a passphrase given for a key that has none, is said to be
// that, not a key that "cannot be read (want an OpenSSH or PEM private key)",
// which sent the operator to the key's format.
func TestPastedKeyWrongPassphrase(t *testing.T) {
	s := testServer(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	enc, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("right passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := ssh.MarshalPrivateKey(priv, "")
	for _, tc := range []struct{ name, pem, pass string }{
		{"encrypted, wrong passphrase", string(pem.EncodeToMemory(enc)), "wrong passphrase"},
		{"not encrypted, a passphrase given", string(pem.EncodeToMemory(plain)), "a passphrase"},
	} {
		_, err := s.authMethod(&loginRequest{Auth: "pem", PEM: tc.pem, Passphrase: tc.pass})
		if err == nil || !strings.Contains(err.Error(), "passphrase") {
			t.Errorf("%s: %v; want an error about the passphrase", tc.name, err)
		}
	}
	if _, err := s.authMethod(&loginRequest{Auth: "pem", PEM: string(pem.EncodeToMemory(enc)), Passphrase: "right passphrase"}); err != nil {
		t.Fatal(err)
	}
	// No passphrase: a key without one is taken; one with one is said to need it.
	if _, err := s.authMethod(&loginRequest{Auth: "pem", PEM: string(pem.EncodeToMemory(plain))}); err != nil {
		t.Errorf("a pasted key without a passphrase: %v", err)
	}
	if _, err := s.authMethod(&loginRequest{Auth: "pem", PEM: string(pem.EncodeToMemory(enc))}); err == nil || !strings.Contains(err.Error(), "enter its passphrase") {
		t.Errorf("an encrypted pasted key without its passphrase: %v; want to be asked for it", err)
	}
}

// TestClamp: a terminal's size from the page is taken from 1 to 1000 columns
// or rows; anything else is the default.
func TestClamp(t *testing.T) {
	for _, tc := range []struct{ v, want int }{{1, 1}, {1000, 1000}, {1001, 80}, {0, 80}, {-1, 80}, {1 << 40, 80}} {
		if got := clamp(tc.v, 80); got != tc.want {
			t.Errorf("clamp(%d, 80) = %d, want %d", tc.v, got, tc.want)
		}
	}
}
