package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClockLooksWrong(t *testing.T) {
	p := newPKI(t)
	certFile, _ := serverCert(t, p, "server", time.Time{})
	pair, err := tls.LoadX509KeyPair(certFile, strings.TrimSuffix(certFile, ".pem")+".key")
	if err != nil {
		t.Fatal(err)
	}
	verifyAt := func(now time.Time) error {
		_, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: p.Pool(), CurrentTime: now})
		return err
	}
	built := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	boot := time.Date(1970, 1, 1, 0, 0, 42, 0, time.UTC) // a router without RTC

	if err := verifyAt(boot); !clockLooksWrong(err, boot, built) {
		t.Errorf("clockLooksWrong(%v, 1970) = false, want true", err)
	}
	if hint := tlsHint(verifyAt(boot), boot, built, Config{}); !strings.Contains(hint, "system clock looks wrong") ||
		!strings.Contains(hint, "1970-01-01T00:00:42Z") || !strings.Contains(hint, "2026-01-01T00:00:00Z") {
		t.Errorf("tlsHint = %q, want the clock and the build time", hint)
	}
	// A clock after the build: the certificate really is expired.
	later := time.Now().Add(48 * time.Hour)
	if err := verifyAt(later); clockLooksWrong(err, later, built) {
		t.Errorf("clockLooksWrong(%v, later) = true, want false", err)
	}
	if hint := tlsHint(verifyAt(later), later, built, Config{}); !strings.Contains(hint, "expired or is not yet valid") {
		t.Errorf("tlsHint = %q, want an expiry hint", hint)
	}
	// Another CA: not a clock problem.
	other := newPKI(t)
	_, err = pair.Leaf.Verify(x509.VerifyOptions{Roots: other.Pool()})
	if clockLooksWrong(err, boot, built) {
		t.Errorf("clockLooksWrong(%v) = true for an unknown authority", err)
	}
	if hint := tlsHint(err, time.Now(), built, Config{CAFile: "/etc/ca.pem"}); !strings.Contains(hint, "not signed by a CA in the CA file /etc/ca.pem") {
		t.Errorf("tlsHint = %q, want an unknown-CA hint", hint)
	}
}

// The hints are read by operators, who know the settings by their own names
// (the agent's mqtt.ca_file, ...) and the paths they wrote: no hint names a
// field of Config, and none names a setting the caller may not have.
func TestTLSHintsNameNoFields(t *testing.T) {
	c := Config{CAFile: "/etc/porthole/ca.pem", CertFile: "/etc/porthole/dev.crt", ServerName: "broker.example"}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"unknown CA", x509.UnknownAuthorityError{}, "the CA file /etc/porthole/ca.pem"},
		{"host name", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "broker.example"}, `not valid for "broker.example", the host name of the broker endpoint`},
		// mosquitto-tls(7) still has the host name put in the Common Name,
		// which Go has not read since 1.15: "use a name the certificate
		// holds" said nothing of the kind.
		{"host name in the Common Name", x509.HostnameError{Certificate: &x509.Certificate{Subject: pkix.Name{CommonName: "broker.example"}}, Host: "broker.example"}, `reissued with subjectAltName=DNS:NAME`},
		{"alert", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, "the device certificate /etc/porthole/dev.crt"},
	} {
		hint := tlsHint(tc.err, time.Now(), time.Time{}, c)
		if !strings.Contains(hint, tc.want) {
			t.Errorf("%s: tlsHint = %q, want %q in it", tc.name, hint, tc.want)
		}
		for _, field := range []string{"CAFile", "CertFile", "KeyFile", "ServerName", "Broker"} {
			if strings.Contains(hint, field) {
				t.Errorf("%s: tlsHint = %q names the Go field %s", tc.name, hint, field)
			}
		}
	}
}

func TestBuildTime(t *testing.T) {
	defer func(old string) { BuildTime = old }(BuildTime)
	BuildTime = ""
	if got := buildTime(); !got.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("buildTime() = %v with BuildTime unset, want 2026-01-01", got)
	}
	BuildTime = "2027-03-04T05:06:07Z"
	if got := buildTime(); !got.Equal(time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC)) {
		t.Errorf("buildTime() = %v, want 2027-03-04T05:06:07Z", got)
	}
}

