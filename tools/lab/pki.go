package lab

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/tools/internal/atomicfile"
)

// pki is the lab's dev certificate authority, kept in the state directory.
type pki struct {
	dir   string
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// loadOrCreatePKI reuses the CA in dir, or makes one valid for ten years.
func loadOrCreatePKI(dir string) (*pki, error) {
	p := &pki{dir: dir}
	certPEM, err1 := os.ReadFile(p.caFile())
	keyPEM, err2 := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err1 == nil && err2 == nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("lab CA in %s is unusable (delete the state directory to start over): %w", dir, err)
		}
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("lab CA key in %s is not ECDSA", dir)
		}
		if now := time.Now(); now.Before(pair.Leaf.NotBefore) || now.After(pair.Leaf.NotAfter) {
			return nil, fmt.Errorf("lab CA in %s is valid from %s to %s, not now (delete the state directory to start over)",
				dir, pair.Leaf.NotBefore.UTC().Format(time.RFC3339), pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		p.ca, p.caKey = pair.Leaf, key
		return p, nil
	}
	if !errors.Is(err1, os.ErrNotExist) && err1 != nil {
		return nil, err1
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "porthole lab CA", Organization: []string{"porthole lab"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey = key
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := writePEM(filepath.Join(dir, "ca.key"), "PRIVATE KEY", kb, 0o600); err != nil {
		return nil, err
	}
	return p, writePEM(p.caFile(), "CERTIFICATE", der, 0o644)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// guestHost is the host's loopback as a QEMU board's user network shows it to
// the guest (porthole-lab --board).
var guestHost = net.IPv4(10, 0, 2, 2)

// serverIPs are the addresses a server certificate names: the host's loopback and
// guestHost.
var serverIPs = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, guestHost}

// leaf returns name.crt and name.key in dir, issuing them again if they are
// missing or would not work: not signed by the lab's CA (a CA made again), out of
// their dates (expired, or made while the clock was ahead), for another of the
// lab's identities (files swapped), or, for a server certificate, without one of
// serverIPs (a state directory from before --board).
// A server certificate is for serverIPs and localhost.
func (p *pki) leaf(dir, name string, server bool) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && p.works(pair.Leaf, name, server) {
		return certFile, keyFile, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(5, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = serverIPs
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return "", "", err
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := writePEM(keyFile, "PRIVATE KEY", kb, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, writePEM(certFile, "CERTIFICATE", der, 0o644)
}

// works reports whether cert, a leaf the lab issued, verifies against its CA now,
// for its use (a server's for every serverIPs), and is name's: the broker takes
// a client's identity from its certificate's CN, and refuses the device's topics
// to any other (one the CA signed for tunneld-publisher, say).
func (p *pki) works(cert *x509.Certificate, name string, server bool) bool {
	if cert.Subject.CommonName != name {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return false
	}
	return !server || namesAll(cert, serverIPs)
}

// namesAll reports whether cert names every address in ips.
func namesAll(cert *x509.Certificate, ips []net.IP) bool {
	for _, ip := range ips {
		if cert == nil || cert.VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	return true
}

// sshKey returns the operator's key pair (OpenSSH format), making it if missing.
func sshKey(path string) (gossh.PublicKey, error) {
	if b, err := os.ReadFile(path); err == nil {
		s, err := gossh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("operator key %s: %w", path, err)
		}
		return s.PublicKey(), nil
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "porthole lab operator")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	spub, _ := gossh.NewPublicKey(pub)
	return spub, atomicfile.Write(path+".pub", gossh.MarshalAuthorizedKey(spub), 0o644)
}
