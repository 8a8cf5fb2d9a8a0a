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
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
)

// testCA makes a self-signed CA named cn and writes its certificate to a PEM
// file: the key and certificate sign, the file is a Config.CAFile.
func testCA(t *testing.T, cn string) (*ecdsa.PrivateKey, *x509.Certificate, string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, cert, p
}

// otherCA writes a CA certificate that signed nothing the test servers use.
func otherCA(t *testing.T) string {
	_, _, p := testCA(t, "unrelated CA")
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

// TestCertificateHintLogged: a service's certificate that does not verify is
// logged with what to look at, the CA file by its name in the caller's
// config and the system's roots: a device without a CA bundle said only
// "certificate signed by unknown authority".
func TestCertificateHintLogged(t *testing.T) {
	srv := tlsService(t, func(r *http.Request) int { return 0 })
	addr := strings.TrimPrefix(srv.URL, "https://")
	tok, _ := NewAccessToken("the-access-token")
	other := otherCA(t)
	for _, tc := range []struct {
		name, ca, want string
	}{
		{"no CA file", "", "the service's certificate is signed by no CA of the system's roots, and tunnel.ca_file is not set"},
		{"another CA", other, "the service's certificate is signed by no CA in tunnel.ca_file " + other + " nor of the system's roots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged testlog.Lines
			d := &Destination{Config: Config{Endpoint: addr, AccessToken: tok, CAFile: tc.ca, CAFileName: "tunnel.ca_file",
				RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logged, nil))}, Dialer: Targets{}}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			for deadline := time.Now().Add(10 * time.Second); logged.Count("cannot connect to the tunnel") == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			<-done
			if line := logged.String(); !strings.Contains(line, "unknown authority") || !strings.Contains(line, tc.want) {
				t.Errorf("logged:\n%s\nwant the hint %q", line, tc.want)
			}
		})
	}
}

// TestCertHintForProxy: a proxy's certificate signed by no CA trusted is
// named as the proxy's, with its own CA to set, not the service's (Amazon
// Root CA 1 signs no proxy's), and by the caller's setting's name.
func TestCertHintForProxy(t *testing.T) {
	c := &Config{CAFileName: "--ca-file"}
	got := c.certHint(&ProxyError{Err: x509.UnknownAuthorityError{}})
	if !strings.Contains(got, "the HTTPS proxy's certificate") || !strings.Contains(got, "--ca-file is not set") || strings.Contains(got, "Amazon") {
		t.Errorf("hint for a proxy's certificate: %q", got)
	}
	if got := c.certHint(x509.UnknownAuthorityError{}); !strings.Contains(got, "the service's certificate") || !strings.Contains(got, "Amazon Root CA 1") {
		t.Errorf("hint for the service's certificate: %q", got)
	}
	if got := c.certHint(x509.HostnameError{}); got != "" {
		t.Errorf("hint for a name the certificate does not hold: %q, want none", got)
	}
}

// impostor serves on 127.0.0.1 with a certificate for evil.example only, from a
// CA of its own, and counts the requests (WebSocket or CONNECT) that reach it.
func impostor(t *testing.T) (addr, caFile string, reached *atomic.Int32) {
	caKey, ca, caFile := testCA(t, "impostor CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "evil.example"},
		DNSNames: []string{"evil.example"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	reached = new(atomic.Int32)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.WriteHeader(http.StatusForbidden)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "https://"), caFile, reached
}

// An endpoint or HTTPS proxy given as an IP address is checked against that IP,
// with a CA file as without: crypto/tls sends no SNI for an IP and leaves the
// connection's server name empty, and the CA file's verifier once checked no
// name then, so any certificate from a trusted CA received the tokens.
func TestDialTLSVerifiesIPEndpoints(t *testing.T) {
	addr, caFile, reached := impostor(t)
	tok, _ := NewAccessToken("the-access-token")
	proxy, _ := url.Parse("https://" + addr)
	for _, tc := range []struct {
		name string
		cfg  *Config
	}{
		{"endpoint", &Config{Endpoint: addr, AccessToken: tok, CAFile: caFile}},
		// An endpoint Go's resolver refuses without asking DNS (a label
		// ending in -): were the proxy not used, nothing would leave.
		{"https proxy", &Config{Endpoint: "x-.invalid:443", AccessToken: tok, CAFile: caFile, Proxy: ProxyURL(proxy)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(context.Background(), tc.cfg, ModeDestination)
			if err == nil {
				c.Close()
			}
			if !IsCertificateError(err) || !strings.Contains(err.Error(), "127.0.0.1") {
				t.Errorf("Dial through a certificate for evil.example at 127.0.0.1 = %v, want a certificate error naming 127.0.0.1", err)
			}
		})
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d requests reached the impostor", n)
	}
}

// TestCADirectoryWithBrokenEntries: a CA directory as localproxy's --capath
// takes it (OpenSSL looks certificates up in it and passes over what it cannot
// read) may hold a dangling symlink (a certificate removed without
// update-ca-certificates), a link to a subdirectory, or a FIFO. A file that
// is not a certificate was passed over already; these are too, rather than
// refuse the whole directory, and with it every connection, or wait for a
// FIFO's writer.
func TestCADirectoryWithBrokenEntries(t *testing.T) {
	_, _, p := testCA(t, "test CA")
	dir := filepath.Dir(p)
	if err := os.Symlink(filepath.Join(dir, "removed.pem"), filepath.Join(dir, "0123abcd.0")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(dir, "java")); err != nil {
		t.Fatal(err)
	}
	if err := mkfifo(filepath.Join(dir, "fifo")); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		t.Fatal(err)
	}
	if files, err := CAFiles(dir); err != nil || len(files) != 1 || files[0] != p {
		t.Errorf("CAFiles(a directory with a certificate, a dangling link, a link to a directory and a FIFO) = %q, %v; want only %s", files, err, p)
	}
	if err := CheckCAFile(dir); err != nil {
		t.Errorf("CheckCAFile(the same) = %v, want nil", err)
	}
}
