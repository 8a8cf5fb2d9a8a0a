package notify

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// BuildTime is when the binary was built, in RFC 3339, set by the linker:
//
//	-ldflags "-X github.com/porthole-iot/porthole/agent/notify.BuildTime=2026-11-30T01:00:00Z"
//
// Empty or unparsable means 2026-01-01. A device whose clock is before it
// has not set its clock yet (no RTC, no NTP reply so far), and every TLS
// certificate looks "not yet valid": the listener then says so instead of
// reporting an opaque certificate error.
var BuildTime string

const fallbackBuildTime = "2026-01-01T00:00:00Z"

func buildTime() time.Time {
	if t, err := time.Parse(time.RFC3339, BuildTime); err == nil {
		return t
	}
	t, _ := time.Parse(time.RFC3339, fallbackBuildTime)
	return t
}

// utc formats t in UTC as RFC 3339, as logs and messages show times: one
// call at each, not t.UTC().Format(time.RFC3339) repeated, which took 1.2 KB
// more of code laid out before the idle agent's (docs/size.md).
func utc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// newTLSConfig reads the CA, certificate and key files of c (which has
// its defaults applied) into a mutual-TLS client configuration. Errors name
// the Config field and the path, never the file contents; those that may
// mend themselves are ErrNotReady.
func newTLSConfig(c Config) (*tls.Config, error) {
	caPEM, err := readPEM("CAFile", c.CAFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		if err := notPEM(c.CAFile, caPEM, "openssl x509"); err != nil {
			return nil, &ConfigError{Field: "CAFile", Err: err}
		}
		return nil, configErr("CAFile", "%s holds no PEM certificate", c.CAFile)
	}
	certPEM, err := readPEM("CertFile", c.CertFile)
	if err != nil {
		return nil, err
	}
	if err := notPEM(c.CertFile, certPEM, "openssl x509"); err != nil {
		return nil, &ConfigError{Field: "CertFile", Err: err}
	}
	keyPEM, err := readPEM("KeyFile", c.KeyFile)
	if err != nil {
		return nil, err
	}
	defer clear(keyPEM)
	if err := keyFileProblem(c.KeyFile, keyPEM); err != nil {
		return nil, &ConfigError{Field: "KeyFile", Err: err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if laterCertMatches(certPEM, keyPEM) {
			return nil, configErr("CertFile", "the first certificate in %s is not the one of the key %s, a later one is: "+
				"put the device certificate first, then the intermediate certificates", c.CertFile, c.KeyFile)
		}
		first := firstCert(certPEM)
		if first != nil && first.IsCA {
			// AmazonRootCA1.pem where the device certificate belongs: Go says
			// only that the key does not match, which points at the key.
			return nil, configErr("CertFile", "%s holds a CA certificate (%s), not the device certificate: put the device's own "+
				"certificate there (from AWS IoT, the file ending in -certificate.pem.crt), and the CA in the CA file", c.CertFile, first.Subject)
		}
		// Both read well, and are not a pair: a renewal that has written
		// one file and not yet the other, as a reboot between the two
		// leaves it, looks the same as the files of two devices.
		notReady := first != nil && first.PublicKey != nil && keyReads(keyPEM)
		return nil, &ConfigError{Field: "CertFile", notReady: notReady,
			Err: wrapErr("loading the key pair "+c.CertFile+" and "+c.KeyFile, err)}
	}
	if cert.Leaf != nil && onlyCert(caPEM, cert.Leaf.Raw) {
		return nil, configErr("CAFile", "%s holds the device certificate, not the CA that signs the broker's "+
			"certificate: for AWS IoT Core, Amazon Root CA 1 (https://www.amazontrust.com/repository/AmazonRootCA1.pem)", c.CAFile)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      roots,
		Certificates: []tls.Certificate{cert},
		ServerName:   c.ServerName,
		NextProtos:   c.ALPN,
	}, nil
}

// readPEM reads path, the PEM file of field (see FileError).
func readPEM(field, path string) ([]byte, error) {
	b, _, err := ReadRegularFile(path, maxPEMFile)
	if err != nil {
		return nil, FileError(field, path, nil, err)
	}
	if err := FileError(field, path, b, nil); err != nil {
		clear(b)
		return nil, err
	}
	return b, nil
}

// FileError returns New's error for the PEM file path of field, read by
// ReadRegularFile as b or as err: err in a *ConfigError, or for a file that
// is empty or has a -----BEGIN line and no block ends, or that starts with a
// byte order mark (bomError), one that says so; nil for any other b. A file
// not there (by an absolute path: a relative one is most likely read from
// another working directory than meant, which no mount mends), empty, or cut
// is ErrNotReady: a mount or a write still to come makes it right. Such a file
// is refused all the same, as it was before: no PEM block in it means none of
// the three loads. The agent's tunnel.ca_file is told apart by the same rule.
func FileError(field, path string, b []byte, err error) *ConfigError {
	if err != nil {
		return &ConfigError{Field: field, Err: err, notReady: errors.Is(err, fs.ErrNotExist) && filepath.IsAbs(path)}
	}
	why := ""
	switch {
	case len(bytes.TrimSpace(b)) == 0:
		why = "is empty"
	case bytes.Contains(b, []byte("-----BEGIN ")) && !bytes.Contains(b, []byte("-----END ")):
		why = "ends before its -----END line"
	default:
		if err := bomError(path, b); err != nil {
			return &ConfigError{Field: field, Err: err}
		}
		return nil
	}
	return &ConfigError{Field: field, notReady: true, Err: errors.New(path + " " + why + " (not written whole yet?)")}
}

// keyReads reports whether the first private key in keyPEM parses, as
// tls.X509KeyPair parses it (PKCS#1, PKCS#8, SEC 1).
func keyReads(keyPEM []byte) bool {
	for rest := keyPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return false
		}
		if block.Type == "PRIVATE KEY" || strings.HasSuffix(block.Type, " PRIVATE KEY") {
			_, err1 := x509.ParsePKCS1PrivateKey(block.Bytes)
			_, err8 := x509.ParsePKCS8PrivateKey(block.Bytes)
			_, errEC := x509.ParseECPrivateKey(block.Bytes)
			return err1 == nil || err8 == nil || errEC == nil
		}
	}
}

// utf8BOM is the byte order mark a Windows editor may put at the start of a
// file: a PEM file must start with its -----BEGIN line, and Go's PEM decoder
// (as OpenSSL's) finds no block there.
const utf8BOM = "\xef\xbb\xbf"

// bomError says that the PEM file path starts with a byte order mark: a
// Windows editor's UTF-8 one, or UTF-16's (the file is saved as UTF-16).
func bomError(path string, b []byte) error {
	for _, bom := range utf16BOMs {
		if bytes.HasPrefix(b, []byte(bom)) {
			return errors.New(path + " is saved as UTF-16 (as Windows Notepad's \"Unicode\"), not as plain text: save it as UTF-8 " +
				"or convert it (iconv -f UTF-16 -t UTF-8 " + path + " > NEW_FILE)")
		}
	}
	if !bytes.HasPrefix(b, []byte(utf8BOM)) {
		return nil
	}
	return errors.New(path + " starts with a UTF-8 byte order mark (as some Windows editors save files), before its -----BEGIN line: " +
		"remove those three bytes (sed -i '1s/^\\xEF\\xBB\\xBF//' " + path + ")")
}

// utf16BOMs are the byte order marks of a file saved as UTF-16 (Windows
// Notepad's "Unicode"): every other byte of its text is a zero, and no PEM
// decoder finds a block in it.
var utf16BOMs = [...]string{"\xff\xfe", "\xfe\xff"}

// notPEM says why b, read from path, holds no PEM block when it can tell: a
// file in DER, the binary form (openssl's -outform DER, a .der or .cer file),
// which convert (openssl x509 or openssl pkey) turns into PEM (a file saved as
// UTF-16 is refused as read: FileError). nil when b holds a PEM block or is
// not in DER.
func notPEM(path string, b []byte, convert string) error {
	if block, _ := pem.Decode(b); block != nil {
		return nil
	}
	if len(b) > 0 && b[0] == 0x30 { // an ASN.1 SEQUENCE, as every certificate and key in DER
		return errors.New(path + " is in DER (binary) form; the agent reads PEM (text between -----BEGIN and -----END lines): " +
			"convert it with " + convert + " -inform DER -in " + path + " -out NEW_FILE.pem")
	}
	return nil
}

// onlyCert reports whether every certificate in caPEM is der: the device's own
// certificate where the CA belongs, which no broker's certificate chains to.
func onlyCert(caPEM, der []byte) bool {
	found := false
	for rest := caPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return found
		}
		if block.Type == "CERTIFICATE" {
			if !bytes.Equal(block.Bytes, der) {
				return false
			}
			found = true
		}
	}
}

// firstCert parses the first certificate of certPEM, or returns nil.
func firstCert(certPEM []byte) *x509.Certificate {
	for rest := certPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return nil
		}
		if block.Type == "CERTIFICATE" {
			cert, _ := x509.ParseCertificate(block.Bytes)
			return cert
		}
	}
}

// keyFileProblem says what tls.X509KeyPair would only call "failed to parse
// private key", or report as a problem of the certificate: a key encrypted
// with a passphrase or in OpenSSH's format, a file in DER, a file with no
// private key (a certificate: the two files swapped). It looks at the first
// private key block, as X509KeyPair does; nil leaves the rest to X509KeyPair.
func keyFileProblem(path string, b []byte) error {
	if err := notPEM(path, b, "openssl pkey"); err != nil {
		return err
	}
	var types []string
	for rest := b; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			if len(types) == 0 {
				return errors.New(path + " holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
			}
			msg := path + " holds no private key, only " + strings.Join(types, ", ")
			for _, t := range types {
				if t == "CERTIFICATE" {
					msg += ": the certificate and key files may be swapped"
					break
				}
			}
			return errors.New(msg)
		}
		types = append(types, block.Type)
		switch {
		case block.Type == "ENCRYPTED PRIVATE KEY" ||
			strings.HasSuffix(block.Type, " PRIVATE KEY") && strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"):
			return errors.New(path + " is encrypted with a passphrase, which the agent has no way to be given: " +
				"store the key decrypted, readable by root only (openssl pkey -in " + path + " -out NEW_FILE; chmod 600 NEW_FILE)")
		case block.Type == "OPENSSH PRIVATE KEY":
			return errors.New(path + " is a key in OpenSSH's format; the agent takes a PEM key (PKCS#8, PKCS#1 or SEC1, as AWS IoT " +
				"and openssl write them): convert a copy with ssh-keygen -p -N '' -m PKCS8 -f COPY")
		case block.Type == "PRIVATE KEY" || strings.HasSuffix(block.Type, " PRIVATE KEY"):
			return nil
		}
	}
}

// laterCertMatches reports whether a certificate after the first one in
// certPEM is the one of keyPEM: a chain written intermediate first.
func laterCertMatches(certPEM, keyPEM []byte) bool {
	first := true
	for rest := certPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return false
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if first {
			first = false
			continue
		}
		if _, err := tls.X509KeyPair(pem.EncodeToMemory(block), keyPEM); err == nil {
			return true
		}
	}
}

// filesStamp tells whether files changed: the inode, size, modification and
// status change times of each, as stat(2) sees them through links. The inode
// and ctime catch what size and mtime alone miss: a renewed EC key has the
// same size, and cp -p, tar or rsync -t keep the old modification time.
type filesStamp [3]struct {
	ino          uint64
	size         int64
	mtime, ctime time.Time
}

func stampFiles(paths ...string) (st filesStamp) {
	for i, p := range paths[:len(st)] {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		st[i].size, st[i].mtime = fi.Size(), fi.ModTime()
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st[i].ino, st[i].ctime = uint64(sys.Ino), time.Unix(int64(sys.Ctim.Sec), int64(sys.Ctim.Nsec))
		}
	}
	return st
}

// reloadTLS reads the CA, certificate and key files again if they changed
// since they were last read, before a connection to the broker: a certificate
// renewed in place (by a provisioning job, an OTA step) is used from the next
// connection on, without a restart. A connection that is up keeps the
// certificate it was made with. Files that fail to load (a key not written yet
// beside its new certificate, a typo) are reported once per change, and the
// listener keeps the configuration it has. So it does, as tunneld on SIGHUP,
// while the new certificate is out of its dates and the one in use is not (a
// stale backup put back, an expired copy): the broker would refuse it. It is
// used once either changes: the one in use out of its dates too, or the new
// one valid (a fresh certificate that a clock some minutes behind sees as not
// valid yet).
func (l *Listener) reloadTLS() {
	if stamp := stampFiles(l.cfg.CAFile, l.cfg.CertFile, l.cfg.KeyFile); stamp != l.tlsSeen {
		l.tlsSeen, l.tlsNext = stamp, nil
		tc, err := newTLSConfig(l.cfg)
		if err != nil {
			// The error names the file; the Config field it also names means
			// nothing in a log an administrator reads (the agent's keys differ).
			var ce *ConfigError
			if errors.As(err, &ce) {
				err = ce.Err
			}
			l.log.Warn("mqtt certificate files changed but do not load; connecting with the ones read before", "error", err)
			return
		}
		l.tlsNext = tc
		if why := l.outOfDate(certLeaf(tc)); why != "" && l.outOfDate(certLeaf(l.tls)) == "" {
			leaf, cur := certLeaf(tc), certLeaf(l.tls)
			l.log.Warn("mqtt certificate file changed to a certificate that "+why+"; connecting with the one read before until either changes",
				"cert_file", l.cfg.CertFile, "not_before", utc(leaf.NotBefore), "not_after", utc(leaf.NotAfter),
				"clock", utc(l.clock()), "in_use_not_after", utc(cur.NotAfter))
		}
	}
	tc := l.tlsNext
	if tc == nil || l.outOfDate(certLeaf(tc)) != "" && l.outOfDate(certLeaf(l.tls)) == "" {
		return
	}
	l.tls, l.tlsNext = tc, nil
	attrs := []any{"cert_file", l.cfg.CertFile}
	if leaf := certLeaf(tc); leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "not_after", utc(leaf.NotAfter))
	}
	l.log.Info("mqtt certificate files changed: read again", attrs...)
}

// outOfDate says why leaf is not valid by the clock ("has expired", "is not
// valid yet"), or "" if it is, if leaf is nil, or if the clock is before this
// binary was built: a clock not set yet tells nothing about dates.
func (l *Listener) outOfDate(leaf *x509.Certificate) string {
	now := l.clock()
	switch {
	case leaf == nil || now.Before(buildTime()):
		return ""
	case now.After(leaf.NotAfter):
		return "has expired"
	case now.Before(leaf.NotBefore):
		return "is not valid yet"
	}
	return ""
}

// maxPEMFile bounds each certificate or key file: a CA bundle of every public
// root is ~220 KiB.
const maxPEMFile = 1 << 20

// ReadRegularFile reads path, which must be a regular file of at most limit
// bytes: a device with 64 MB of RAM must not read a wrong path such as /dev/zero
// until the OOM killer comes. It opens without blocking, so that a FIFO in the
// way is refused instead of waited on. The agent reads its config with it too,
// and checks its mode in the returned FileInfo: that of the file read, not of
// whatever the path names a moment later.
func ReadRegularFile(path string, limit int64) ([]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, errors.New(path + " is not a regular file but a " + fileKind(fi.Mode()))
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(b)) > limit {
		clear(b)
		return nil, nil, fmt.Errorf("%s is larger than %d KiB", path, limit>>10)
	}
	return b, fi, nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// certLeaf returns the parsed client certificate of cfg, or nil.
func certLeaf(cfg *tls.Config) *x509.Certificate {
	if len(cfg.Certificates) == 0 {
		return nil
	}
	return cfg.Certificates[0].Leaf // set by tls.X509KeyPair since Go 1.23
}

// clockLooksWrong reports whether err is a certificate validity error
// while now is before built: the certificate is fine, the clock is not.
func clockLooksWrong(err error, now, built time.Time) bool {
	var inv x509.CertificateInvalidError
	return errors.As(err, &inv) && inv.Reason == x509.Expired && now.Before(built)
}

