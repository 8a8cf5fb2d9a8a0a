package tunneld

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/net/proxy"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// MQTTConfig configures an MQTTNotifier.
type MQTTConfig struct {
	// Broker is "host:port" (TLS) or a URL with scheme tls, ssl, mqtts, mqtt or tcp.
	Broker string
	// CAFile verifies the broker; CertFile and KeyFile are the client certificate for
	// mutual TLS. All three are needed for a TLS broker.
	CAFile, CertFile, KeyFile string
	// ClientID is the MQTT client identifier; "" means "porthole-tunneld-<random>".
	ClientID string
	// Logger receives connection events; nil discards.
	Logger *slog.Logger
}

// MQTTNotifier publishes notifications at QoS 1 with paho's autopaho (MQTT v5),
// reconnecting with backoff for as long as it lives.
type MQTTNotifier struct {
	cm  *autopaho.ConnectionManager
	log *slog.Logger
	ctx context.Context
	end context.CancelFunc

	mu sync.Mutex
	// conn ends when the connection up now goes down (connDown); nil before
	// the first.
	conn     context.Context
	connDown context.CancelFunc
}

// errConnectionLost ends a Notify whose connection went down before its
// PUBACK: paho forgets the PUBLISH with the connection's session (no expiry)
// and would wait its packet timeout for an answer that cannot come.
var errConnectionLost = errors.New("tunneld: connection lost before the PUBACK")

// ErrNotifyRefused wraps a PUBACK with an error reason code, e.g. 0x87 not authorized.
var ErrNotifyRefused = errors.New("tunneld: broker refused the notification")

// NewMQTTNotifier starts connecting to the broker in the background; it does not wait
// for a connection. Close ends it.
func NewMQTTNotifier(cfg MQTTConfig) (*MQTTNotifier, error) {
	u, err := brokerURL(cfg.Broker)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var tlsCfg *tls.Config
	switch {
	case u.Scheme == "tls":
		name := u.Hostname()
		if ip, err := netip.ParseAddr(name); err == nil {
			name = ip.WithZone("").String() // the certificate names the address without its zone
		}
		if tlsCfg, err = clientTLS(cfg, name, log); err != nil {
			return nil, err
		}
	case cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "":
		// Most likely mqtt:// for mqtts://: the files would be ignored and the
		// tokens published in clear text.
		return nil, fmt.Errorf("mqtt broker %q is not TLS, but a CA, certificate or key file is given: use mqtts:// (or tls://), or give no files", cfg.Broker)
	}
	if u.Scheme == "mqtt" && !loopbackHost(u.Hostname()) {
		log.Warn("mqtt broker not TLS and beyond loopback: every destination access token is published in clear text; use mqtts:// with --mqtt-ca, --mqtt-cert and --mqtt-key",
			"broker", u.Host)
	}
	id := cfg.ClientID
	if id == "" {
		id = "porthole-tunneld-" + dataplane.NewUUID()[:8]
	}
	n := &MQTTNotifier{log: log}
	n.ctx, n.end = context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(n.ctx, autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ConnectTimeout:                connectTimeout,
		ReconnectBackoff:              backoff,
		AttemptConnection: func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			return dialBroker(ctx, u.Host, tlsCfg)
		},
		OnConnectionUp: func(*autopaho.ConnectionManager, *paho.Connack) {
			n.mu.Lock()
			n.conn, n.connDown = context.WithCancel(context.Background())
			n.mu.Unlock()
			log.Info("mqtt connected", "broker", u.Host)
		},
		OnConnectionDown: func() bool {
			n.mu.Lock()
			if n.connDown != nil {
				n.connDown()
			}
			n.mu.Unlock()
			log.Warn("mqtt connection lost; reconnecting", "broker", u.Host)
			return true
		},
		OnConnectError: func(err error) {
			log.Warn("mqtt connect failed", "broker", u.Host, "err", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID: id,
			// Why a connection that was up ended: OnConnectionDown does
			// not say, and a broker's reason (another client took the
			// session, an ACL change) is what the operator must read.
			OnServerDisconnect: func(d *paho.Disconnect) {
				attrs := []any{"broker", u.Host, "reason_code", fmt.Sprintf("%#x", d.ReasonCode), "reason", d.Packet().Reason()}
				if d.Properties != nil && d.Properties.ReasonString != "" {
					attrs = append(attrs, "broker_reason", d.Properties.ReasonString)
				}
				log.Warn("mqtt broker ended the connection", attrs...)
			},
			OnClientError: func(err error) {
				log.Warn("mqtt connection ended", "broker", u.Host, "err", err)
			},
		},
	})
	if err != nil {
		n.end()
		return nil, fmt.Errorf("mqtt %s: %w", u.Host, err)
	}
	n.cm = cm
	return n, nil
}

// connectTimeout bounds a connection attempt: the dial (through all_proxy when
// the environment sets it), the TLS handshake and the CONNECT's answer.
var connectTimeout = 10 * time.Second

