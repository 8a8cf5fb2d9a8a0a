package dataplane

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzHandshakeHeaders feeds the data plane's handshake arbitrary request lines and
// headers (query, access-token, client-token, cookies, subprotocols). It must never
// panic, every refusal carries a channel-id and a body, and no answer repeats the
// tunnel's access token. The recorder cannot be hijacked, so a handshake that passes
// every rule fails at the WebSocket upgrade; what is fuzzed is the rules before it.
func FuzzHandshakeHeaders(f *testing.F) {
	const token = "fuzz-access-token-0123456789abcdefghijklmnop"
	for _, s := range []string{
		"GET /tunnel?local-proxy-mode=source HTTP/1.1\r\naccess-token: T\r\nSec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\n",
		"GET /tunnel?local-proxy-mode=destination HTTP/1.1\r\nCookie: awsiot-tunnel-token=T\r\nclient-token: 0123456789abcdef0123456789abcdef\r\nSec-WebSocket-Protocol: aws.iot.securetunneling-2.0, aws.iot.securetunneling-1.0\r\n",
		"GET /tunnel?local-proxy-mode=source&local-proxy-mode=destination HTTP/1.1\r\naccess-token: T\r\naccess-token: T\r\n",
		"GET /tunnel?local-proxy-mode=source HTTP/1.1\r\naccess-token: T\r\nclient-token: short\r\nSec-WebSocket-Protocol: x\r\n",
		"GET /other HTTP/1.1\r\n",
		"GET /tunnel?local-proxy-mode=destination HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\naccess-token: T\r\nSec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, head string) {
		head = strings.ReplaceAll(head, "T\r\n", token+"\r\n")
		head = strings.ReplaceAll(head, "=T\r\n", "="+token+"\r\n")
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head + "Host: x\r\n\r\n")))
		if err != nil {
			return
		}
		s := &Server{}
		defer s.Close()
		if _, err := s.OpenTunnel(TunnelConfig{ID: "t", Services: []string{"SSH"}, Tokens: [2]string{token, token + "-dst"}}); err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code == http.StatusSwitchingProtocols {
			t.Fatalf("switched protocols on a recorder for %q", head)
		}
		if strings.Contains(w.Body.String(), token) {
			t.Fatalf("answer %d %q repeats the access token", w.Code, w.Body.String())
		}
		if w.Code >= 400 && w.Code < 500 && (w.Header().Get("channel-id") == "" || w.Body.Len() == 0) {
			t.Fatalf("refusal %d without channel-id or body for %q", w.Code, head)
		}
	})
}