// tlsHint explains a failed TLS connection attempt in operator terms, or
// returns "". It names the files by their role and path, and the broker by the
// name checked, never by Config's field names, which mean nothing to whoever
// reads the log: the caller's settings have names of their own (the agent's
// are mqtt.ca_file, mqtt.cert_file and mqtt.endpoint), and the path is what
// the operator wrote there.
func tlsHint(err error, now, built time.Time, c Config) string {
	var (
		inv      x509.CertificateInvalidError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		op       *net.OpError
		dns      *net.DNSError
	)
	switch {
	case clockLooksWrong(err, now, built):
		return "the system clock looks wrong: it says " + utc(now) + ", before this binary was built (" + utc(built) + "); " +
			"certificates cannot be checked until the clock is set (NTP, RTC); retrying"
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return "the broker's certificate has expired or is not yet valid (clock " + utc(now) + ")"
	case errors.As(err, &unknown) && legacyAWSEndpoint(c.ServerName):
		return "the broker's certificate is not signed by a CA in the CA file " + c.CAFile + ": " + legacyEndpointText(c.ServerName)
	case errors.As(err, &unknown):
		return "the broker's certificate is not signed by a CA in the CA file " + c.CAFile +
			" (for AWS IoT Core: Amazon Root CA 1)"
	case errors.As(err, &hostname):
		return fmt.Sprintf("the broker's certificate is not valid for %q, the host name of the broker endpoint: "+
			"use a name the certificate holds in its subjectAltName (for AWS IoT Core, the account's endpoint: aws iot describe-endpoint --endpoint-type iot:Data-ATS); "+
			"a certificate that names its host only in the Common Name must be reissued with subjectAltName=DNS:NAME (Go no longer reads the Common Name)", c.ServerName)
	case errors.As(err, &dns) && strings.HasSuffix(dns.Err, "connection refused"):
		// No resolver listens where resolv.conf points, or there is no
		// resolv.conf (Go then asks 127.0.0.1 and ::1): each lookup fails
		// at once, as if the broker's name did not resolve.
		return "no DNS server answers at " + dns.Server + ": check that /etc/resolv.conf names one " +
			"(Go asks 127.0.0.1 and ::1 when it names none or is missing) and that it runs (OpenWrt: dnsmasq)"
	case alpnRefused(err) && strings.Join(c.ALPN, ",") == AWSALPN:
		// A front end at 443 (a load balancer, an HTTPS server, another
		// broker's WebSocket port) that does not speak AWS IoT's protocol;
		// the device certificate was never looked at.
		return "the server at port 443 does not accept " + AWSALPN + ", the ALPN protocol of AWS IoT Core's MQTT at port 443, " +
			"which the agent offers there: a broker that is not AWS IoT Core is to be reached at port 8883"
	case alpnRefused(err):
		return "the server does not accept the ALPN protocols offered: " + strings.Join(c.ALPN, ", ")
	case errors.As(err, &op) && op.Op == "remote error": // a TLS alert from the broker
		return "the broker refused the TLS handshake: check that it trusts the issuer of the device certificate " + c.CertFile +
			" and that the certificate is active and not expired"
	}
	return ""
}

// alpnRefused reports whether err is the server's no_application_protocol
// alert (RFC 7301 §3.2): it takes none of the ALPN protocols offered.
// crypto/tls reads an alert into a type of its own, known by its text only.
func alpnRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" && op.Err.Error() == "tls: no application protocol"
}

// legacyAWSEndpoint reports whether host is an AWS IoT Core data endpoint of
// the legacy type (iot:Data, what aws iot describe-endpoint returns without
// --endpoint-type): PREFIX.iot.REGION.amazonaws.com[.cn], where the ATS one is
// PREFIX-ats.iot.REGION.amazonaws.com (PREFIX.ats.iot.REGION.amazonaws.com.cn).
// Its certificate is signed by a Symantec (VeriSign) CA, not by Amazon Root CA 1.
func legacyAWSEndpoint(host string) bool {
	l := strings.Split(strings.TrimSuffix(strings.ToLower(host), "."), ".")
	switch {
	case len(l) == 5 && l[3] == "amazonaws" && l[4] == "com":
	case len(l) == 6 && l[3] == "amazonaws" && l[4] == "com" && l[5] == "cn":
	default:
		return false
	}
	return l[1] == "iot" && !strings.HasSuffix(l[0], "-ats")
}

func legacyEndpointText(host string) string {
	return host + " is AWS IoT Core's legacy endpoint (iot:Data), whose certificate is signed by a Symantec (VeriSign) CA, " +
		"not by Amazon Root CA 1: use the account's ATS endpoint instead (aws iot describe-endpoint --endpoint-type iot:Data-ATS)"
}

// EndpointWarning says what is wrong with broker, an endpoint as Config.Broker
// takes it, that still lets it work: AWS IoT Core's legacy endpoint, which
// needs a CA that AWS no longer recommends. "" when nothing is.
func EndpointWarning(broker string) string {
	addr, err := parseBroker(broker)
	if err != nil || !legacyAWSEndpoint(addr.host) {
		return ""
	}
	return legacyEndpointText(addr.host)
}
