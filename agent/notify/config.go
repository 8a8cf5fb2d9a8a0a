package notify

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/syntax"
)

// Defaults for the zero values of [Config].
const (
	DefaultPort             = 8883
	DefaultKeepAlive        = 60 * time.Second
	DefaultSessionExpiry    = time.Hour
	DefaultConnectRetryMin  = time.Second
	DefaultConnectRetryMax  = 2 * time.Minute
	DefaultConnectTimeout   = 45 * time.Second // see Config.ConnectTimeout
	DefaultOperationTimeout = 15 * time.Second
	AWSALPN                 = "x-amzn-mqtt-ca" // MQTT over TLS on port 443 at AWS IoT Core
	maxKeepAlive            = 65535 * time.Second
	maxSessionExpirySeconds = 1<<32 - 2 // 1<<32-1 means "never expires"
	minConnectRetry         = time.Millisecond
	thingNameSyntax         = `[a-zA-Z0-9:_-]{1,128}`
	awsPortWithALPN         = 443
)

// Config configures a [Listener]. Only ThingName, Broker, CAFile, CertFile
// and KeyFile are required; every other zero value has a documented
// default.
type Config struct {
	// ThingName is the device's AWS IoT thing name ([a-zA-Z0-9:_-]{1,128}).
	// The listener subscribes to $aws/things/<ThingName>/tunnels/notify.
	// Required.
	ThingName string

	// ClientID is the MQTT client identifier. Empty means ThingName, which
	// is what AWS IoT policies using ${iot:Connection.Thing.ThingName}
	// expect. Two connections with one client id keep taking the session
	// from each other; the broker then disconnects one of them (reason
	// 0x8E), which is logged.
	ClientID string

	// Broker is the MQTT endpoint: "host:port", "host" (port 8883), or
	// "mqtts://host[:port]" (also "tls://", "ssl://", "tcps://" and
	// "mqtt+ssl://": tlsSchemes). The connection is always TLS. Required.
	Broker string

	// CAFile is a PEM file of the CA certificates that sign the broker's
	// certificate (for AWS IoT Core: Amazon Root CA 1). Required: the
	// system pool is not used, routers rarely carry one.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate (chain) and its
	// private key. They are read by New, and again before a connection to
	// the broker when one of them or CAFile changed (a renewal in place);
	// only their paths are ever logged. Required.
	CertFile string
	KeyFile  string

	// ServerName overrides the name checked in the broker's certificate.
	// Empty means the host part of Broker.
	ServerName string

	// ALPN lists the TLS application protocols to offer. Nil means none,
	// except when the broker port is 443: then "x-amzn-mqtt-ca", which AWS
	// IoT Core requires for MQTT with a client certificate on 443.
	ALPN []string

	// KeepAlive is the MQTT keep-alive interval (whole seconds, at most
	// 65535 s). Zero means 60 s.
	KeepAlive time.Duration

	// SessionExpiry is how long the broker keeps the session (the
	// subscription and the QoS 1 notifications queued for it) while the
	// device is offline. Clean start is always false, so a notification
	// published while the device was away is delivered when it comes back.
	// Zero means 1 h. AWS IoT Core caps it per account (1 h by default).
	// A broker that keeps it for less (its CONNACK's Session Expiry
	// Interval), or that lost it by a reconnect, is logged at WARN.
	SessionExpiry time.Duration

	// ConnectRetryMin and ConnectRetryMax bound the jittered exponential
	// backoff between failed connection attempts and between refused
	// subscriptions: attempt n waits a random time in [min, min·2ⁿ], capped
	// at max; the reconnect after a lasting connection waits a random time in
	// [0, min]. Zero means 1 s and 2 min.
	ConnectRetryMin time.Duration
	ConnectRetryMax time.Duration

	// ConnectTimeout bounds one connection attempt (the broker's name looked
	// up, TCP, TLS and CONNACK). Zero means 45 s: Go's resolver asks each of
	// up to three nameservers twice, 5 s each, for a lookup that gets no
	// answer, and it waits for the AAAA query as for the A query. Behind a
	// DNS that drops one of them (an LTE modem's, an old CPE's) with
	// OpenWrt's two nameservers (127.0.0.1 and ::1, both dnsmasq) a name
	// takes 20 s to resolve, and every attempt of 15 s failed with "lookup
	// …: i/o timeout" for as long as that lasted.
	ConnectTimeout time.Duration

	// OperationTimeout bounds the wait for a SUBACK or PUBACK. Zero means
	// 15 s.
	OperationTimeout time.Duration

	// Logger receives the listener's logs. Nil discards them. No log line
	// holds a token, a key or a payload.
	Logger *slog.Logger

	// OnNotification is called with each valid, non-duplicate notification.
	// It runs on the MQTT client's receive goroutine, and the PUBACK is sent
	// after it returns: a notification is acknowledged only once handed
	// over, but while it runs no other message is processed. It must not
	// block: hand the notification to a goroutine or a buffered channel and
	// return. In particular it must not call Listener.Publish and wait: the
	// PUBACK it waits for may queue behind the next notification.
	// Nil means notifications are only logged.
	OnNotification func(Notification)

	// OnRejected is called, if set, with each notification that is not
	// valid (the error of [ParseNotification], which wraps
	// [ErrInvalidNotification], names the field and never holds the token
	// or the payload). Like OnNotification it runs on the receive goroutine
	// and must not block; the notification is logged and acknowledged
	// either way. Duplicates of a valid notification are not rejections.
	// Anyone allowed to publish on the notify topic can call it in a loop:
	// a receiver that reports further must rate-limit.
	OnRejected func(error)

	// OnSubscribeError is called, if set, when the notify subscription
	// fails on a connection, with a *[SubscribeError] when the broker refused
	// it: once per connection, at its first failure. Every failure is also
	// logged and the subscription retried with backoff, so this is for
	// reporting (an event, a status LED). It must not block.
	OnSubscribeError func(error)
}

