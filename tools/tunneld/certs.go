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
// leaves the one being served in place, and so does one whose certificate is
// outside its dates (an old copy put back, the wrong file of certbot's
// archive/) while the one being served is within its own: every new client
// would fail its TLS check.
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

// reload loads the files and, if they hold a usable pair, serves it from now
// on; it returns the new certificate. A certificate that is not valid now is
// refused while the one being served is valid, and served otherwise (at start,
// or over one out of date itself: it may be the renewal, with the clock
// wrong); the caller warns of it (outOfDate).
func (c *certFiles) reload() (*x509.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading --tls-cert %s and --tls-key %s: %w", c.certFile, c.keyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parsing --tls-cert %s: %w", c.certFile, err)
	}
	if why := c.outOfDate(leaf); why != "" {
		if cur := c.cur.Load(); cur != nil && c.outOfDate(cur.Leaf) == "" {
			return nil, fmt.Errorf("--tls-cert %s %s (not_before %s, not_after %s); the one being served is valid until %s",
				c.certFile, why, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339),
				cur.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	cert.Leaf = leaf
	c.cur.Store(&cert)
	return leaf, nil
}

// outOfDate says why leaf is not valid now ("has expired", "is not valid
// yet"), or "" if it is.
func (c *certFiles) outOfDate(leaf *x509.Certificate) string {
	now := time.Now()
	switch {
	case now.After(leaf.NotAfter):
		return "has expired"
	case now.Before(leaf.NotBefore):
		return "is not valid yet"
	}
	return ""
}

// get is tls.Config.GetCertificate.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }
