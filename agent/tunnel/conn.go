package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Version is a protocol version, carried by the WebSocket subprotocol (spec §2.3).
type Version int

// The protocol versions.
const (
	V1 Version = 1
	V2 Version = 2
	V3 Version = 3
)

// Subprotocol is the Sec-WebSocket-Protocol value of v.
func (v Version) Subprotocol() string {
	return fmt.Sprintf("aws.iot.securetunneling-%d.0", int(v))
}

func (v Version) String() string { return fmt.Sprintf("V%d", int(v)) }

// LogValue is the version as String has it, in JSON logs too (not 3).
func (v Version) LogValue() slog.Value { return slog.StringValue(v.String()) }

func versionOf(subprotocol string) (Version, bool) {
	for _, v := range []Version{V3, V2, V1} {
		if strings.EqualFold(subprotocol, v.Subprotocol()) {
			return v, true
		}
	}
	return 0, false
}

// Config says how to reach the service. It is shared by Source and Destination.
type Config struct {
	// Region builds the endpoint data.tunneling.iot.<region>.amazonaws.com[.cn].
	Region string
	// Endpoint, when set, wins over Region: host[:port] (port 443 by default) or a
	// wss:// URL; ws:// only with AllowInsecureWebSocket.
	Endpoint string
	// AccessToken is the client access token for this side (required).
	AccessToken Token
	// ClientToken is sent with every connection so that the service accepts a
	// reconnect with the same access token. Zero: a UUIDv4 is made once per Run.
	ClientToken Token
	// Protocol is the subprotocol to offer. Zero means V3.
	Protocol Version

	// CAFile is an extra trust anchor: a PEM file or a directory of PEM files, added to
	// the system roots. Empty: system roots only.
	CAFile string
	// CAFileName is what the caller's user sets CAFile by (the agent's
	// tunnel.ca_file), for the hint logged when a certificate does not
	// verify. Empty: "the CA file".
	CAFileName string
	// InsecureSkipVerify turns the verification of the service's TLS
	// certificate off. Only for tests and labs. An https:// proxy's
	// certificate is verified all the same (system roots plus CAFile).
	InsecureSkipVerify bool
	// AllowInsecureWebSocket permits a ws:// Endpoint (no TLS at all).
	AllowInsecureWebSocket bool
	// Proxy picks the HTTP(S) proxy for the service's URL; a nil URL means direct.
	// Nil means ProxyFromEnvironment.
	Proxy func(target *url.URL) (*url.URL, error)

	// PingInterval between WebSocket pings. Zero means 20 s; negative disables pings.
	PingInterval time.Duration
	// IdleTimeout closes a connection on which nothing (frame or pong) arrived for
	// this long, and reconnects. Zero disables it: the service may not answer pings
	// before the other side is connected (spec §3.7).
	IdleTimeout time.Duration
	// PongTimeout, once the service has answered a ping on a connection,
	// takes IdleTimeout's place there: a path that died without a word (a
	// laptop that slept or changed networks) otherwise lasts until the kernel
	// gives up on the pings, some 15 minutes. It never fires before the first
	// pong, which the service may not send before the other side is
	// connected (spec §3.7), and is checked at each ping (PingInterval). Zero:
	// none.
	PongTimeout time.Duration
	// HandshakeTimeout bounds the endpoint's name looked up, TCP, proxy, TLS
	// and the WebSocket upgrade. Zero: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// RetryMin and RetryMax bound the reconnect backoff (full jitter, doubling).
	// It starts over once a connection has lasted 30 s: a service that ends
	// every connection at once is not reconnected to twice a second.
	// Zero: 1 s and 120 s.
	RetryMin, RetryMax time.Duration
	// UserAgent for the upgrade request. Empty: "porthole".
	UserAgent string
	// Logger receives connection events. Nil: discard. Tokens are never logged.
	Logger *slog.Logger
	// OnState, if set, is called from Run after each successful handshake
	// (connected true, err nil) and each failed attempt or lost connection
	// (connected false, with the cause). It must not block.
	OnState func(connected bool, err error)
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Config) protocol() Version {
	if c.Protocol == 0 {
		return V3
	}
	return c.Protocol
}

func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// HandshakeError is a refused WebSocket upgrade: the service answered with an HTTP
// status other than 101.
type HandshakeError struct {
	_          [0]func() // not comparable: no equality function in the binary (docs/size.md)
	StatusCode int
	Body       string // the first KiB of the response body, trimmed
	ChannelID  string // the channel-id header, if any
}

func (e *HandshakeError) Error() string {
	s := fmt.Sprintf("tunnel: handshake refused: HTTP %d", e.StatusCode)
	if e.Body != "" {
		s += ": " + e.Body
	}
	if e.ChannelID != "" {
		s += " (channel-id " + e.ChannelID + ")"
	}
	return s
}

// Temporary reports whether a retry may succeed: 5xx, 429 and 408 (a timeout on the
// way, from a load balancer or proxy) are temporary; other 4xx need a new token or
// configuration (spec §2.6). The status alone decides: an X-Status-Reason header
// ("Tunnel is closed", which a third-party client treats as terminal) is not
// consulted, since AWS does not document it (spec §2.6, unverified); a closed
// tunnel's refusal is a 4xx, terminal anyway.
func (e *HandshakeError) Temporary() bool {
	return e.StatusCode >= 500 || e.StatusCode == 429 || e.StatusCode == 408
}

// ErrClosedByService is returned when the service closes the WebSocket with a Close
// frame, as on CloseTunnel or lifetime expiry. It is terminal for the access token,
// whatever the frame's status code: which codes AWS sends, for a closed tunnel or
// for a frame it refuses, is not documented; localproxy ends on any Close (spec
// §3.8), and reconnecting after a refused frame would repeat it at once (the
// backoff starts again after each successful handshake).
var ErrClosedByService = errors.New("tunnel: closed by the service")

// ErrIdle is the cause of a connection closed by Config.IdleTimeout.
var ErrIdle = errors.New("tunnel: no traffic within the idle timeout")

// ErrSilent is the cause of a connection closed by Config.PongTimeout.
var ErrSilent = errors.New("tunnel: the service stopped answering pings (did this machine sleep, or change networks?)")

// Conn is one WebSocket connection to the tunneling service, carrying tunnel frames.
// ReadMessage must be called from one goroutine; WriteMessage may be called
// concurrently (one frame per WebSocket message, spec §1.2).
type Conn struct {
	ws        *wsConn
	fr        *FrameReader
	version   Version
	channelID string
	log       *slog.Logger

	// lastRx is when the last frame or pong came, as nanoseconds since born on
	// the monotonic clock: a step of the wall clock (NTP's first answer on a
	// router that booted in 1970) must not close a live link for idleness, nor
	// keep a silent one open.
	lastRx  atomic.Int64
	ponged  atomic.Bool // a pong has come (Config.PongTimeout)
	born    time.Time
	life    context.Context
	cancel  context.CancelCauseFunc
	done    chan struct{}
	closing sync.Once
}

// Version is the protocol version the service accepted.
func (c *Conn) Version() Version { return c.version }

// ChannelID is the service's id for this connection, for support requests.
func (c *Conn) ChannelID() string { return c.channelID }

// Dial opens one connection to the service as mode. It does not retry.
func Dial(ctx context.Context, cfg *Config, mode Mode) (*Conn, error) {
	u, err := tunnelURL(cfg.Endpoint, cfg.Region, mode, cfg.AllowInsecureWebSocket)
	if err != nil {
		return nil, err
	}
	if cfg.AccessToken.IsZero() {
		return nil, errors.New("tunnel: no access token")
	}
	req := &handshakeRequest{url: u, subprotocol: cfg.protocol().Subprotocol()}
	proxy := cfg.Proxy
	if proxy == nil {
		proxy = ProxyFromEnvironment
	}
	if req.proxy, err = proxy(u); err != nil {
		return nil, err
	}
	if u.Scheme == "wss" || req.proxy != nil && req.proxy.Scheme == "https" {
		// The proxy's certificate is checked whatever InsecureSkipVerify
		// says: that is the service's alone, and the proxy gets the
		// proxy's credentials (Proxy-Authorization) once its TLS is up.
		verified, err := cfg.tlsConfig()
		if err != nil {
			return nil, err
		}
		req.proxyTLS = verified
		if u.Scheme == "wss" {
			req.tls = verified
			if cfg.InsecureSkipVerify {
				req.tls = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}
			}
		}
	}
	access := cfg.AccessToken.Reveal()
	req.header = append(req.header, [2]string{"access-token", access})
	req.secrets = []string{access}
	if !cfg.ClientToken.IsZero() {
		client := cfg.ClientToken.Reveal()
		req.header = append(req.header, [2]string{"client-token", client})
		req.secrets = append(req.secrets, client)
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "porthole"
	}
	req.header = append(req.header, [2]string{"User-Agent", ua})

	htimeout := durationOr(cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	hctx, cancel := context.WithTimeout(ctx, htimeout)
	defer cancel()
	ws, resp, err := dialWebSocket(hctx, req)
	if err != nil {
		// Named, as the proxy may be the environment's: a proxy that
		// answers CONNECT with 200 and then drops the connection (as some
		// do for a site they block) ended in a bare EOF.
		to := u.Host
		if req.proxy != nil {
			to += " via proxy " + req.proxy.Host
		}
		// The connection's own deadline is the handshake's: it may fire first.
		if dl, _ := hctx.Deadline(); ctx.Err() == nil && !time.Now().Before(dl) {
			// Not a bare "context deadline exceeded": the endpoint (or the
			// proxy) took the connection, or not even that, and said nothing.
			return nil, fmt.Errorf("tunnel: connecting to %s: no answer within %v (TCP, proxy, TLS and WebSocket handshake): %w", to, htimeout, err)
		}
		return nil, fmt.Errorf("tunnel: connecting to %s: %w", to, err)
	}
	if ws == nil {
		// An endpoint that is not the service (a wrong endpoint's debug
		// error page) may quote the request's headers: the tokens would be
		// in the error, which is logged, published and printed.
		return nil, &HandshakeError{StatusCode: resp.status, Body: redactTokens(resp.body, cfg.AccessToken, cfg.ClientToken),
			ChannelID: redactTokens(Printable(resp.get("channel-id")), cfg.AccessToken, cfg.ClientToken)}
	}
	c := &Conn{ws: ws, log: cfg.logger(), done: make(chan struct{}), channelID: resp.get("channel-id")}
	v, ok := versionOf(ws.subprotocol)
	if !ok {
		ws.closeNow()
		return nil, fmt.Errorf("tunnel: service chose subprotocol %q, want %s", ws.subprotocol, cfg.protocol().Subprotocol())
	}
	if v != cfg.protocol() {
		// Accepted, as the reference proxy does, but worth knowing (spec §2.2).
		c.log.Warn("service chose another protocol version than offered", "offered", cfg.protocol(), "chosen", v)
	}
	c.version = v
	c.born = time.Now()
	ws.onPong = c.pong

	// The connection's lifetime context is not the dial context (STYLE.md).
	c.life, c.cancel = context.WithCancelCause(context.Background())
	c.fr = NewFrameReader(ws)
	go c.keepalive(c.life, durationOr(cfg.PingInterval, 20*time.Second), cfg.IdleTimeout, cfg.PongTimeout)
	c.log.Info("tunnel connected", "host", u.Host, "protocol", v, "channel_id", c.channelID,
		"token", cfg.AccessToken, "client_token", cfg.ClientToken)
	return c, nil
}

// DefaultHandshakeTimeout is Config.HandshakeTimeout's default. It leaves the
// name's lookup the worst case of Go's resolver, 30 s (up to three
// nameservers, asked twice, 5 s each, for a query a DNS drops: AAAA behind some
// LTE modems), and the handshake its time after it.
const DefaultHandshakeTimeout = 45 * time.Second

// tlsConfig is TLS 1.2+ with the system roots plus CAFile, verified whatever
// InsecureSkipVerify says (Dial applies it to the service's connection only);
// SNI comes from the host.
func (cfg *Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile == "" {
		return tc, nil
	}
	pool, err := loadCA(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	// The CA file is trusted on top of the system roots, as before; but the chain
	// is checked against the CA file first and against the system roots only when
	// that fails. Parsing the system roots (x509.SystemCertPool) cost about 4 MiB
	// of heap for the process's life, most of an idle agent's memory with one
	// tunnel (docs/benchmarks.md). crypto/tls's own check is off only because
	// verifyPeer replaces it.
	tc.InsecureSkipVerify = true
	tc.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPeer(cs, pool) }
	return tc, nil
}

// ErrCAFile wraps a CA file (Config.CAFile) that cannot be read or holds no PEM
// certificate: no retry mends it until someone fixes the file.
var ErrCAFile = errors.New("tunnel: CA file")

// CheckCAFile loads a CA file or directory as Dial would, so that a mistake in it
// is found before anything listens or dials. The error wraps ErrCAFile.
func CheckCAFile(path string) error {
	_, err := loadCA(path)
	return err
}

// loadCA reads the PEM certificates of a file, or of the files of a directory.
func loadCA(path string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if err := AppendCAFile(pool, path); err != nil {
		return nil, err
	}
	return pool, nil
}

// AppendCAFile adds to pool the PEM certificates of a file, or of the files of
// a directory. The error wraps ErrCAFile; none found is one.
func AppendCAFile(pool *x509.CertPool, path string) error {
	files, err := CAFiles(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCAFile, err)
	}
	added := 0
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCAFile, err)
		}
		if pool.AppendCertsFromPEM(pem) {
			added++
		}
	}
	if added == 0 {
		return fmt.Errorf("%w: no PEM certificate found in %s", ErrCAFile, path)
	}
	return nil
}

// IsCertificateError reports whether err is a failure to verify the service's TLS
// certificate: an unknown authority, a wrong host name, a certificate expired or
// not yet valid (or a clock that is wrong).
func IsCertificateError(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &hn)
}

// certHint says what to look at when err is a certificate of the service, or of
// an https:// proxy, signed by no CA trusted, or returns "": CAFile, by the name
// the caller's user knows it by, and the system's roots (a device may have
// none: no CA bundle installed). The service's CA is named (AWS IoT Secure
// Tunneling's is Amazon Root CA 1); a proxy's is the proxy's own.
func (c *Config) certHint(err error) string {
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		// The other failures say enough themselves: crypto/x509's text
		// names the clock and the dates, or the name the certificate does
		// not hold.
		return ""
	}
	whose, ca := "the service's certificate", "the CA that signs it (AWS IoT Secure Tunneling: Amazon Root CA 1)"
	if errors.As(err, new(*ProxyError)) {
		whose, ca = "the HTTPS proxy's certificate", "the CA that signs the proxy's certificate"
	}
	name := c.CAFileName
	if name == "" {
		name = "the CA file"
	}
	if c.CAFile == "" {
		return whose + " is signed by no CA of the system's roots, and " + name + " is not set: set it to " + ca +
			", or install the system's CA certificates"
	}
	return whose + " is signed by no CA in " + name + " " + c.CAFile + " nor of the system's roots"
}

// pinServerName sets the name the server's certificate must hold. verifyPeer,
// which replaces crypto/tls's own check when a CA file is given, takes the name
// from the connection state; but crypto/tls sends no SNI for an IP address and
// leaves that name empty, and an empty name checks none: a certificate for any
// name, from the CA file or any public root, would pass for
// wss://203.0.113.5 and receive the tokens. So the verifier is bound to name.
// An IPv6 address's zone ("fe80::1%br-lan") says which link to dial: the
// certificate names the address without it.
func pinServerName(tc *tls.Config, name string) {
	if ip, err := netip.ParseAddr(name); err == nil {
		name = ip.WithZone("").String()
	}
	tc.ServerName = name
	if v := tc.VerifyConnection; v != nil {
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			cs.ServerName = name
			return v(cs)
		}
	}
}

// verifyPeer checks the server's chain and name as crypto/tls would with roots
// and the system roots in one pool. The error is the one against roots, in the
// type crypto/tls returns (its text starts "tls: failed to verify certificate").
func verifyPeer(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	_, err := leaf.Verify(opts)
	if err == nil {
		return nil
	}
	opts.Roots = nil // the system roots
	if _, serr := leaf.Verify(opts); serr == nil {
		return nil
	}
	return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
}

// received notes a frame or a pong, for the idle timeout.
func (c *Conn) received() { c.lastRx.Store(int64(time.Since(c.born))) }

// pong notes a pong: the service answers pings on this connection.
func (c *Conn) pong() {
	c.ponged.Store(true)
	c.received()
}

// idleFor is how long no frame or pong has come.
func (c *Conn) idleFor() time.Duration { return time.Since(c.born) - time.Duration(c.lastRx.Load()) }

// pingDue reports whether a ping is due at the tick at now, the last having
// gone at lastPing: once interval has passed, less half a tick. A tick comes
// every tick, read a little apart from lastPing's clock, so that the tick one
// interval on may find a few nanoseconds less than interval gone; with
// exactly interval wanted, that ping waited a whole tick more, and every
// second or third gap was twice ping_interval (40 s at the default), past a
// 30 s NAT or proxy idle timeout.
func pingDue(now, lastPing time.Time, interval, tick time.Duration) bool {
	return now.Sub(lastPing) >= interval-tick/2
}

// keepalive pings every interval without expecting a pong (the service may not answer
// before the other side connects, spec §3.7), and enforces the idle timeout, or
// the pong timeout once a pong has come.
func (c *Conn) keepalive(ctx context.Context, interval, idle, pong time.Duration) {
	defer close(c.done)
	if interval < 0 && idle <= 0 {
		<-ctx.Done()
		return
	}
	tick := interval
	if tick < 0 || idle > 0 && idle/2 < tick {
		tick = idle / 2
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	// A ping is written by a goroutine of its own, one at a time: a peer that
	// has stopped reading (a frozen service, a hung host) blocks every write
	// once the socket buffers are full, and a ping written here would then
	// stop the idle check too, for as long as the peer stays frozen. pinging
	// holds a token while a ping is being written; on the way out, the
	// connection is closing (Close, abort and finish close it or give it a
	// write deadline), which ends that write, and it is waited for.
	pinging := make(chan struct{}, 1)
	defer func() { pinging <- struct{}{} }()
	lastPing := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			limit, cause := idle, ErrIdle
			if pong > 0 && c.ponged.Load() {
				limit, cause = pong, ErrSilent
			}
			if limit > 0 && c.idleFor() > limit {
				c.log.Warn("tunnel closing: nothing came for "+limit.String(), "error", cause)
				c.abort(cause)
				return
			}
			if interval > 0 && pingDue(now, lastPing, interval, tick) {
				select {
				case pinging <- struct{}{}:
					lastPing = now
					go func() {
						defer func() { <-pinging }()
						// A missing pong is not an error (spec §3.7).
						_ = c.ws.ping(strconv.AppendInt(nil, now.UnixMilli(), 10))
					}()
				default: // the last ping is not written yet
				}
			}
		}
	}
}

// ReadMessage reads the next frame into m; m.Payload is valid until the next call.
// A Close frame from the service gives an error wrapping ErrClosedByService.
func (c *Conn) ReadMessage(m *Message) error {
	err := c.fr.Next(m)
	if err == nil {
		c.received()
		return nil
	}
	return c.readError(err)
}

func (c *Conn) readError(err error) error {
	if cause := context.Cause(c.life); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	var ce *CloseError
	if errors.As(err, &ce) {
		return fmt.Errorf("%w (status %d %s)", ErrClosedByService, ce.Code, ce.Reason)
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("tunnel: connection closed: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// WriteMessage sends m as one binary WebSocket message. It blocks while the socket
// is busy, which is how a fast local reader is slowed to the tunnel's pace.
func (c *Conn) WriteMessage(ctx context.Context, m *Message) error {
	if err := m.checkEncodable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Encoded straight into the frame buffer, under the write lock.
	if err := c.ws.writeFrameWith(opBinary, func(b []byte) ([]byte, error) { return AppendFrame(b, m) }); err != nil {
		return c.readError(err)
	}
	return nil
}

// Close sends a normal Close frame and ends the connection's goroutines.
func (c *Conn) Close() error {
	var err error
	c.closing.Do(func() {
		c.ws.closeWith(1000, "", 0)
		c.cancel(nil)
		<-c.done
	})
	return err
}

// abort drops the connection without a close handshake, recording why.
func (c *Conn) abort(cause error) {
	c.cancel(cause)
	c.ws.closeNow()
}

// finish ends the connection with cause after a Close frame, letting the
// reader run on until the service closes its side or wait has passed, so that
// the frames written just before reach it (see wsConn.closeSoon).
func (c *Conn) finish(cause error, wait time.Duration) {
	c.cancel(cause)
	c.ws.closeSoon(1000, "", wait)
}

// protocolCloseWait bounds how long closeAfterProtocolError waits for the
// service to close its side.
const protocolCloseWait = 2 * time.Second

// closeAfterProtocolError ends the connection after the session's handler
// refused a frame of the service's (ErrProtocol). The reader has stopped, and
// frames written just before (the STREAM_RESET of a refused stream) may still
// be on their way: a Close frame 1002 and a bounded wait for the service's own
// end let them arrive before the reconnect, where a plain close can reset the
// connection and the service's reader can be cut by the reconnect before it
// has read them.
func (c *Conn) closeAfterProtocolError() {
	c.ws.closeWith(1002, "protocol error", protocolCloseWait)
}

// closeNow drops the connection at once (no close handshake) and waits for its
// goroutines.
func (c *Conn) closeNow() {
	c.closing.Do(func() {
		c.abort(nil)
		<-c.done
	})
}
