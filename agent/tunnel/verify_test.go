package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// otherCA writes a CA certificate that signed nothing the test servers use.
func otherCA(t *testing.T) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "unrelated CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDialTLSVerification: with a CA file, the chain is verified against it (then
// the system roots), and the host name is still checked; failures are
// *tls.CertificateVerificationError with crypto/tls's wording.
func TestDialTLSVerification(t *testing.T) {
	srv := tlsService(t, func(r *http.Request) int { return 0 })
	tok, _ := NewAccessToken("the-access-token")
	addr := strings.TrimPrefix(srv.URL, "https://")
	_, port, _ := strings.Cut(addr, ":")
	for _, tc := range []struct {
		name, endpoint, ca, want string
	}{
		{"own CA", addr, writeCA(t, srv), ""},
		{"unrelated CA", addr, otherCA(t), "certificate signed by unknown authority"},
		{"wrong name", "localhost:" + port, writeCA(t, srv), "not localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{Endpoint: tc.endpoint, AccessToken: tok, CAFile: tc.ca}
			c, err := Dial(context.Background(), cfg, ModeDestination)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("Dial succeeded, want %q", tc.want)
			}
			var ve *tls.CertificateVerificationError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), "tls: failed to verify certificate") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial = %v, want a *tls.CertificateVerificationError saying %q", err, tc.want)
			}
		})
	}
}

func TestIsCertificateError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("dial: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), true},
		{fmt.Errorf("dial: %w", x509.HostnameError{Host: "example.com"}), true},
		{x509.CertificateInvalidError{Reason: x509.Expired}, true},
		{io.ErrUnexpectedEOF, false},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, false},
		{&HandshakeError{StatusCode: 403}, false},
		{nil, false},
	} {
		if got := IsCertificateError(tc.err); got != tc.want {
			t.Errorf("IsCertificateError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