// TestClockLooksWrongLogged connects to a TLS server whose certificate is
// not valid yet while the clock is before the build time: the log says the
// clock looks wrong, and the listener keeps retrying.
func TestClockLooksWrongLogged(t *testing.T) {
	defer func(old string) { BuildTime = old }(BuildTime)
	// The clock is "before the build" and the certificate starts tomorrow,
	// as a 1970 clock sees every certificate.
	BuildTime = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	p := newPKI(t)
	cert, key := serverCert(t, p, "server-future", time.Now().Add(24*time.Hour))
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	defer wg.Wait()
	defer ln.Close()

	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, ln.Addr().(*net.TCPAddr).String(), "thing-a", log))
	stop := runListener(t, l)
	rec.waitFor("mqtt connect failed; retrying: the system clock looks wrong", "clock=", "built=")
	rec.waitCount(2, "mqtt connect failed; retrying") // and it retries
	stop()
}

// The mistakes made when a device's key and certificate are first put in
// place each get an error that names the file at fault, under the field it
// comes from, and says what to do: not Go's "tls: failed to parse private key"
// under CertFile.
func TestKeyAndCertFileMistakesSayWhatToDo(t *testing.T) {
	p := newPKI(t)
	cert, key := p.Client(t, "thing-a")
	good := Config{ThingName: "thing-a", Broker: "127.0.0.1:8883", CAFile: p.CAFile, CertFile: cert, KeyFile: key}
	dir := t.TempDir()
	write := func(name string, b []byte) string { return writeIn(t, dir, name, b) }
	read := func(f string) []byte {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bom := []byte("\xef\xbb\xbf")
	block := func(typ string, headers map[string]string) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Headers: headers, Bytes: []byte("not a key, but the type says what it is")})
	}
	// openssl genrsa -aes256 / openssl ec -aes256: a PEM with Proc-Type.
	legacy := write("legacy.key", block("EC PRIVATE KEY", map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"}))
	// openssl pkcs8 -topk8 (with a passphrase), openssl genpkey -aes256.
	pkcs8 := write("pkcs8.key", block("ENCRYPTED PRIVATE KEY", nil))
	// ssh-keygen's own format.
	openssh := write("openssh.key", block("OPENSSH PRIVATE KEY", nil))
	// Saved by a Windows editor.
	bomKey := write("bom.key", append(append([]byte{}, bom...), read(key)...))
	bomCert := write("bom.crt", append(append([]byte{}, bom...), read(cert)...))
	bomCA := write("bomca.crt", append(append([]byte{}, bom...), read(p.CAFile)...))
	// A chain with the intermediate (here the CA) first, the device certificate second.
	reversed := write("reversed.crt", append(read(p.CAFile), read(cert)...))

	tests := []struct {
		name   string
		modify func(*Config)
		field  string
		want   []string
	}{
		{"encrypted PEM", func(c *Config) { c.KeyFile = legacy }, "KeyFile", []string{legacy, "encrypted", "openssl pkey -in " + legacy}},
		{"encrypted PKCS#8", func(c *Config) { c.KeyFile = pkcs8 }, "KeyFile", []string{pkcs8, "encrypted", "openssl pkey -in " + pkcs8}},
		{"OpenSSH key", func(c *Config) { c.KeyFile = openssh }, "KeyFile", []string{openssh, "OpenSSH", "ssh-keygen"}},
		{"key with a BOM", func(c *Config) { c.KeyFile = bomKey }, "KeyFile", []string{bomKey, "byte order mark"}},
		{"certificate with a BOM", func(c *Config) { c.CertFile = bomCert }, "CertFile", []string{bomCert, "byte order mark"}},
		{"CA with a BOM", func(c *Config) { c.CAFile = bomCA }, "CAFile", []string{bomCA, "byte order mark"}},
		{"chain with the intermediate first", func(c *Config) { c.CertFile = reversed }, "CertFile", []string{reversed, "first"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.modify(&cfg)
			wantConfigError(t, cfg, tc.field, tc.want...)
		})
	}
}

// An IPv6 address needs brackets around it before a port: "::1:8883" is no
// host a device can reach, and was dialled as [::1:8883]:8883 (a DNS look-up
// retried for good) while check-config said ok.
func TestBrokerIPv6WithoutBrackets(t *testing.T) {
	for _, broker := range []string{"::1:28883", "fd00::1:8883x", "mqtts://::1:8883", "[::1:28883]"} {
		_, err := parseBroker(broker)
		if err == nil || !strings.Contains(err.Error(), "brackets") {
			t.Errorf("parseBroker(%q) = %v, want an error saying an IPv6 address needs brackets", broker, err)
		}
	}
	for _, broker := range []string{"[::1]:8883", "[fe80::1%eth0]:8883", "mqtts://[::1]:8883", "[::1]"} {
		if _, err := parseBroker(broker); err != nil {
			t.Errorf("parseBroker(%q) = %v", broker, err)
		}
	}
}

// AWS IoT's legacy data endpoint (what aws iot describe-endpoint returns
// without --endpoint-type) serves a certificate of a Symantec (VeriSign) CA.
// With Amazon Root CA 1 in the CA file, as every AWS guide has it, the
// handshake fails with an unknown authority: the hint must point at the
// endpoint, not tell the operator to use the CA file they already have.
func TestLegacyAWSEndpointHint(t *testing.T) {
	for _, tc := range []struct {
		host   string
		legacy bool
	}{
		{"a1b2c3d4e5f6g7.iot.eu-west-1.amazonaws.com", true},
		{"A1B2C3D4E5F6G7.IOT.eu-west-1.amazonaws.com.", true},
		{"a1b2c3d4e5f6g7.iot.cn-north-1.amazonaws.com.cn", true},
		{"a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com", false},
		{"a1b2c3d4e5f6g7.ats.iot.cn-north-1.amazonaws.com.cn", false},
		{"data.iot-fips.us-east-1.amazonaws.com", false},
		{"iot.example.com", false},
		{"127.0.0.1", false},
	} {
		c := Config{CAFile: "/etc/porthole/AmazonRootCA1.pem", ServerName: tc.host}
		hint := tlsHint(x509.UnknownAuthorityError{}, time.Now(), time.Time{}, c)
		if got := strings.Contains(hint, "--endpoint-type iot:Data-ATS"); got != tc.legacy {
			t.Errorf("%s: tlsHint = %q; names the ATS endpoint: %v, want %v", tc.host, hint, got, tc.legacy)
		}
		w := EndpointWarning(tc.host + ":8883")
		if got := strings.Contains(w, "legacy") && strings.Contains(w, "iot:Data-ATS"); got != tc.legacy {
			t.Errorf("EndpointWarning(%s) = %q, want a legacy-endpoint warning: %v", tc.host, w, tc.legacy)
		}
	}
}

// A device certificate and key put in place by hand: a CA certificate where
// the device certificate belongs, or a file in DER rather than PEM, each gets
// an error that names the one file at fault and says what to do.
func TestProvisioningFileMistakes(t *testing.T) {
	p := newPKI(t)
	cert, key := p.Client(t, "thing-a")
	good := Config{ThingName: "thing-a", Broker: "127.0.0.1:8883", CAFile: p.CAFile, CertFile: cert, KeyFile: key}
	dir := t.TempDir()
	der := func(name, f string) string {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(b)
		out := filepath.Join(dir, name)
		if err := os.WriteFile(out, block.Bytes, 0o600); err != nil {
			t.Fatal(err)
		}
		return out
	}
	derCert, derKey, derCA := der("device.der", cert), der("device-key.der", key), der("ca.der", p.CAFile)
	utf16 := filepath.Join(dir, "ca-utf16.pem")
	b, _ := os.ReadFile(p.CAFile)
	u := []byte{0xff, 0xfe}
	for _, c := range b {
		u = append(u, c, 0)
	}
	os.WriteFile(utf16, u, 0o600)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(pair.Leaf.PublicKey)
	pubKey, empty := filepath.Join(dir, "public.key"), filepath.Join(dir, "empty.key")
	os.WriteFile(pubKey, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
	os.WriteFile(empty, nil, 0o600)
	caIsCert := filepath.Join(dir, "ca-is-device.pem")
	b, _ = os.ReadFile(cert)
	os.WriteFile(caIsCert, b, 0o600)

	for _, tc := range []struct {
		name   string
		modify func(*Config)
		field  string
		want   []string
	}{
		{"CA certificate as the device certificate", func(c *Config) { c.CertFile = p.CAFile }, "CertFile",
			[]string{p.CAFile, "holds a CA certificate", "not the device certificate"}},
		{"DER certificate", func(c *Config) { c.CertFile = derCert }, "CertFile",
			[]string{derCert, "DER", "openssl x509 -inform DER -in " + derCert}},
		{"DER key", func(c *Config) { c.KeyFile = derKey }, "KeyFile",
			[]string{derKey, "DER", "openssl pkey -inform DER -in " + derKey}},
		{"DER CA", func(c *Config) { c.CAFile = derCA }, "CAFile",
			[]string{derCA, "DER", "openssl x509 -inform DER -in " + derCA}},
		{"UTF-16 CA", func(c *Config) { c.CAFile = utf16 }, "CAFile",
			[]string{utf16, "UTF-16"}},
		// The key file holding the certificate: said of the key file (the
		// first one checked), not of the certificate file.
		{"device certificate as the CA", func(c *Config) { c.CAFile = caIsCert }, "CAFile",
			[]string{caIsCert, "holds the device certificate", "Amazon Root CA 1"}},
		{"certificate and key swapped", func(c *Config) { c.CertFile, c.KeyFile = key, cert }, "KeyFile",
			[]string{cert, "holds no private key", "swapped"}},
		{"public key as the key", func(c *Config) { c.KeyFile = pubKey }, "KeyFile",
			[]string{pubKey, "holds no private key, only PUBLIC KEY"}},
		{"empty key", func(c *Config) { c.KeyFile = empty }, "KeyFile",
			[]string{empty, "is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.modify(&cfg)
			wantConfigError(t, cfg, tc.field, tc.want...)
			// The other files are fine: the error names only the one at fault.
			_, err := New(cfg)
			for _, f := range []string{cfg.CAFile, cfg.CertFile, cfg.KeyFile} {
				if f != tc.want[0] && err != nil && strings.Contains(err.Error(), f) {
					t.Errorf("New = %v, names %s, which is fine", err, f)
				}
			}
		})
	}
}

// ${iot:Connection.Thing.ThingName} resolves only when the MQTT client id is
// the thing name (AWS IoT, thing policy variables): with another client id,
// the hint that suggests the variable must say so.
func TestSubscribeHintClientID(t *testing.T) {
	e := &SubscribeError{Thing: "dev-1", ClientID: "dev-1-client", Topic: "$aws/things/dev-1/tunnels/notify", Reason: 0x87}
	if msg := e.Error(); !strings.Contains(msg, `the client id is "dev-1-client"`) {
		t.Errorf("SubscribeError = %q, want it to say the client id differs from the thing name", msg)
	}
	e.ClientID = "dev-1"
	if msg := e.Error(); strings.Contains(msg, "client id") {
		t.Errorf("SubscribeError = %q names the client id, which is the thing name", msg)
	}
}

// TestExpiredClientCertificateSaid: a device certificate that has expired
// while the agent ran. Mosquitto (TLS 1.3) refuses it after the client's
// handshake: the listener reads the broker's alert or, about one attempt in
// ten, a reset connection. This stand-in broker always resets. Either way the
// log line names the expiry, which the listener can see itself.
func TestExpiredClientCertificateSaid(t *testing.T) {
	p := newPKI(t)
	addr := standInBroker(t, p.ServerTLS(t, "broker"), func(c net.Conn) {
		tc := c.(*tls.Conn)
		tc.Handshake()
		if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
			tcp.SetLinger(0) // a reset, as after a refused client certificate
		}
		tc.NetConn().Close()
	})
	log, rec := newLogRecorder(t)
	cfg := testConfig(t, p, addr, "thing-a", log)
	cfg.CertFile, cfg.KeyFile = p.ClientAt(t, "thing-a", time.Now().Add(-48*time.Hour))
	l := newListener(t, cfg)
	runListener(t, l)
	if line := rec.waitFor("mqtt connect failed"); !strings.Contains(line, "the device certificate "+cfg.CertFile+" is valid from ") || !strings.Contains(line, ", not now: renew it") {
		t.Errorf("the device certificate expired a day ago; the log does not say so:\n%s", line)
	}
}

// TestClockAheadBlamesBrokerCert: a clock years ahead (an RTC with garbage, a
// typo in date -s) fails the agent's own check of the broker's certificate,
// before the broker sees the device's. The hint is about the broker's
// certificate and the clock, not a renewal of the device certificate, which
// looks expired by the same clock.
func TestClockAheadBlamesBrokerCert(t *testing.T) {
	p := newPKI(t)
	addr := standInBroker(t, p.ServerTLS(t, "broker"), func(c net.Conn) { c.(*tls.Conn).Handshake(); c.Close() })
	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, addr, "thing-a", log))
	ahead := time.Now().AddDate(10, 0, 0)
	l.now = func() time.Time { return ahead }      // the agent's clock
	l.tls.Time = func() time.Time { return ahead } // crypto/tls reads the same system clock
	runListener(t, l)
	line := rec.waitFor("mqtt connect failed")
	if !strings.Contains(line, "the broker's certificate has expired or is not yet valid") ||
		!strings.Contains(line, "the clock may be wrong") || strings.Contains(line, "renew it") {
		t.Errorf("with the clock ten years ahead, the broker's certificate fails the agent's check; the log says:\n%s\nwant the broker's certificate and the clock named, no renewal of the device's", line)
	}
}

// TestALPNRefusedExplained: at port 443 the agent offers AWS IoT Core's ALPN
// protocol, x-amzn-mqtt-ca; a server there that does not take it (a load
// balancer, another broker's WebSocket port) answers no_application_protocol,
// an alert, before any certificate is looked at. The hint says so and not
// that the broker refused the device certificate.
func TestALPNRefusedExplained(t *testing.T) {
	p := newPKI(t)
	srv := p.ServerTLS(t, "front-end")
	srv.NextProtos = []string{"h2", "http/1.1"}
	addr := standInBroker(t, srv, func(c net.Conn) { c.(*tls.Conn).Handshake(); c.Close() })
	log, rec := newLogRecorder(t)
	cfg := testConfig(t, p, addr, "thing-a", log)
	cfg.ALPN = []string{AWSALPN} // as at port 443
	runListener(t, newListener(t, cfg))
	line := rec.waitFor("mqtt connect failed")
	if !strings.Contains(line, "does not accept x-amzn-mqtt-ca") || !strings.Contains(line, "at port 8883") || strings.Contains(line, "device certificate") {
		t.Errorf("a server that refuses the ALPN protocol x-amzn-mqtt-ca is reported as:\n%s\nwant: it does not accept x-amzn-mqtt-ca, a broker that is not AWS IoT Core at port 8883", line)
	}
}

// A certificate put on disk that is out of its dates (a stale backup restored,
// an expired copy) does not replace a valid one, as tunneld's SIGHUP reload
// does not: the broker would refuse it. One WARN names the file and its dates;
// the certificate is used once the one in use is out of date too. A fresh one
// that a clock some minutes behind sees as not valid yet is used once it is,
// and at once while the clock is before the build (not set: dates tell
// nothing).
func TestOutOfDateCertificateKept(t *testing.T) {
	defer func(old string) { BuildTime = old }(BuildTime)
	BuildTime = ""
	p := newPKI(t)
	log, rec := newLogRecorder(t)
	cfg := testConfig(t, p, "127.0.0.1:1", "thing-a", log)
	l := newListener(t, cfg)
	now := time.Now()
	l.now = func() time.Time { return now }
	inUse := func() string { return certLeaf(l.tls).SerialNumber.String() }
	// put writes a certificate valid for 25 hours from notBefore over the
	// listener's files, as a renewal job would, and returns its serial.
	put := func(notBefore time.Time) string {
		t.Helper()
		cert, key := p.ClientAt(t, "thing-a", notBefore)
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, mv := range [][2]string{{cert, cfg.CertFile}, {key, cfg.KeyFile}} {
			if err := os.Rename(mv[0], mv[1]); err != nil {
				t.Fatal(err)
			}
		}
		return pair.Leaf.SerialNumber.String()
	}

	first := inUse()
	expiredAt := now.Add(-48 * time.Hour)
	expired := put(expiredAt)
	for range 2 {
		l.reloadTLS()
		if got := inUse(); got != first {
			t.Fatalf("an expired certificate put over a valid one: in use %s, want the valid %s", got, first)
		}
	}
	want := []string{"mqtt certificate file changed to a certificate that has expired", "cert_file=" + cfg.CertFile,
		"not_after=" + expiredAt.Add(25*time.Hour).UTC().Format(time.RFC3339)}
	if n := rec.count(want...); n != 1 {
		t.Errorf("%d warnings %q, want 1", n, want)
	}
	now = now.Add(48 * time.Hour) // the one in use has expired too
	l.reloadTLS()
	if got := inUse(); got != expired {
		t.Errorf("both expired: in use %s, want the one on disk %s", got, expired)
	}

	now = time.Now()
	valid := put(now.Add(-time.Hour))
	l.reloadTLS()
	if got := inUse(); got != valid {
		t.Fatalf("a valid certificate put over an expired one: in use %s, want %s", got, valid)
	}
	fresh := put(now.Add(10 * time.Minute)) // issued now, by a clock 10 minutes behind
	l.reloadTLS()
	if got := inUse(); got != valid {
		t.Errorf("a certificate not valid yet put over a valid one: in use %s, want the valid %s", got, valid)
	}
	if n := rec.count("is not valid yet", "cert_file="+cfg.CertFile); n != 1 {
		t.Errorf("%d warnings that the certificate is not valid yet, want 1", n)
	}
	now = now.Add(11 * time.Minute)
	l.reloadTLS()
	if got := inUse(); got != fresh {
		t.Errorf("once valid: in use %s, want %s", got, fresh)
	}

	BuildTime = now.Add(24 * time.Hour).UTC().Format(time.RFC3339) // the clock is before the build
	next := put(now.Add(time.Hour))
	l.reloadTLS()
	if got := inUse(); got != next {
		t.Errorf("with a clock not set yet: in use %s, want the one on disk %s", got, next)
	}
}

// readConnect reads the agent's CONNECT for a stand-in broker: its fixed
// header, then as many bytes as its remaining length (one byte of it: the
// agent's is short).
func readConnect(c net.Conn) bool {
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[1]&0x80 != 0 {
		return false
	}
	_, err := io.ReadFull(c, make([]byte, hdr[1]))
	return err == nil
}

// TestBrokerWithoutMQTT5Explained: a broker that speaks MQTT 3.1.1 only
// (Mosquitto before 1.6, still on old OpenWrt images) answers the agent's
// MQTT 5 CONNECT with a 3.1.1 CONNACK, return code 1 (unacceptable protocol
// version, MQTT 3.1.1 §3.1.2.2), and closes. paho reads it as a truncated
// MQTT 5 CONNACK; the log said the broker may not accept the certificate.
func TestBrokerWithoutMQTT5Explained(t *testing.T) {
	p := newPKI(t)
	addr := standInBroker(t, p.MutualTLS(t, time.Time{}), func(c net.Conn) {
		defer c.Close()
		if !readConnect(c) {
			return
		}
		c.Write([]byte{0x20, 0x02, 0x00, 0x01})
	})
	log, rec := newLogRecorder(t)
	runListener(t, newListener(t, testConfig(t, p, addr, "thing-a", log)))
	line := rec.waitFor("mqtt connect failed")
	if strings.Contains(line, "device certificate") || !strings.Contains(line, "it does not support MQTT 5") {
		t.Errorf("a broker that speaks only MQTT 3.1.1 is reported as:\n%s\nwant: it does not support MQTT 5", line)
	}
}

