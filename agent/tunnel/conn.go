package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
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
	// InsecureSkipVerify turns TLS verification off. Only for tests and labs.
	InsecureSkipVerify bool
	// AllowInsecureWebSocket permits a ws:// Endpoint (no TLS at all).
	AllowInsecureWebSocket bool
	// Proxy picks an HTTPS proxy per request. Nil means ProxyFromEnvironment.
	Proxy func(*http.Request) (*url.URL, error)

	// PingInterval between WebSocket pings. Zero means 20 s; negative disables pings.
	PingInterval time.Duration
	// IdleTimeout closes a connection on which nothing (frame or pong) arrived for
	// this long, and reconnects. Zero disables it: the service may not answer pings
	// before the other side is connected (spec §3.7).
	IdleTimeout time.Duration
	// HandshakeTimeout bounds TCP, proxy, TLS and the WebSocket upgrade. Zero: 30 s.
	HandshakeTimeout time.Duration
	// RetryMin and RetryMax bound the reconnect backoff (full jitter, doubling).
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
	StatusCode int
	Body       string // the first KiB of the response body, trimmed
	ChannelID  string // the channel-id header, if any
}

func (e *HandshakeError) Error() string {
	s := fmt.Sprintf("tunnel: handshake refused: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		s += ": " + e.Body
	}
	if e.ChannelID != "" {
		s += " (channel-id " + e.ChannelID + ")"
	}
	return s
}

// Temporary reports whether a retry may succeed: 5xx (and 429) are temporary; other
// 4xx need a new token or configuration (spec §2.6).
func (e *HandshakeError) Temporary() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
}

// ErrClosedByService is returned when the service closes the WebSocket with a Close
// frame, as on CloseTunnel or lifetime expiry. It is terminal for the access token.
var ErrClosedByService = errors.New("tunnel: closed by the service")

// ErrIdle is the cause of a connection closed by Config.IdleTimeout.
var ErrIdle = errors.New("tunnel: no traffic within the idle timeout")

// Conn is one WebSocket connection to the tunneling service, carrying tunnel frames.
// ReadMessage must be called from one goroutine; WriteMessage may be called
// concurrently (one frame per WebSocket message, spec §1.2).
type Conn struct {
	ws        *websocket.Conn
	fr        *FrameReader
	version   Version
	channelID string
	log       *slog.Logger

	lastRx  atomic.Int64 // unix nanos of the last frame or pong received
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
	tlsConf, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	proxy := cfg.Proxy
	if proxy == nil {
		proxy = ProxyFromEnvironment
	}
	transport := &http.Transport{
		Proxy:               proxy,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: 30 * time.Second,
		ForceAttemptHTTP2:   false,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()

	hdr := http.Header{}
	hdr.Set("access-token", cfg.AccessToken.Reveal())
	if !cfg.ClientToken.IsZero() {
		hdr.Set("client-token", cfg.ClientToken.Reveal())
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "porthole"
	}
	hdr.Set("User-Agent", ua)

	hctx, cancel := context.WithTimeout(ctx, durationOr(cfg.HandshakeTimeout, 30*time.Second))
	defer cancel()
	c := &Conn{log: cfg.logger(), done: make(chan struct{})}
	ws, resp, err := websocket.Dial(hctx, u.String(), &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: transport},
		HTTPHeader:      hdr,
		Subprotocols:    []string{cfg.protocol().Subprotocol()},
		CompressionMode: websocket.CompressionDisabled,
		OnPongReceived:  func(context.Context, []byte) { c.lastRx.Store(time.Now().UnixNano()) },
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			herr := &HandshakeError{StatusCode: resp.StatusCode, ChannelID: resp.Header.Get("channel-id")}
			if resp.Body != nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
				herr.Body = strings.TrimSpace(string(b))
			}
			return nil, herr
		}
		return nil, fmt.Errorf("tunnel: connecting to %s: %w", u.Host, err)
	}
	c.ws = ws
	c.channelID = resp.Header.Get("channel-id")
	v, ok := versionOf(ws.Subprotocol())
	if !ok {
		ws.CloseNow()
		return nil, fmt.Errorf("tunnel: service chose subprotocol %q, want %s", ws.Subprotocol(), cfg.protocol().Subprotocol())
	}
	c.version = v
	ws.SetReadLimit(MaxWebSocketMessage)
	c.lastRx.Store(time.Now().UnixNano())

	// The connection's lifetime context is not the dial context (STYLE.md).
	lctx, lcancel := context.WithCancelCause(context.Background())
	c.life, c.cancel = lctx, lcancel
	c.fr = NewFrameReader(&messageStream{ctx: lctx, ws: ws})
	go c.keepalive(lctx, durationOr(cfg.PingInterval, 20*time.Second), cfg.IdleTimeout)
	c.log.Info("tunnel connected", "host", u.Host, "protocol", v, "channel_id", c.channelID,
		"token", cfg.AccessToken, "client_token", cfg.ClientToken)
	return c, nil
}

// tlsConfig is TLS 1.2+ with the system roots plus CAFile; SNI comes from the host.
func (cfg *Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if cfg.CAFile == "" {
		return tc, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	files := []string{cfg.CAFile}
	if fi, err := os.Stat(cfg.CAFile); err != nil {
		return nil, fmt.Errorf("tunnel: CA file: %w", err)
	} else if fi.IsDir() {
		entries, err := os.ReadDir(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tunnel: CA directory: %w", err)
		}
		files = files[:0]
		for _, e := range entries {
			if !e.IsDir() {
				files = append(files, filepath.Join(cfg.CAFile, e.Name()))
			}
		}
	}
	added := 0
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("tunnel: reading CA %s: %w", f, err)
		}
		if pool.AppendCertsFromPEM(pem) {
			added++
		}
	}
	if added == 0 {
		return nil, fmt.Errorf("tunnel: no PEM certificate found in %s", cfg.CAFile)
	}
	tc.RootCAs = pool
	return tc, nil
}

// keepalive pings every interval without expecting a pong (the service may not answer
// before the other side connects, spec §3.7), and enforces the idle timeout.
func (c *Conn) keepalive(ctx context.Context, interval, idle time.Duration) {
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
	lastPing := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if idle > 0 && now.Sub(time.Unix(0, c.lastRx.Load())) > idle {
				c.log.Warn("tunnel idle, closing", "idle_timeout", idle)
				c.abort(ErrIdle)
				return
			}
			if interval > 0 && now.Sub(lastPing) >= interval {
				lastPing = now
				// Ping waits for a pong; bound the wait and ignore a missing one.
				pctx, cancel := context.WithTimeout(ctx, tick)
				_ = c.ws.Ping(pctx)
				cancel()
			}
		}
	}
}

// ReadMessage reads the next frame into m; m.Payload is valid until the next call.
// A Close frame from the service gives an error wrapping ErrClosedByService.
func (c *Conn) ReadMessage(m *Message) error {
	err := c.fr.Next(m)
	if err == nil {
		c.lastRx.Store(time.Now().UnixNano())
		return nil
	}
	return c.readError(err)
}

func (c *Conn) readError(err error) error {
	if cause := context.Cause(c.life); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if st := websocket.CloseStatus(err); st != -1 {
		return fmt.Errorf("%w (status %d)", ErrClosedByService, st)
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("tunnel: connection closed: %w", io.ErrUnexpectedEOF)
	}
	return err
}

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, MaxMessageSize+lengthPrefixSize); return &b }}

// WriteMessage sends m as one binary WebSocket message. It blocks while the socket
// is busy, which is how a fast local reader is slowed to the tunnel's pace.
func (c *Conn) WriteMessage(ctx context.Context, m *Message) error {
	bp := framePool.Get().(*[]byte)
	defer framePool.Put(bp)
	b, err := AppendFrame((*bp)[:0], m)
	if err != nil {
		return err
	}
	*bp = b
	if err := c.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		return c.readError(err)
	}
	return nil
}

// Close sends a normal Close frame and ends the connection's goroutines.
func (c *Conn) Close() error {
	var err error
	c.closing.Do(func() {
		err = c.ws.Close(websocket.StatusNormalClosure, "")
		c.cancel(nil)
		<-c.done
	})
	return err
}

// abort drops the connection without a close handshake, recording why.
func (c *Conn) abort(cause error) {
	c.cancel(cause)
	c.ws.CloseNow()
}

// closeNow drops the connection at once (no close handshake) and waits for its
// goroutines.
func (c *Conn) closeNow() {
	c.closing.Do(func() {
		c.abort(nil)
		<-c.done
	})
}

// messageStream turns the WebSocket's binary messages into one byte stream for the
// FrameReader; a text message is a protocol error (spec §1.2).
type messageStream struct {
	ctx context.Context
	ws  *websocket.Conn
	cur io.Reader
}

func (s *messageStream) Read(p []byte) (int, error) {
	for {
		if s.cur == nil {
			typ, r, err := s.ws.Reader(s.ctx)
			if err != nil {
				return 0, err
			}
			if typ != websocket.MessageBinary {
				s.ws.Close(websocket.StatusUnsupportedData, "text frames are not part of the protocol")
				return 0, protocolErrorf("text WebSocket message from the service")
			}
			s.cur = r
		}
		n, err := s.cur.Read(p)
		if err == io.EOF {
			s.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}