// dialBroker dials the broker at addr as autopaho would, through all_proxy when
// the environment sets it, and runs the TLS handshake (tlsCfg nil: none) within
// connectTimeout. autopaho's own proxied dial runs the handshake with no
// deadline, and autopaho gives a custom dial its whole life's context, not the
// attempt's: a broker or proxy that accepted the TCP connection and never
// answered the handshake froze reconnection, and every notification, for good.
func dialBroker(ctx context.Context, addr string, tlsCfg *tls.Config) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := proxy.Dial(ctx, "tcp", addr)
	if err != nil || tlsCfg == nil {
		return conn, err
	}
	tc := tls.Client(conn, tlsCfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	// paho writes from more than one goroutine; autopaho wraps its own TLS
	// connections the same way.
	return packets.NewThreadSafeConn(tc), nil
}

// backoff is the pause before reconnect attempt n: 250 ms doubling, capped at 10 s.
func backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	return min(250*time.Millisecond<<min(n-1, 6), 10*time.Second)
}

// Notify waits for the connection, publishes n at QoS 1 and waits for the PUBACK.
func (m *MQTTNotifier) Notify(ctx context.Context, n Notification) error {
	if err := m.cm.AwaitConnection(ctx); err != nil {
		return fmt.Errorf("publishing to %s: waiting for the broker: %w", n.Topic(), err)
	}
	m.mu.Lock()
	conn := m.conn // nil if OnConnectionUp has not run yet: paho's timeout then
	m.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if conn != nil {
		defer context.AfterFunc(conn, func() { cancel(errConnectionLost) })()
	}
	resp, err := m.cm.Publish(ctx, &paho.Publish{QoS: 1, Topic: n.Topic(), Payload: n.Payload()})
	if err != nil && context.Cause(ctx) == errConnectionLost {
		err = errConnectionLost
	}
	// Before err: paho returns a refusing PUBACK together with an error of
	// its own.
	if resp != nil && resp.ReasonCode >= 0x80 {
		return fmt.Errorf("publishing to %s: reason code %#x: %w", n.Topic(), resp.ReasonCode, ErrNotifyRefused)
	}
	if err != nil {
		return fmt.Errorf("publishing to %s: %w", n.Topic(), err)
	}
	return nil
}

// Close disconnects (waiting until ctx ends at most) and stops reconnecting.
func (m *MQTTNotifier) Close(ctx context.Context) error {
	err := m.cm.Disconnect(ctx)
	m.end()
	select {
	case <-m.cm.Done():
	case <-ctx.Done():
	}
	if errors.Is(err, autopaho.ConnectionDownError) {
		err = nil
	}
	return err
}

// brokerURL turns "host:port" or a URL into the URL autopaho takes.
func brokerURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("mqtt: no broker address")
	}
	if strings.Contains(s, "@") {
		// Not quoted: what comes before the @ is a password, as often as not.
		// autopaho would not send it either, and the connect errors it
		// reports hold the whole URL.
		return nil, errors.New("mqtt broker: a user name or password (an @) is not supported: tunneld signs in with a client certificate (--mqtt-cert, --mqtt-key)")
	}
	var u *url.URL
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("mqtt broker %q: want host:port or a URL: %w", s, err)
		}
		// Made, not parsed: a zone ("[fe80::1%eth0]:8883", as net.Dial
		// takes it) is no URL escape.
		u = &url.URL{Scheme: "tls", Host: s}
		s = "tls://" + s
	} else {
		var err error
		if u, err = url.Parse(s); err != nil {
			return nil, fmt.Errorf("mqtt broker %q: %w", s, err)
		}
	}
	switch u.Scheme {
	case "tls", "ssl", "mqtts":
		u.Scheme = "tls"
	case "mqtt", "tcp":
		u.Scheme = "mqtt"
	default:
		return nil, fmt.Errorf("mqtt broker %q: scheme %q, want mqtts (TLS; also tls, ssl) or mqtt (plain TCP; also tcp)", s, u.Scheme)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("mqtt broker %q: no port", s)
	}
	// url.Parse takes any digits; a port no dial reaches would be retried in
	// the background for as long as tunneld runs, not refused at start.
	if p, err := strconv.ParseUint(u.Port(), 10, 16); err != nil || p == 0 {
		return nil, fmt.Errorf("mqtt broker %q: port %s, want 1 to 65535", s, u.Port())
	}
	return u, nil
}

// loopbackHost reports whether host, a URL's, is localhost or a loopback
// address (with a zone, as a broker's may be, too).
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// clientTLS reads the CA and the client key pair for mutual TLS with the broker
// named serverName. The name is set here: dialBroker runs the TLS handshake with
// this config as it is (a tls.Dialer would fill the name in).
//
// The key pair is read again at every connection, as the agent does its own, so
// that a certificate renewed in place is used from the next reconnect on: read
// once, tunneld went on offering the old one, and once it expired every reconnect
// was refused, no notification delivered, until a restart. While the files do
// not load (a renewal caught halfway) the last pair that did is offered, with a
// warning.
func clientTLS(cfg MQTTConfig, serverName string, log *slog.Logger) (*tls.Config, error) {
	if cfg.CAFile == "" || cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("mqtt: a TLS broker needs a CA file, a client certificate and a key")
	}
	ca, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("mqtt CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("mqtt CA %s: no PEM certificate", cfg.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("mqtt client certificate %s, key %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	var mu sync.Mutex
	last := &cert
	pair := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		c, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			log.Warn("mqtt client certificate does not load; offering the one loaded before", "cert", cfg.CertFile, "key", cfg.KeyFile, "err", err)
			return last, nil
		}
		last = &c
		return last, nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, GetClientCertificate: pair, ServerName: serverName}, nil
}