// brokerAddr is Config.Broker resolved.
type brokerAddr struct {
	_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
	host string
	port int
}

func (b brokerAddr) hostPort() string { return net.JoinHostPort(b.host, strconv.Itoa(b.port)) }

// ConfigError is a configuration problem found by [New]; Field names the
// Config field. One that may mend itself without a change to the config is
// also [ErrNotReady] (errors.Is).
type ConfigError struct {
	_     [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Field string
	Err   error
	// notReady: the file of Field is not there yet, or not whole, or the key
	// is not the certificate's (ErrNotReady).
	notReady bool
}

func (e *ConfigError) Error() string { return "notify: config " + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Is makes a ConfigError that may mend itself [ErrNotReady].
func (e *ConfigError) Is(target error) bool { return e.notReady && target == ErrNotReady }

// ErrNotReady is what New's error is (errors.Is) when the CA, certificate or
// key file, given by an absolute path, does not exist, is empty or ends
// before its -----END line, or when the key and the certificate each read
// well but are not a pair: what storage mounted later in boot (/persist,
// /mnt/data) and a renewal written halfway (a reboot between the new
// certificate and its key) look like. A later try may find the files right
// without a change to the config. FileError applies the same rule to other
// PEM files (the agent's tunnel.ca_file). Every other file problem (a
// directory, DER, an encrypted key, a CA certificate as the device's) says
// what was put there, and needs someone to mend it.
var ErrNotReady error = &errorString{"notify: certificate files not ready"}

func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// setDefaults validates c, replaces its zero values by their defaults and
// returns the parsed broker address. It works on c in place (the caller's
// copy): returning a Config by value from each of its exits cost 2 KB of code
// on mipsle.
func (c *Config) setDefaults() (brokerAddr, error) {
	if c.ThingName == "" {
		return brokerAddr{}, configErr("ThingName", "is empty (the device's AWS IoT thing name)")
	}
	if !syntax.Name(c.ThingName, 1, 128, ":_-") {
		return brokerAddr{}, configErr("ThingName", "%s is not a thing name (%s)", quoteShort(c.ThingName), thingNameSyntax)
	}
	if c.ClientID == "" {
		c.ClientID = c.ThingName
	}
	if len(c.ClientID) > 128 {
		return brokerAddr{}, configErr("ClientID", "%s is too long (at most 128 bytes)", quoteShort(c.ClientID))
	}
	if err := checkMQTTString(c.ClientID); err != nil {
		// The broker would close every connection (Mosquitto: "protocol error").
		return brokerAddr{}, configErr("ClientID", "%s %v: an MQTT client id must be printable UTF-8", quoteShort(c.ClientID), err)
	}
	addr, err := parseBroker(c.Broker)
	if err != nil {
		return brokerAddr{}, &ConfigError{Field: "Broker", Err: err}
	}
	for _, f := range []struct{ name, val string }{{"CAFile", c.CAFile}, {"CertFile", c.CertFile}, {"KeyFile", c.KeyFile}} {
		if f.val == "" {
			return brokerAddr{}, configErr(f.name, "is empty (mutual TLS needs a CA file, a client certificate and its key)")
		}
	}
	if c.ServerName == "" {
		c.ServerName = addr.host
		if ip, err := netip.ParseAddr(addr.host); err == nil {
			// A zone ("fe80::1%br-lan") says which link to dial; the
			// certificate names the address without it.
			c.ServerName = ip.WithZone("").String()
		}
	}
	if c.ALPN == nil && addr.port == awsPortWithALPN {
		c.ALPN = []string{AWSALPN}
	}
	durations := []struct {
		name string
		val  *time.Duration
		def  time.Duration
	}{
		{"KeepAlive", &c.KeepAlive, DefaultKeepAlive},
		{"SessionExpiry", &c.SessionExpiry, DefaultSessionExpiry},
		{"ConnectRetryMin", &c.ConnectRetryMin, DefaultConnectRetryMin},
		{"ConnectRetryMax", &c.ConnectRetryMax, DefaultConnectRetryMax},
		{"ConnectTimeout", &c.ConnectTimeout, DefaultConnectTimeout},
		{"OperationTimeout", &c.OperationTimeout, DefaultOperationTimeout},
	}
	for _, d := range durations {
		if *d.val < 0 {
			return brokerAddr{}, configErr(d.name, "is negative (%v)", *d.val)
		}
		if *d.val == 0 {
			*d.val = d.def
		}
	}
	if c.KeepAlive < time.Second || c.KeepAlive > maxKeepAlive {
		return brokerAddr{}, configErr("KeepAlive", "is %v, want 1s to %v", c.KeepAlive, maxKeepAlive)
	}
	if c.SessionExpiry < time.Second || c.SessionExpiry/time.Second > maxSessionExpirySeconds {
		return brokerAddr{}, configErr("SessionExpiry", "is %v, want at least 1s (and under 136 years)", c.SessionExpiry)
	}
	if c.ConnectRetryMin < minConnectRetry {
		return brokerAddr{}, configErr("ConnectRetryMin", "is %v, want at least %v", c.ConnectRetryMin, minConnectRetry)
	}
	if c.ConnectRetryMax < c.ConnectRetryMin {
		return brokerAddr{}, configErr("ConnectRetryMax", "is %v, less than ConnectRetryMin %v", c.ConnectRetryMax, c.ConnectRetryMin)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return addr, nil
}

// tlsSchemes are the URL schemes parseBroker takes, all of them TLS (a list,
// not a switch of five names, which was 292 B more code).
var tlsSchemes = []string{"mqtts", "tls", "ssl", "tcps", "mqtt+ssl"}

// parseBroker accepts "host", "host:port" and "mqtts://host[:port]".
func parseBroker(s string) (brokerAddr, error) {
	if s == "" {
		return brokerAddr{}, errors.New("is empty (want host:port or mqtts://host:port)")
	}
	if strings.Contains(s, "@") {
		// Not quoted: what comes before the @ is a password, as often as not.
		return brokerAddr{}, errors.New("holds a user name or password (an @): the agent signs in with its certificate only; want host:port or mqtts://host:port")
	}
	hostport := s
	if i := strings.Index(s, "://"); i >= 0 {
		u, err := url.Parse(s)
		if err != nil {
			return brokerAddr{}, fmt.Errorf("%q is not a URL: %w", s, err)
		}
		if !slices.Contains(tlsSchemes, strings.ToLower(u.Scheme)) {
			return brokerAddr{}, fmt.Errorf("%q: scheme %q is not supported (want mqtts://; the connection is always TLS)", s, u.Scheme)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return brokerAddr{}, fmt.Errorf("%q: want only mqtts://host:port", s)
		}
		hostport = u.Host
	}
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: "host", or "[IPv6 address]". An IPv6 address without
		// brackets cannot be told from one with a port after it ("::1:8883"),
		// and was dialled as [::1:8883]:8883, for good.
		host, portStr = hostport, ""
		if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		} else if strings.Contains(host, ":") {
			return brokerAddr{}, fmt.Errorf("%q: an IPv6 address needs brackets, with the port after them: [2001:db8::1]:8883", s)
		}
	}
	if strings.HasPrefix(hostport, "[") && !strings.Contains(host, ":") {
		// "[0]" was dialled as 0.0.0.0, this machine; the tunnel's endpoint
		// refuses the same.
		return brokerAddr{}, fmt.Errorf("%q: brackets enclose an IPv6 address only: [2001:db8::1]:8883, or a name or IPv4 address without them", s)
	}
	if strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil {
			return brokerAddr{}, fmt.Errorf("%q: %q is not an IPv6 address; write one in brackets, with the port after them: [2001:db8::1]:8883", s, host)
		}
	}
	// The dial joins host and port again: brackets only enclose an IPv6
	// address, and a name has no space, slash or control character.
	if host == "" || strings.ContainsAny(host, " /[]") || strings.ContainsFunc(host, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return brokerAddr{}, fmt.Errorf("%q has no usable host name", s)
	}
	port := DefaultPort
	if portStr != "" {
		p, err := strconv.Atoi(portStr)
		if err != nil || p < 1 || p > 65535 {
			return brokerAddr{}, fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, portStr)
		}
		port = p
	}
	return brokerAddr{host: host, port: port}, nil
}
