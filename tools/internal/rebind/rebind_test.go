package rebind

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestLocalHost: the Host names that are this server on loopback, on its own
// port, and no other, however they are spelled.
func TestLocalHost(t *testing.T) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8088}
	for host, want := range map[string]bool{
		"127.0.0.1:8088":  true,
		"localhost:8088":  true,
		"LocalHost:8088":  true,
		"[::1]:8088":      true,
		"localhost:8089":  false,
		"localhoſt:8088":  false, // U+017F, which Unicode folds to s
		"locaLhost.:8088": false,
		"evil.test:8088":  false,
		"10.0.0.1:8088":   false,
		"localhost":       false, // port 80
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = host
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(local)))
		if got := LocalHost(r); got != want {
			t.Errorf("LocalHost(Host %q) = %v, want %v", host, got, want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Host = "localhost:8088"
	if LocalHost(r) {
		t.Error("a request without a local address is local")
	}
}
