package tunneld

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"
)

// certFiles serves the certificate of --tls-cert and --tls-key and loads them
// again on reload (SIGHUP), so that a renewal hook (certbot, acme.sh) needs no
// restart, which would cut every tunnel's WebSocket. A pair that does not load
// leaves the one being served in place.
type certFiles struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func loadCertFiles(certFile, keyFile string) (*certFiles, error) {
	c := &certFiles{certFile: certFile, keyFile: keyFile}
	if _, err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload loads the files and, if they hold a usable pair, serves it from now on;
// it returns the new certificate's expiry.
func (c *certFiles) reload() (notAfter time.Time, err error) {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return time.Time{}, fmt.Errorf("loading --tls-cert %s and --tls-key %s: %w", c.certFile, c.keyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return time.Time{}, fmt.Errorf("parsing --tls-cert %s: %w", c.certFile, err)
	}
	cert.Leaf = leaf
	c.cur.Store(&cert)
	return leaf.NotAfter, nil
}

// get is tls.Config.GetCertificate.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }
