package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNewValidatesConfig(t *testing.T) {
	p := newPKI(t)
	cert, key := p.Client(t, "thing-a")
	good := Config{ThingName: "thing-a", Broker: "127.0.0.1:8883", CAFile: p.CAFile, CertFile: cert, KeyFile: key}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, otherKey := p.Client(t, "thing-b")

	tests := []struct {
		name   string
		modify func(*Config)
		field  string
		want   string
	}{
		{"no thing name", func(c *Config) { c.ThingName = "" }, "ThingName", "is empty"},
		{"thing name with a slash", func(c *Config) { c.ThingName = "a/b" }, "ThingName", `"a/b" is not a thing name`},
		{"thing name with a wildcard", func(c *Config) { c.ThingName = "a+" }, "ThingName", "is not a thing name"},
		{"thing name too long", func(c *Config) { c.ThingName = strings.Repeat("t", 129) }, "ThingName", "is not a thing name"},
		{"client id too long", func(c *Config) { c.ClientID = strings.Repeat("c", 129) }, "ClientID", "too long"},
		// Mosquitto closes the connection at each such CONNECT ("protocol
		// error"): the agent would retry for ever, blaming its certificate.
		{"client id with NUL", func(c *Config) { c.ClientID = "thing-a\x00" }, "ClientID", "control character (U+0000)"},
		{"client id with a tab", func(c *Config) { c.ClientID = "thing-a\t" }, "ClientID", "control character (U+0009)"},
		{"client id with a C1 control", func(c *Config) { c.ClientID = "thing-a\u0085" }, "ClientID", "control character (U+0085)"},
		{"client id not UTF-8", func(c *Config) { c.ClientID = "thing-a\xff" }, "ClientID", "not valid UTF-8"},
		{"client id with a non-character", func(c *Config) { c.ClientID = "thing-a\uFFFF" }, "ClientID", "non-character"},
		{"no broker", func(c *Config) { c.Broker = "" }, "Broker", "is empty"},
		{"plain mqtt", func(c *Config) { c.Broker = "mqtt://127.0.0.1:1883" }, "Broker", `scheme "mqtt" is not supported`},
		{"websocket", func(c *Config) { c.Broker = "wss://example.com/mqtt" }, "Broker", `scheme "wss" is not supported`},
		{"bad port", func(c *Config) { c.Broker = "example.com:http" }, "Broker", `port "http"`},
		{"port out of range", func(c *Config) { c.Broker = "example.com:70000" }, "Broker", `port "70000"`},
		{"url with a path", func(c *Config) { c.Broker = "mqtts://example.com:8883/x" }, "Broker", "want only mqtts://host:port"},
		{"name in brackets", func(c *Config) { c.Broker = "[example.com]:8883" }, "Broker", "brackets enclose an IPv6 address only"},
		{"IPv4 in brackets", func(c *Config) { c.Broker = "[127.0.0.1]" }, "Broker", "brackets enclose an IPv6 address only"},
		{"no CA", func(c *Config) { c.CAFile = "" }, "CAFile", "is empty"},
		{"no cert", func(c *Config) { c.CertFile = "" }, "CertFile", "is empty"},
		{"no key", func(c *Config) { c.KeyFile = "" }, "KeyFile", "is empty"},
		{"CA missing", func(c *Config) { c.CAFile = missing }, "CAFile", "no such file"},
		{"CA not PEM", func(c *Config) { c.CAFile = notPEM }, "CAFile", "holds no PEM certificate"},
		{"cert missing", func(c *Config) { c.CertFile = missing }, "CertFile", "no such file"},
		{"key missing", func(c *Config) { c.KeyFile = missing }, "KeyFile", "no such file"},
		{"key of another cert", func(c *Config) { c.KeyFile = otherKey }, "CertFile", "private key does not match"},
		{"negative keepalive", func(c *Config) { c.KeepAlive = -time.Second }, "KeepAlive", "is negative"},
		{"keepalive too short", func(c *Config) { c.KeepAlive = time.Millisecond }, "KeepAlive", "want 1s to"},
		{"keepalive too long", func(c *Config) { c.KeepAlive = 100000 * time.Second }, "KeepAlive", "want 1s to"},
		{"session expiry too short", func(c *Config) { c.SessionExpiry = time.Millisecond }, "SessionExpiry", "want at least 1s"},
		{"retry max below min", func(c *Config) { c.ConnectRetryMin = time.Minute; c.ConnectRetryMax = time.Second }, "ConnectRetryMax", "less than ConnectRetryMin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.modify(&cfg)
			wantConfigError(t, cfg, tc.field, tc.want)
		})
	}
	// Key material never shows in an error.
	keyPEM, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := good
	cfg.CertFile = key // a key where the certificate belongs
	_, err = New(cfg)
	if err == nil || strings.Contains(err.Error(), string(keyPEM[40:80])) {
		t.Errorf("New with a key as CertFile = %v", err)
	}
}

func TestConfigDefaults(t *testing.T) {
	p := newPKI(t)
	cert, key := p.Client(t, "thing-a")
	base := Config{ThingName: "thing-a", CAFile: p.CAFile, CertFile: cert, KeyFile: key}

	tests := []struct {
		broker     string
		wantAddr   string
		wantServer string
		wantALPN   []string
	}{
		{"example.iot.us-east-1.amazonaws.com", "example.iot.us-east-1.amazonaws.com:8883", "example.iot.us-east-1.amazonaws.com", nil},
		{"example.iot.us-east-1.amazonaws.com:8883", "example.iot.us-east-1.amazonaws.com:8883", "example.iot.us-east-1.amazonaws.com", nil},
		// AWS IoT Core takes MQTT with a client certificate on 443 only with this ALPN.
		{"example.iot.us-east-1.amazonaws.com:443", "example.iot.us-east-1.amazonaws.com:443", "example.iot.us-east-1.amazonaws.com", []string{"x-amzn-mqtt-ca"}},
		{"mqtts://example.com:443", "example.com:443", "example.com", []string{"x-amzn-mqtt-ca"}},
		{"mqtts://example.com", "example.com:8883", "example.com", nil},
		{"tls://127.0.0.1:18883", "127.0.0.1:18883", "127.0.0.1", nil},
		{"[::1]:8883", "[::1]:8883", "::1", nil},
	}
	for _, tc := range tests {
		t.Run(tc.broker, func(t *testing.T) {
			cfg := base
			cfg.Broker = tc.broker
			l, err := New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := l.addr.hostPort(); got != tc.wantAddr {
				t.Errorf("address = %s, want %s", got, tc.wantAddr)
			}
			if l.tls.ServerName != tc.wantServer {
				t.Errorf("tls ServerName = %q, want %q", l.tls.ServerName, tc.wantServer)
			}
			if !slices.Equal(l.tls.NextProtos, tc.wantALPN) {
				t.Errorf("tls NextProtos = %q, want %q", l.tls.NextProtos, tc.wantALPN)
			}
			if len(l.tls.Certificates) != 1 || l.tls.RootCAs == nil || l.tls.MinVersion < 0x0303 {
				t.Errorf("tls config lacks the client certificate, the CA pool or TLS 1.2")
			}
		})
	}

	// An explicit ALPN wins on 443; defaults fill the zero values.
	cfg := base
	cfg.Broker = "example.com:443"
	cfg.ALPN = []string{"mqtt"}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(l.tls.NextProtos, []string{"mqtt"}) {
		t.Errorf("NextProtos = %q, want the configured [mqtt]", l.tls.NextProtos)
	}
	c := l.cfg
	if c.ClientID != "thing-a" || c.KeepAlive != DefaultKeepAlive || c.SessionExpiry != DefaultSessionExpiry ||
		c.ConnectRetryMin != DefaultConnectRetryMin || c.ConnectRetryMax != DefaultConnectRetryMax ||
		c.ConnectTimeout != DefaultConnectTimeout || c.OperationTimeout != DefaultOperationTimeout || c.Logger == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	if l.Topic() != "$aws/things/thing-a/tunnels/notify" {
		t.Errorf("Topic = %s", l.Topic())
	}
	cp := l.connectPacket()
	var expiry uint32
	if cp.Properties != nil && cp.Properties.SessionExpiryInterval != nil {
		expiry = *cp.Properties.SessionExpiryInterval
	}
	if cp.CleanStart || expiry != 3600 || cp.KeepAlive != 60 || cp.ClientID != "thing-a" {
		t.Errorf("CONNECT: clean start %v, session expiry %d, keepalive %d, client id %q; want false, 3600, 60, thing-a",
			cp.CleanStart, expiry, cp.KeepAlive, cp.ClientID)
	}
	if cp.Properties == nil || cp.Properties.ReceiveMaximum == nil || *cp.Properties.ReceiveMaximum != receiveMaximum {
		t.Errorf("CONNECT: receive maximum not %d (paho queues that many notifications per connection)", receiveMaximum)
	}
}

func TestRunTwiceAtOnce(t *testing.T) {
	p := newPKI(t)
	log, _ := newLogRecorder(t)
	// Nothing listens on this port: Run keeps retrying until stopped.
	cfg := testConfig(t, p, hostPort(freePort(t)), "thing-a", log)
	l := newListener(t, cfg)
	stop := runListener(t, l)
	deadline := time.Now().Add(waitTimeout)
	for {
		l.mu.Lock()
		running := l.running
		l.mu.Unlock()
		if running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not start")
		}
		time.Sleep(time.Millisecond)
	}
	if err := l.Run(t.Context()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	stop()
}

// FuzzParseBroker checks the broker address an operator configures: one
// that is accepted must be dialable as it is, a host (a name or an IP
// address, which is also the TLS server name) and a port from 1 to 65535.
func FuzzParseBroker(f *testing.F) {
	for _, s := range []string{"a3example-ats.iot.eu-west-1.amazonaws.com", "broker:8883", "mqtts://broker:443", "tls://[::1]:8883",
		"::1", "[::1", "a]b", "[0]:1", "broker:0", "ssl://u@h", "mqtts://h/x", "mqtt://h", "host name"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseBroker(s)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(a.hostPort())
		if err != nil || host != a.host || port != strconv.Itoa(a.port) || a.port < 1 || a.port > 65535 {
			t.Fatalf("parseBroker(%q) = %+v, dialled as %q: %q %q %v", s, a, a.hostPort(), host, port, err)
		}
		if net.ParseIP(host) == nil && strings.ContainsFunc(host, func(r rune) bool {
			return r <= ' ' || r == 0x7f || strings.ContainsRune("/[]:", r)
		}) {
			t.Fatalf("parseBroker(%q) accepted host %q, neither a name nor an IP address", s, host)
		}
		if strings.Contains(s, "[") && !strings.Contains(host, ":") {
			t.Fatalf("parseBroker(%q) accepted host %q in brackets, which enclose an IPv6 address only", s, host)
		}
	})
}

// wantConfigError checks that New refuses cfg with a *ConfigError for field,
// its text starting with the field's name and saying each of wants.
func wantConfigError(t *testing.T, cfg Config, field string, wants ...string) {
	t.Helper()
	_, err := New(cfg)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("New = %v, want a *ConfigError", err)
	}
	if ce.Field != field {
		t.Errorf("New = %q: field %s, want %s", err, ce.Field, field)
	}
	if !strings.HasPrefix(err.Error(), "notify: config "+field+": ") {
		t.Errorf("error %q does not start with the field name", err)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("New = %q, want it to say %q", err, w)
		}
	}
}

// TestBrokerIPv6ZoneTLS: a broker given as a link-local style address with a
// zone ("[fe80::1%br-lan]:8883", here [::1%lo]) is accepted by the config,
// and dialled with its zone; the certificate check must then look for the
// address (an IP SAN) without the zone, as the dial reaches it. Before,
// ServerName kept the zone, x509 took "::1%lo" for a DNS name, and every
// attempt failed certificate verification.
func TestBrokerIPv6ZoneTLS(t *testing.T) {
	// The name checked, on any machine; then a handshake, where there is ::1.
	p := newPKI(t)
	log, _ := newLogRecorder(t)
	zoned := testConfig(t, p, "[fe80::1%br-lan]:8883", "zone-thing", log)
	if _, err := zoned.setDefaults(); err != nil || zoned.ServerName != "fe80::1" {
		t.Fatalf("a zoned broker's ServerName = %q, %v; want the address without its zone", zoned.ServerName, err)
	}
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil && os.Getenv("CI") == "true" {
		t.Fatalf("no ::1: %v", err)
	} else if err != nil {
		t.Skipf("no ::1: %v", err)
	}
	defer ln.Close()
	tl := tls.NewListener(ln, p.ServerTLS(t, "broker"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := tl.Accept()
		if err != nil {
			return
		}
		c.(*tls.Conn).Handshake()
		c.Close()
	}()
	defer func() { ln.Close(); <-done }()
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := testConfig(t, p, "[::1%lo]:"+strconv.Itoa(port), "zone-thing", log)
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.dialTLS(ctx)
	if err != nil {
		t.Fatalf("dialTLS to [::1%%lo]:%d: %v", port, err)
	}
	c.Close()
}

// A broker given with a user name and password (mqtts://user:pass@host, as
// other MQTT clients and a non-AWS broker's docs take it) is refused: the
// error, which the agent logs and check-config prints, must not repeat the
// password.
func TestBrokerPasswordNotInError(t *testing.T) {
	const secret = "S3cretPassw0rd"
	for _, broker := range []string{
		"mqtts://device:" + secret + "@broker.example.com:8883",
		"mqtt://device:" + secret + "@broker.example.com:1883",
		"device:" + secret + "@broker.example.com:8883",
		"mqtts://device:" + secret + "%zz@broker.example.com:8883",
	} {
		_, err := New(Config{ThingName: "thing-a", Broker: broker, CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"})
		if err == nil {
			t.Errorf("%q accepted", broker)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Broker %q: the error holds the password:\n%v", broker, err)
		}
	}
}

// A connection attempt outlasts the slowest lookup Go's resolver makes of a
// name that does resolve: behind a DNS that drops the AAAA query (or the A
// query), each of up to three nameservers (resolv.conf's limit, and Go's) is
// asked twice, 5 s each, before the A answer is used. With OpenWrt's two
// nameservers that took 20 s, and every attempt of 15 s failed for good
// (bootnet review), with room left for TCP, TLS and CONNACK.
func TestConnectTimeoutOutlastsSlowLookup(t *testing.T) {
	const slowestLookup = 3 * 2 * 5 * time.Second
	if DefaultConnectTimeout < slowestLookup+10*time.Second {
		t.Errorf("DefaultConnectTimeout = %v, want at least %v: the resolver's slowest lookup and a handshake",
			DefaultConnectTimeout, slowestLookup+10*time.Second)
	}
}