// standInBroker serves TLS with cfg (plain TCP with none) on loopback, each
// connection with serve in a goroutine of its own, until the test ends; it
// returns the address.
func standInBroker(t *testing.T, cfg *tls.Config, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil && cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// Without a DNS server where /etc/resolv.conf points (dnsmasq stopped on an
// OpenWrt router), or without resolv.conf (Go then asks 127.0.0.1 and ::1),
// each attempt failed with "lookup ...: read: connection refused" and no word
// of DNS being the cause.
func TestNoDNSServerHint(t *testing.T) {
	p := newPKI(t)
	closed, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := closed.LocalAddr().String()
	closed.Close() // nothing listens there: the query is refused
	log, rec := newLogRecorder(t)
	l := newListener(t, testConfig(t, p, "broker.example.com:8883", "thing-a", log))
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", nowhere)
	}}
	l.dial = (&net.Dialer{Resolver: r}).DialContext
	stop := runListener(t, l)
	defer stop()
	line := rec.waitFor("mqtt connect failed; retrying")
	if !strings.Contains(line, "connection refused") || !strings.Contains(line, "no DNS server answers at") ||
		!strings.Contains(line, "/etc/resolv.conf") {
		t.Errorf("the line says nothing of DNS: %s", line)
	}
}

// What storage mounted later in boot and a renewal written halfway leave
// (a file not there, empty or cut short; a certificate and a key that each
// read well but are not a pair) is ErrNotReady: the agent exits 2 for those,
// which init systems restart, where it exited 1 and the device stayed off.
// What says that something else was put there is not: it needs someone.
func TestFilesNotReady(t *testing.T) {
	p := newPKI(t)
	cert, key := p.Client(t, "thing-a")
	otherCert, otherKey := p.Client(t, "thing-b")
	good := Config{ThingName: "thing-a", Broker: "127.0.0.1:8883", CAFile: p.CAFile, CertFile: cert, KeyFile: key}
	dir := t.TempDir()
	write := func(name string, b []byte) string { return writeIn(t, dir, name, b) }
	certPEM, _ := os.ReadFile(cert)
	keyPEM, _ := os.ReadFile(key)
	missing := filepath.Join(dir, "persist", "device.pem")
	empty := write("empty.pem", []byte("\n"))
	cutCert := write("cut.crt", certPEM[:len(certPEM)/2])
	cutKey := write("cut.key", keyPEM[:len(keyPEM)/2])
	encrypted := write("encrypted.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")}))
	text := write("text.pem", []byte("hello\n"))
	badKey := write("bad.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not a key")}))
	for _, tc := range []struct {
		name     string
		modify   func(*Config)
		field    string
		notReady bool
	}{
		{"CA missing", func(c *Config) { c.CAFile = missing }, "CAFile", true},
		{"certificate missing", func(c *Config) { c.CertFile = missing }, "CertFile", true},
		{"key missing", func(c *Config) { c.KeyFile = missing }, "KeyFile", true},
		{"CA empty", func(c *Config) { c.CAFile = empty }, "CAFile", true},
		{"key empty", func(c *Config) { c.KeyFile = empty }, "KeyFile", true},
		{"certificate cut short", func(c *Config) { c.CertFile = cutCert }, "CertFile", true},
		{"key cut short", func(c *Config) { c.KeyFile = cutKey }, "KeyFile", true},
		{"new certificate, old key", func(c *Config) { c.CertFile = otherCert }, "CertFile", true},
		{"old certificate, new key", func(c *Config) { c.KeyFile = otherKey }, "CertFile", true},

		{"missing by a relative path", func(c *Config) { c.KeyFile = "device.pem.key" }, "KeyFile", false},
		{"key is a directory", func(c *Config) { c.KeyFile = dir }, "KeyFile", false},
		{"encrypted key", func(c *Config) { c.KeyFile = encrypted }, "KeyFile", false},
		{"CA certificate as the device's", func(c *Config) { c.CertFile = p.CAFile }, "CertFile", false},
		{"CA holds no PEM", func(c *Config) { c.CAFile = text }, "CAFile", false},
		{"key does not parse", func(c *Config) { c.KeyFile = badKey }, "CertFile", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.modify(&cfg)
			wantConfigError(t, cfg, tc.field)
			if _, err := New(cfg); errors.Is(err, ErrNotReady) != tc.notReady {
				t.Errorf("New = %v: errors.Is(ErrNotReady) = %v, want %v", err, !tc.notReady, tc.notReady)
			}
		})
	}
}

// writeIn writes b to the file name in dir, mode 0600, and returns its path.
func writeIn(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
