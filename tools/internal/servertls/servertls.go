// Package servertls holds the TLS settings the host tools' servers share
// (porthole-tunneld, both its planes on one port, porthole-console, and the
// lab's MQTT broker): the cipher suites they accept over TLS 1.2. It is not a
// TLS configuration of its own: certificates, protocols (ALPN) and minimum
// versions stay with each server. The device binary's TLS clients (agent/tunnel, agent/notify) keep
// Go's defaults and do not import it.
package servertls

import "crypto/tls"

// cipherSuites are ECDHE (forward secrecy) with an AEAD cipher, for ECDSA and
// RSA certificates. Go's defaults for TLS 1.2 also take ECDHE with AES-CBC and
// HMAC-SHA1 (TLS_ECDHE_*_WITH_AES_*_CBC_SHA), whose MAC-then-encrypt
// construction is open to padding-oracle timing attacks (LUCKY13, CVE-2013-0169;
// testssl.sh reports it "potentially vulnerable"), and which Mozilla's
// "intermediate" configuration no longer lists. Every client the servers have
// speaks TLS 1.3 and never sees this list (Go's TLS 1.3 suites cannot be set
// and are all AEAD): the AWS CLI (OpenSSL), curl, Chromium, porthole's agent and
// connect, the reference localproxy (OpenSSL through Boost.Beast); a TLS
// 1.2-only one built on OpenSSL 1.0.1 or later, or any browser since 2016, has
// AES-GCM.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// CipherSuites returns the TLS 1.2 cipher suites the host tools' servers
// accept, a new slice at each call: ECDHE key exchange with AES-GCM or
// ChaCha20-Poly1305, no CBC. (crypto/tls picks among them in its own order.)
func CipherSuites() []uint16 { return append([]uint16(nil), cipherSuites...) }

// Restrict sets c.CipherSuites to CipherSuites unless c names suites of its
// own, which a caller chose on purpose. Call it on a server's own copy (Clone).
func Restrict(c *tls.Config) {
	if c.CipherSuites == nil {
		c.CipherSuites = CipherSuites()
	}
}
