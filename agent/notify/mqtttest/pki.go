package mqtttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// PKI is a throw-away certificate authority whose files live in Dir.
type PKI struct {
	Dir    string // a t.TempDir
	CAFile string // PEM CA certificate

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool

	mu      sync.Mutex
	next    int64
	clients map[string][2]string // cn → certificate and key files
}

// NewPKI makes a CA in a temporary directory.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	p := &PKI{Dir: tb.TempDir(), next: 2, clients: map[string][2]string{}, pool: x509.NewCertPool()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "porthole test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey = key
	p.pool.AddCert(p.ca)
	p.CAFile = filepath.Join(p.Dir, "ca.pem")
	writePEM(tb, p.CAFile, "CERTIFICATE", der)
	return p
}

// Server issues a server certificate for 127.0.0.1, ::1 and localhost and returns
// its certificate and key files.
func (p *PKI) Server(tb testing.TB, name string) (certFile, keyFile string) {
	tb.Helper()
	return p.ServerAt(tb, name, time.Time{})
}

// ServerAt is Server with a certificate valid from notBefore (zero: an hour ago),
// for tests of a clock that is behind.
func (p *PKI) ServerAt(tb testing.TB, name string, notBefore time.Time) (certFile, keyFile string) {
	tb.Helper()
	return p.server(tb, name, notBefore, nil)
}

// ServerFor is Server with more addresses in the certificate, such as 10.0.2.2,
// the host as a QEMU guest sees it.
func (p *PKI) ServerFor(tb testing.TB, name string, ips ...net.IP) (certFile, keyFile string) {
	tb.Helper()
	return p.server(tb, name, time.Time{}, ips)
}

func (p *PKI) server(tb testing.TB, name string, notBefore time.Time, ips []net.IP) (certFile, keyFile string) {
	return p.issue(tb, name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		DNSNames:    []string{"localhost"},
		IPAddresses: append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore:   notBefore,
	})
}

// ServerTLS is a tls.Config serving a fresh server certificate.
func (p *PKI) ServerTLS(tb testing.TB, name string) *tls.Config {
	tb.Helper()
	cert, key := p.Server(tb, name)
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{kp}}
}

// Client returns a client certificate with common name cn, issuing it the first
// time.
func (p *PKI) Client(tb testing.TB, cn string) (certFile, keyFile string) {
	tb.Helper()
	p.mu.Lock()
	f, ok := p.clients[cn]
	p.mu.Unlock()
	if ok {
		return f[0], f[1]
	}
	certFile, keyFile = p.issue(tb, "client-"+cn, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.mu.Lock()
	p.clients[cn] = [2]string{certFile, keyFile}
	p.mu.Unlock()
	return certFile, keyFile
}

// ClientAt issues another client certificate for cn, valid for 25 hours from
// notBefore: one that has expired, for tests of what is said about it.
func (p *PKI) ClientAt(tb testing.TB, cn string, notBefore time.Time) (certFile, keyFile string) {
	tb.Helper()
	return p.issue(tb, "client-"+cn+"-"+notBefore.UTC().Format("20060102T150405"), &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore:   notBefore,
	})
}

// Renew issues cn's client certificate again, with a new key and serial, and
// puts both over the files Client returned (each by a rename), as a renewal job
// on a device would. It returns the new serial.
func (p *PKI) Renew(tb testing.TB, cn string) *big.Int {
	tb.Helper()
	certFile, keyFile := p.Client(tb, cn)
	newCert, newKey := p.issue(tb, "renewed-"+cn, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	for _, mv := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			tb.Fatal(err)
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	return pair.Leaf.SerialNumber
}

// ClientCertTLS is a client tls.Config with cn's certificate, trusting the CA.
func (p *PKI) ClientCertTLS(tb testing.TB, cn string) *tls.Config {
	tb.Helper()
	certFile, keyFile := p.Client(tb, cn)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}
}

// MutualTLS is a server tls.Config (certificate valid from notBefore, zero: an hour
// ago) that requires client certificates of the CA, as a broker does.
func (p *PKI) MutualTLS(tb testing.TB, notBefore time.Time) *tls.Config {
	tb.Helper()
	certFile, keyFile := p.ServerAt(tb, "server-inproc", notBefore)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, ClientCAs: p.pool, ClientAuth: tls.RequireAndVerifyClientCert}
}

func (p *PKI) issue(tb testing.TB, name string, tmpl *x509.Certificate) (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	p.mu.Lock()
	p.next++
	tmpl.SerialNumber = big.NewInt(p.next)
	p.mu.Unlock()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	tmpl.NotAfter = tmpl.NotBefore.Add(25 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	cert := filepath.Join(p.Dir, name+".pem")
	keyFile := filepath.Join(p.Dir, name+".key")
	writePEM(tb, cert, "CERTIFICATE", der)
	writePEM(tb, keyFile, "PRIVATE KEY", kder)
	return cert, keyFile
}

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// ClientTLS is a tls.Config that trusts the CA, for clients of a ServerTLS server.
func (p *PKI) ClientTLS(tb testing.TB) *tls.Config {
	tb.Helper()
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.pool}
}

// Pool is a certificate pool holding the CA.
func (p *PKI) Pool() *x509.CertPool { return p.pool }
