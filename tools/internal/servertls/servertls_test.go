package servertls

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"
)

// Every suite is ECDHE with an AEAD cipher, in Go's list of secure suites; a
// caller's own suites are kept.
func TestCipherSuites(t *testing.T) {
	var secure []uint16
	for _, s := range tls.CipherSuites() {
		secure = append(secure, s.ID)
	}
	for _, id := range CipherSuites() {
		name := tls.CipherSuiteName(id)
		if !slices.Contains(secure, id) || !strings.HasPrefix(name, "TLS_ECDHE_") ||
			!strings.Contains(name, "_GCM_") && !strings.Contains(name, "_CHACHA20_POLY1305_") {
			t.Errorf("CipherSuites has %s, want ECDHE with AES-GCM or ChaCha20-Poly1305 only", name)
		}
	}
	CipherSuites()[0] = 0
	if CipherSuites()[0] == 0 {
		t.Error("CipherSuites returned its own slice")
	}
	c := &tls.Config{}
	Restrict(c)
	if !slices.Equal(c.CipherSuites, CipherSuites()) {
		t.Errorf("Restrict left %v, want CipherSuites", c.CipherSuites)
	}
	own := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	c = &tls.Config{CipherSuites: own}
	Restrict(c)
	if !slices.Equal(c.CipherSuites, own) {
		t.Errorf("Restrict replaced a config's own suites with %v", c.CipherSuites)
	}
}
