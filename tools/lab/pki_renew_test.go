package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// verifyLeaf checks certFile against the CA the lab now uses, as the broker's
// mutual TLS (ClientCAs) and the agent's RootCAs do.
func verifyLeaf(t *testing.T, p *pki, certFile, keyFile string, server bool) error {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	_, err = pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// TestLeafRenewedWhenCAChanges: a state directory whose ca.key is gone gets a
// new CA (loadOrCreatePKI); the certificates the old CA signed are issued again,
// or the broker would refuse the device's and tunneld's client certificates and
// the agent tunneld's server certificate, at every run.
func TestLeafRenewedWhenCAChanges(t *testing.T) {
	dir := t.TempDir()
	p, err := loadOrCreatePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.leaf(dir, "broker", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.leaf(dir, Thing, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	p2, err := loadOrCreatePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		server bool
	}{{"broker", true}, {Thing, false}} {
		cf, kf, err := p2.leaf(dir, c.name, c.server)
		if err != nil {
			t.Fatal(err)
		}
		if err := verifyLeaf(t, p2, cf, kf, c.server); err != nil {
			t.Errorf("%s certificate after the CA was renewed: %v", c.name, err)
		}
	}
}

// TestLeafOutOfDateRenewed: leaf reuses a certificate outside its validity
// period (expired, or made while the clock was ahead): every TLS handshake of
// the lab then fails, and no run of the lab renews it.
func TestLeafOutOfDateRenewed(t *testing.T) {
	for _, c := range []struct {
		name     string
		from, to time.Time
	}{
		{"expired", time.Now().AddDate(-6, 0, 0), time.Now().Add(-time.Hour)},
		{"not yet valid", time.Now().Add(48 * time.Hour), time.Now().AddDate(5, 0, 0)},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p, err := loadOrCreatePKI(dir)
			if err != nil {
				t.Fatal(err)
			}
			issueLeaf(t, p, dir, Thing, &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: Thing},
				NotBefore: c.from, NotAfter: c.to, KeyUsage: x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			cf, kf, err := p.leaf(dir, Thing, false)
			if err != nil {
				t.Fatal(err)
			}
			if err := verifyLeaf(t, p, cf, kf, false); err != nil {
				t.Errorf("the device certificate the lab uses: %v", err)
			}
		})
	}
}

// issueLeaf writes name.crt and name.key in dir: a certificate from tmpl, signed
// by p's CA, as one an older lab (or another clock) left there.
func issueLeaf(t *testing.T, p *pki, dir, name string, tmpl *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := writePEM(filepath.Join(dir, name+".key"), "PRIVATE KEY", kb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLeafOfAnotherIdentityRenewed: the device's files hold a certificate the lab
// CA issued for another of its identities (swapped with tunneld-publisher's, as
// when files are copied around for an agent started by hand). Signed and in date,
// it was reused; the broker then knows the device as tunneld-publisher and
// refuses its notify subscription, and every start fails after 30 s.
func TestLeafOfAnotherIdentityRenewed(t *testing.T) {
	dir := t.TempDir()
	p, err := loadOrCreatePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	issueLeaf(t, p, dir, Thing, &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "tunneld-publisher"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(5, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	cf, kf, err := p.leaf(dir, Thing, false)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	if cn := pair.Leaf.Subject.CommonName; cn != Thing {
		t.Errorf("the device certificate the lab uses is for %q, want %q (the broker's identity for its topics)", cn, Thing)
	}
}
