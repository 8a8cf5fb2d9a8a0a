package tunneld

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/tools/internal/acceptretry"
	"github.com/porthole-iot/porthole/tools/internal/servertls"
)

// Defaults of Config.
const (
	DefaultRegion          = "us-east-1"
	DefaultAccountID       = "123456789012"
	DefaultMaxOpenTunnels  = 100
	DefaultClosedRetention = 3 * time.Hour // closed tunnels stay describable (spec §7)
	// DefaultMaxClosedTunnels bounds the closed tunnels kept for DescribeTunnel:
	// each one costs memory and a share of every state-file write, and a fleet
	// opening a tunnel a second would otherwise keep 10,800 of them.
	DefaultMaxClosedTunnels = 1000
)

// Config configures a Server. The zero value serves in memory, in us-east-1, without
// notifications.
type Config struct {
	// Region is reported in notifications and ARNs (whose partition follows it:
	// aws-cn for cn-*, aws-us-gov for us-gov-*, ...), and is the region of the
	// SigV4 credential scope with Credentials; "" means us-east-1. New refuses
	// one the agent does not take in a notification (1-64 characters of
	// [a-zA-Z0-9._-]).
	Region string
	// AccountID appears in tunnel ARNs; "" means 123456789012.
	AccountID string
	// DataDir holds the state file (tunnels.json), written atomically after every
	// change; "" keeps state in memory only. The server holds an exclusive flock on
	// the directory from New to Shutdown or Close: New fails with ErrDataDirInUse
	// while another server holds it.
	DataDir string
	// TLS, if not nil, makes Serve speak HTTPS and WSS, both planes on one
	// port with this one config; nil means plain HTTP and WS. Nil CipherSuites
	// mean the host tools' TLS 1.2 suites, ECDHE with AES-GCM or
	// ChaCha20-Poly1305 (tools/internal/servertls), not Go's defaults, which
	// also take AES-CBC with HMAC-SHA1.
	TLS *tls.Config
	// Notifier publishes destination tokens (OpenTunnel with a thingName, rotation
	// with DESTINATION or ALL); nil means none are published (and that is logged).
	// Notify is called from one goroutine, never from an API request.
	Notifier Notifier
	// MaxOpenTunnels is the LimitExceededException threshold; 0 means 100. New
	// refuses a negative one, and a negative Bandwidth.
	MaxOpenTunnels int
	// ClosedRetention is how long a closed tunnel stays describable, from its
	// close (an expired tunnel's expiry, even one past at start); 0 means 3 h.
	ClosedRetention time.Duration
	// MaxClosedTunnels is how many closed tunnels are kept describable at most;
	// past it the ones closed first are forgotten before their ClosedRetention
	// ends. 0 means 1000; New refuses a negative one.
	MaxClosedTunnels int
	// MaxConnections caps the connections served at once, on all the
	// listeners Serve is given: control-plane requests and data-plane
	// WebSockets alike (connlimit.go); beyond it, one per listener is
	// accepted and waits for a place, the others in the listen backlog. 0
	// means DefaultMaxConnections (1024); New refuses a negative one.
	MaxConnections int
	// Bandwidth limits every tunnel to this many bytes per second, frames both ways
	// and WebSocket pings and pongs together; 0 means unlimited.
	Bandwidth int
	// AllowUnsigned accepts control-plane requests without an Authorization header.
	// Otherwise a SigV4-shaped header is required. Ignored with Credentials.
	AllowUnsigned bool
	// Credentials maps access key IDs to secret access keys. Set, every control-plane
	// request must carry a valid SigV4 signature by one of them (clock skew at most
	// 15 minutes), scoped to Region and the service IoTSecuredTunneling (SigningName);
	// nil or empty means signatures are not verified.
	Credentials map[string]string
	// Logger receives the server's records; nil discards. Tokens are never logged,
	// only their fingerprints.
	Logger *slog.Logger

	// now is the clock; nil means time.Now.
	now func() time.Time
	// tick is the janitor's period; 0 means a second.
	tick time.Duration
	// retry is the first pause after a failed notification; 0 means 100 ms.
	retry time.Duration
	// readTimeout bounds reading one request, headers and body, from its first
	// byte; 0 means requestReadTimeout. Upgraded WebSockets are not bound by it.
	readTimeout time.Duration
	// signingName is the service a SigV4 credential scope must name; "" means
	// SigningName (tests use the AWS test suite's "service").
	signingName string
	// beforeLock runs between checking DataDir and making and locking it;
	// nil means nothing. Tests make another user's directory there.
	beforeLock func()
	// beforeCommit runs in commit, between an API call's change and the save
	// that makes it durable; nil means nothing. Tests hold a call there.
	beforeCommit func()
	// afterFailedCommit runs in commit after its save failed, before the
	// caller answers the error; nil means nothing. Tests let another call's
	// save run there.
	afterFailedCommit func()
}

// requestReadTimeout is how long a client has to send a whole request: a control
// plane body is at most a few KiB (1 MiB with many tags: body.go), and a stalled one would hold its connection and
// goroutine for as long as the client likes.
const requestReadTimeout = 30 * time.Second

// Server is a self-hosted AWS IoT Secure Tunneling service: the control plane on
// POST / and the data plane on /tunnel, on one listener.
type Server struct {
	cfg    Config
	log    *slog.Logger
	dp     *dataplane.Server
	hs     *http.Server
	ctx    context.Context // ends at Shutdown/Close: the workers' lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup
	dirty  chan struct{} // buffered 1: state changed, save it
	wake   chan struct{} // buffered 1: a notification is pending
	once   sync.Once

	saveMu       sync.Mutex // serializes state file writes
	saveEnded    bool       // under saveMu: stop saved for the last time (errStopped)
	saveTickets  uint64     // under mu: saves asked for
	savedThrough uint64     // under saveMu: tickets covered by the last successful save
	lock         *os.File   // holds the flock on Config.DataDir until stop; nil without one

	refusals refusalLog    // the lines of refused requests and handshakes
	bodies   bodyBudget    // of control-plane bodies over freeBody (body.go)
	conns    chan struct{} // a token per connection held, Config.MaxConnections (connlimit.go)

	lingerMu    sync.Mutex
	lingerEnded bool           // under lingerMu: stopping; hangUp lingers no more
	lingering   sync.WaitGroup // hangUp calls (body.go)

	mu      sync.Mutex
	tunnels map[string]*record
	// sweepAt: no tunnel expires and no closed one is to be forgotten or
	// trimmed before it, so sweep, which every handshake and API call runs,
	// returns at once; zero after a tunnel is opened or closed.
	sweepAt time.Time
	sweeps  int                 // sweeps that looked at every tunnel, for the tests
	revoked map[tokenKey]string // tokens revoked by rotations → tunnel id (revoke.go)
}

// record is one tunnel as the control plane keeps it, and as it is saved.
type record struct {
	ID            string             `json:"id"`
	Arn           string             `json:"arn"`
	Description   string             `json:"description,omitempty"`
	Dest          *DestinationConfig `json:"destinationConfig,omitempty"`
	Lifetime      int                `json:"lifetimeMinutes"`
	Tags          []Tag              `json:"tags,omitempty"`
	Status        string             `json:"status"`
	CreatedAt     time.Time          `json:"createdAt"`
	LastUpdatedAt time.Time          `json:"lastUpdatedAt"`
	ExpiresAt     time.Time          `json:"expiresAt"`
	ClosedAt      time.Time          `json:"closedAt,omitzero"`
	// Tokens and their state, per side (source, destination), as of the last save.
	Tokens       [2]string    `json:"tokens"`
	Used         [2]bool      `json:"used"`
	ClientTokens [2]string    `json:"clientTokens"`
	SideUpdated  [2]time.Time `json:"sideUpdated"`
	// NotifyPending is set until the current destination token was published.
	NotifyPending bool `json:"notifyPending,omitempty"`
	// Revoked are the keys of the tokens rotated away, oldest first, as in
	// Server.revoked; a file saved before they were kept has none.
	Revoked []tokenKey `json:"revoked,omitempty"`

	dp *dataplane.Tunnel
	// saved is the token state of each side as last written (or restored): a
	// data-plane change that leaves it alone needs no write.
	saved [2]durableSide
	// savedPending is NotifyPending as last written: a delivered notification
	// is saved, or a crash would publish the token again at the next start.
	savedPending bool
}

// durableSide is what must survive a restart of one side's token state: whether
// the token was used, and by which client token. Losing a use would make a
// single-use token (spec §3.8) good again for anyone who has it.
type durableSide struct {
	token, clientToken string
	used               bool
}

// CloseReasonExpired is the reason of the Close frame a client gets when its
// tunnel reaches its lifetime (maxLifetimeTimeoutMinutes).
const CloseReasonExpired = "tunnel expired"

// New makes a Server and restores the state saved in cfg.DataDir, if any. It starts
// the server's workers (state saver, expiry, notifications); Shutdown or Close ends
// them.
func New(cfg Config) (*Server, error) {
	if cfg.MaxOpenTunnels < 0 || cfg.Bandwidth < 0 || cfg.MaxClosedTunnels < 0 || cfg.MaxConnections < 0 {
		return nil, fmt.Errorf("tunneld: Config.MaxOpenTunnels %d, Config.MaxClosedTunnels %d, Config.MaxConnections %d and Config.Bandwidth %d must not be negative",
			cfg.MaxOpenTunnels, cfg.MaxClosedTunnels, cfg.MaxConnections, cfg.Bandwidth)
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxClosedTunnels == 0 {
		cfg.MaxClosedTunnels = DefaultMaxClosedTunnels
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if err := checkRegion(cfg.Region); err != nil {
		return nil, fmt.Errorf("tunneld: Config.Region %q: %w", cfg.Region, err)
	}
	if cfg.AccountID == "" {
		cfg.AccountID = DefaultAccountID
	}
	if cfg.MaxOpenTunnels == 0 {
		cfg.MaxOpenTunnels = DefaultMaxOpenTunnels
	}
	if cfg.ClosedRetention == 0 {
		cfg.ClosedRetention = DefaultClosedRetention
	}
	if cfg.tick == 0 {
		cfg.tick = time.Second
	}
	if cfg.retry == 0 {
		cfg.retry = 100 * time.Millisecond
	}
	if cfg.readTimeout == 0 {
		cfg.readTimeout = requestReadTimeout
	}
	if cfg.TLS != nil {
		// WebSocket upgrades need HTTP/1.1: never negotiate h2.
		cfg.TLS = cfg.TLS.Clone()
		if len(cfg.TLS.NextProtos) == 0 {
			cfg.TLS.NextProtos = []string{"http/1.1"}
		}
		servertls.Restrict(cfg.TLS)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		tunnels: make(map[string]*record),
		dirty:   make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
		bodies:  bodyBudget{max: largeBodyBudget},
		conns:   make(chan struct{}, cfg.MaxConnections),
	}
	s.dp = &dataplane.Server{
		Logger:   log.With("plane", "data"),
		OnChange: s.dataplaneChanged,
		// A token's first use is on disk before its 101: a crash after the 101
		// must not let a single-use token in again.
		OnFirstUse: func(*dataplane.Tunnel) error { return s.save() },
	}
	// ReadTimeout bounds the body too. It does not cut the WebSockets: net/http
	// clears a connection's deadlines when it is hijacked (conn.hijackLocked;
	// TestWebSocketOutlivesReadTimeout).
	s.hs = &http.Server{
		Handler: s,
		// A SigV4 request's headers are a few KiB, a handshake's at most 4
		// (spec §2); not net/http's 1 MiB.
		MaxHeaderBytes:    64 << 10,
		ConnContext:       s.dp.ConnContext,
		ReadHeaderTimeout: min(10*time.Second, cfg.readTimeout),
		ReadTimeout:       cfg.readTimeout,
		// WriteTimeout runs from the end of a request's headers: its body (at
		// most readTimeout), the call, and the answer. Without it a client that
		// pipelines requests and never reads the answers blocks the server's
		// write for good, and holds the connection and its goroutine as long as
		// it likes. Hijacking clears it, as ReadTimeout.
		WriteTimeout: 2 * cfg.readTimeout,
		TLSConfig:    cfg.TLS,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no h2
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if cfg.DataDir != "" {
		// Before reading the state: a second server on this directory would
		// overwrite the first one's tunnels.
		dir, err := checkDataDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		s.cfg.DataDir = dir // links resolved, as checked
		if cfg.beforeLock != nil {
			cfg.beforeLock()
		}
		lock, err := LockDir(dir)
		if err != nil {
			return nil, err
		}
		// The path to what was made and locked, not only what was there before.
		if err := checkLocked(lock, dir); err != nil {
			lock.Close()
			return nil, err
		}
		s.lock = lock
	}
	if err := s.load(); err != nil {
		s.unlock()
		return nil, err
	}
	s.sweep() // tunnels that expired while the server was down take no handshake
	// Fail now, not at the first OpenTunnel, if the data directory is not writable.
	if err := s.save(); err != nil {
		s.unlock()
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(3)
	go s.saver()
	go s.janitor()
	go s.notifier()
	s.signal(s.wake)
	return s, nil
}

func (s *Server) now() time.Time {
	if s.cfg.now != nil {
		return s.cfg.now()
	}
	return time.Now()
}

// ServeHTTP routes WebSocket upgrades and /tunnel to the data plane and everything
// else to the control plane.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/tunnel" || strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		s.sweep()
		if r.URL.Path == "/tunnel" && s.refuseRevoked(w, r, r.RemoteAddr) {
			return
		}
		hl := &handshakeLogger{ResponseWriter: w, s: s, r: r}
		s.dp.ServeHTTP(hl, r)
		hl.done()
		return
	}
	s.serveAPI(w, r)
}

// Serve accepts connections on l (HTTPS if Config.TLS is set) until Shutdown or
// Close, and then returns ErrServerClosed. It holds at most Config.MaxConnections
// at once, with those of the other listeners it serves: past that, one more is
// accepted and waits for a place, and new ones wait in l's backlog. Accept errors that pass by
// themselves (out of descriptors or memory) are waited out, the first of a run
// logged at Warn: net/http's Serve returns on ENOBUFS and ENOMEM, which would
// end the command and every tunnel, and logs EMFILE only at Debug.
func (s *Server) Serve(l net.Listener) error {
	l = acceptretry.Wrap(newLimitListener(l, s.conns, s.log), s.log)
	if s.cfg.TLS != nil {
		return s.hs.ServeTLS(dataplane.BatchingListener(l), "", "")
	}
	return s.hs.Serve(l)
}

// Shutdown stops accepting, waits for API requests in flight (until ctx ends), cuts
// every tunnel WebSocket without a Close frame (clients reconnect to the next
// instance with their client tokens), stops the workers and saves the state.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.hs.Shutdown(ctx)
	s.stop()
	return err
}

// Close is Shutdown without waiting for API requests in flight.
func (s *Server) Close() error {
	err := s.hs.Close()
	s.stop()
	return err
}

func (s *Server) stop() {
	s.once.Do(func() {
		s.dp.Close()
		s.cancel()
		s.wg.Wait()
		s.endLingering()
		if err := s.save(); err != nil {
			s.log.Error("saving state on shutdown", "err", err)
		}
		// A request still running (Shutdown's ctx ended first, or Close) must
		// not write after this: the next instance may hold the directory by
		// then, and its state would be overwritten with this one's.
		s.saveMu.Lock()
		s.saveEnded = true
		s.saveMu.Unlock()
		s.unlock()
	})
}

// errStopped is save's error once the server has stopped.
var errStopped = errors.New("tunneld: stopped; the state is no longer saved")

// unlock releases the data directory, after the last save.
func (s *Server) unlock() {
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// Dataplane returns the data-plane tunnel of an open tunnel, for the knobs tests and
// labs use (Rechunk, SetBandwidth, Drop, DropAfter, SessionReset, SetPong), or nil.
func (s *Server) Dataplane(tunnelID string) *dataplane.Tunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.tunnels[tunnelID]; r != nil && r.Status == StatusOpen {
		return r.dp
	}
	return nil
}

// FailHandshakes makes the next n data-plane handshakes answer status (e.g. 503)
// with body, before any other check.
func (s *Server) FailHandshakes(n, status int, body string) {
	s.dp.FailHandshakes(n, status, body)
}

// OpenTunnel opens a tunnel and returns its ID, ARN and access tokens. With a
// destinationConfig.thingName, the destination token is published to the thing.
func (s *Server) OpenTunnel(ctx context.Context, in *OpenTunnelInput) (*OpenTunnelOutput, error) {
	if in == nil {
		in = &OpenTunnelInput{}
	}
	if err := in.validate(); err != nil {
		return nil, err
	}
	lifetime := maxLifetimeMinutes
	if in.TimeoutConfig != nil && in.TimeoutConfig.MaxLifetimeTimeoutMinutes != 0 {
		lifetime = in.TimeoutConfig.MaxLifetimeTimeoutMinutes
	}
	s.sweep()
	now := s.now()
	s.mu.Lock()
	open := 0
	for _, r := range s.tunnels {
		if r.Status == StatusOpen {
			open++
		}
	}
	if open >= s.cfg.MaxOpenTunnels {
		s.mu.Unlock()
		return nil, &APIError{Type: ErrTypeLimitExceeded, Message: fmt.Sprintf("%d tunnels are open, the limit is %d", open, s.cfg.MaxOpenTunnels)}
	}
	id := dataplane.NewUUID()
	r := &record{
		ID:            id,
		Arn:           fmt.Sprintf("arn:%s:iot:%s:%s:tunnel/%s", partition(s.cfg.Region), s.cfg.Region, s.cfg.AccountID, id),
		Description:   in.Description,
		Dest:          cloneDest(in.DestinationConfig),
		Lifetime:      lifetime,
		Tags:          slices.Clone(in.Tags),
		Status:        StatusOpen,
		CreatedAt:     now,
		LastUpdatedAt: now,
		ExpiresAt:     now.Add(time.Duration(lifetime) * time.Minute),
	}
	if err := s.registerLocked(r); err != nil {
		s.mu.Unlock()
		return nil, &APIError{Type: ErrTypeInternalFailure, Message: err.Error(), Status: http.StatusInternalServerError}
	}
	notify := thingOf(r) != ""
	r.NotifyPending = notify
	s.tunnels[id] = r
	s.sweepAt = time.Time{}
	src, dst := r.dp.Side(dataplane.Source).Token, r.dp.Side(dataplane.Destination).Token
	// With the change: an error below forgets the tunnel, which is right
	// only if no written snapshot holds it. A ticket taken later would not be
	// covered by a snapshot taken meanwhile, whose write (another call's, or
	// the last one at a stop) left the tunnel open in the file, to be
	// notified and kept open by the next instance.
	ticket := s.saveTicketLocked()
	s.mu.Unlock()

	var thing string
	var services []string
	if dc := in.DestinationConfig; dc != nil {
		thing, services = dc.ThingName, dc.Services
	}
	if err := s.commit(ticket, notify); err != nil {
		// No one has its tokens: a tunnel left open would only count against
		// the limit, and be notified to its thing. Unless a write since
		// (another call's, once this one's failed) has it open in the file:
		// then it is answered as saved.
		if s.forgetUnsaved(r, ticket) {
			return nil, err
		}
		s.log.Info("the tunnel's save failed, but a later one wrote it", "tunnel", id)
		if notify {
			s.signal(s.wake)
		}
	}
	s.log.Info("tunnel opened", append([]any{"tunnel", id, "thing", thing, "services", services, "lifetime_min", lifetime,
		"source_token", fingerprint(src), "destination_token", fingerprint(dst)}, callerAttrs(ctx)...)...)
	return &OpenTunnelOutput{TunnelID: id, TunnelArn: r.Arn, SourceAccessToken: src, DestinationAccessToken: dst}, nil
}

// CloseTunnel closes a tunnel: both sides get a Close frame and its tokens stop
// working. The tunnel stays describable as CLOSED for Config.ClosedRetention, unless
// in.Delete. Closing a closed tunnel is not an error.
func (s *Server) CloseTunnel(ctx context.Context, in *CloseTunnelInput) error {
	if err := checkTunnelID(in.TunnelID); err != nil {
		return err
	}
	s.sweep()
	s.mu.Lock()
	r := s.tunnels[in.TunnelID]
	if r == nil {
		s.mu.Unlock()
		return notFound("tunnel %s not found", in.TunnelID)
	}
	s.closeLocked(r, "tunnel closed", s.now())
	if in.Delete {
		s.forgetLocked(r)
	}
	s.trimClosedLocked()
	ticket := s.saveTicketLocked()
	s.mu.Unlock()
	s.log.Info("tunnel closed", append([]any{"tunnel", r.ID, "deleted", in.Delete}, callerAttrs(ctx)...)...)
	return s.commit(ticket, false)
}

// DescribeTunnel describes a tunnel, open or closed.
func (s *Server) DescribeTunnel(ctx context.Context, in *DescribeTunnelInput) (*DescribeTunnelOutput, error) {
	if err := checkTunnelID(in.TunnelID); err != nil {
		return nil, err
	}
	s.sweep()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.tunnels[in.TunnelID]
	if r == nil {
		return nil, notFound("tunnel %s not found", in.TunnelID)
	}
	s.syncLocked(r)
	t := &Tunnel{
		TunnelID:          r.ID,
		TunnelArn:         r.Arn,
		Status:            r.Status,
		Description:       r.Description,
		DestinationConfig: cloneDest(r.Dest),
		TimeoutConfig:     &TimeoutConfig{MaxLifetimeTimeoutMinutes: r.Lifetime},
		Tags:              slices.Clone(r.Tags),
		CreatedAt:         Timestamp{r.CreatedAt},
		LastUpdatedAt:     Timestamp{r.LastUpdatedAt},
	}
	for side, p := range []**ConnectionState{&t.SourceConnectionState, &t.DestinationConnectionState} {
		cs := &ConnectionState{Status: StatusDisconnected, LastUpdatedAt: Timestamp{r.SideUpdated[side]}}
		if r.Status == StatusOpen && r.dp.Connected(dataplane.Side(side)) {
			cs.Status = StatusConnected
		}
		*p = cs
	}
	return &DescribeTunnelOutput{Tunnel: t}, nil
}

// ListTunnels lists tunnels, newest first, optionally only those of a thing. Its
// nextToken is a cursor, the last listed tunnel's place in that order: the next
// page starts after it, so no tunnel is listed twice or skipped when tunnels are
// opened or closed between pages (tunnels opened meanwhile, being newer, are not on
// later pages).
func (s *Server) ListTunnels(ctx context.Context, in *ListTunnelsInput) (*ListTunnelsOutput, error) {
	if in == nil {
		in = &ListTunnelsInput{}
	}
	if err := in.validate(); err != nil {
		return nil, err
	}
	s.sweep()
	var after *cursor
	if in.NextToken != "" {
		c, err := decodeCursor(in.NextToken)
		if err != nil {
			return nil, err
		}
		after = &c
	}
	limit := in.MaxResults
	if limit == 0 {
		limit = maxListResults
	}
	s.mu.Lock()
	var rs []*record
	for _, r := range s.tunnels {
		if in.ThingName != "" && thingOf(r) != in.ThingName {
			continue
		}
		if after != nil && compareListOrder(keyOf(r), *after) <= 0 {
			continue // on an earlier page
		}
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *record) int { return compareListOrder(keyOf(a), keyOf(b)) })
	out := &ListTunnelsOutput{TunnelSummaries: []TunnelSummary{}}
	for _, r := range rs[:min(limit, len(rs))] {
		out.TunnelSummaries = append(out.TunnelSummaries, TunnelSummary{
			TunnelID: r.ID, TunnelArn: r.Arn, Status: r.Status, Description: r.Description,
			CreatedAt: Timestamp{r.CreatedAt}, LastUpdatedAt: Timestamp{r.LastUpdatedAt},
		})
	}
	if len(rs) > limit {
		out.NextToken = keyOf(rs[limit-1]).encode()
	}
	s.mu.Unlock()
	return out, nil
}

// RotateTunnelAccessToken revokes the current access tokens of the given mode and
// returns new ones, valid for the rest of the tunnel's lifetime. A side connected
// with a revoked token gets a Close frame (1008, CloseReasonTokenRotated) and is
// dropped, and a reconnect with that token is refused with BodyTokenRotated; the
// other side, if connected and not rotated, gets SESSION_RESET (revoke.go says why:
// spec §4 leaves this open, and rotation is how a leaked token is revoked). With
// DESTINATION or ALL and a thingName, the new destination token is published, after
// the close. A destinationConfig may change the thingName, not the services.
func (s *Server) RotateTunnelAccessToken(ctx context.Context, in *RotateTunnelAccessTokenInput) (*RotateTunnelAccessTokenOutput, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	s.sweep()
	s.mu.Lock()
	r := s.tunnels[in.TunnelID]
	if r == nil || r.Status != StatusOpen {
		s.mu.Unlock()
		if r != nil {
			return nil, invalid("tunnel %s is closed", in.TunnelID)
		}
		return nil, notFound("tunnel %s not found", in.TunnelID)
	}
	if dc := in.DestinationConfig; dc != nil {
		if !slices.Equal(dc.Services, servicesOf(r)) {
			s.mu.Unlock()
			return nil, invalid("destinationConfig.services %q differ from the tunnel's %q; services cannot be changed", dc.Services, servicesOf(r))
		}
		r.Dest = cloneDest(dc)
	}
	out := &RotateTunnelAccessTokenOutput{TunnelArn: r.Arn}
	var rotated []dataplane.Side
	if in.ClientMode != ClientModeDestination {
		rotated = append(rotated, dataplane.Source)
	}
	if in.ClientMode != ClientModeSource {
		rotated = append(rotated, dataplane.Destination)
	}
	notify := false
	var cut []dataplane.Side
	for _, side := range rotated {
		s.revokeLocked(r, r.dp.Side(side).Token)
		// RevokeClose closes the side connected with the old token in the
		// same step as the rotation, so nobody's connection with the new
		// token can be closed; it does not wait for the close.
		tok, wasUp := r.dp.RevokeClose(side, CloseReasonTokenRotated)
		if wasUp {
			cut = append(cut, side)
		}
		if side == dataplane.Source {
			out.SourceAccessToken = tok
		} else {
			out.DestinationAccessToken = tok
			notify = thingOf(r) != ""
			r.NotifyPending = notify
		}
	}
	r.LastUpdatedAt = s.now()
	dp := r.dp
	ticket := s.saveTicketLocked()
	s.mu.Unlock()
	for _, side := range cut {
		s.log.Info("side closed: its access token was rotated", "tunnel", r.ID, "side", side)
		if len(rotated) == 1 && dp.Connected(1-side) {
			dp.SessionReset(1 - side)
		}
	}
	s.log.Info("tokens rotated", append([]any{"tunnel", r.ID, "mode", in.ClientMode,
		"source_token", fingerprint(out.SourceAccessToken), "destination_token", fingerprint(out.DestinationAccessToken)}, callerAttrs(ctx)...)...)
	if err := s.commit(ticket, notify); err != nil {
		if notify {
			// The rotation is in effect all the same (the old token
			// revoked, its side cut; the next save that works keeps it):
			// unpublished, the device waited cut off for an unrelated
			// wake of the notifier.
			s.signal(s.wake)
		}
		return nil, err
	}
	return out, nil
}

// registerLocked registers r with the data plane, with its saved tokens if any,
// closed unless r is open.
func (s *Server) registerLocked(r *record) error {
	t, err := s.dp.OpenTunnel(dataplane.TunnelConfig{
		ID: r.ID, Services: servicesOf(r), Tokens: r.Tokens, Used: r.Used,
		ClientTokens: r.ClientTokens, LastUpdated: r.SideUpdated,
		Closed: r.Status != StatusOpen,
	})
	if err != nil {
		return err
	}
	t.SetBandwidth(s.cfg.Bandwidth)
	r.dp = t
	s.syncLocked(r)
	return nil
}

// syncLocked copies the data plane's token and connection state into r.
func (s *Server) syncLocked(r *record) { r.sync(r.dp.Sides()) }

// sync copies sides, a snapshot of r's data-plane tunnel, into r.
func (r *record) sync(sides [2]dataplane.SideState) {
	for i, st := range sides {
		r.Tokens[i], r.Used[i], r.ClientTokens[i], r.SideUpdated[i] = st.Token, st.Used, st.ClientToken, st.LastUpdated
	}
}

// closeLocked closes an open tunnel with a Close frame to both sides, and records
// it closed at the given time: now for CloseTunnel, the expiry for an expired
// tunnel, which may be long past after a restart.
func (s *Server) closeLocked(r *record, reason string, at time.Time) {
	if r.Status != StatusOpen {
		return
	}
	r.Status, r.ClosedAt, r.LastUpdatedAt, r.NotifyPending = StatusClosed, at, at, false
	s.sweepAt = time.Time{}
	r.dp.CloseReason(reason)
	s.syncLocked(r)
}

// commit returns once a save covers ticket, so that an API answer is durable,
// and wakes the notifier if asked. ticket is taken under s.mu with the change
// (saveTicketLocked): one taken after it would not be covered by a save whose
// snapshot came between the two, so a change the stop's last save wrote was
// answered as lost. When the state cannot be saved (a full disk, or the server
// stopped) the answer is an error: a change reported done would be forgotten by
// a restart (a closed tunnel open again, a revoked token valid again). The
// change stays in memory, and the next save that works keeps it.
func (s *Server) commit(ticket uint64, notify bool) error {
	if s.cfg.beforeCommit != nil {
		s.cfg.beforeCommit()
	}
	if err := s.saveThrough(ticket); err != nil {
		s.log.Error("saving state", "err", err)
		if s.cfg.afterFailedCommit != nil {
			s.cfg.afterFailedCommit()
		}
		return &APIError{Type: ErrTypeInternalFailure, Status: http.StatusInternalServerError,
			Message: "the tunneling service could not save its state (its log says why); the change may not survive a restart"}
	}
	if notify {
		s.signal(s.wake)
	}
	return nil
}

func (s *Server) markDirty() { s.signal(s.dirty) }

// dataplaneChanged is the data plane's OnChange: a side connected or
// disconnected, or a failed upgrade gave its token back.
// It may run with s.mu held (CloseTunnel closes the data-plane tunnel under it), so
// it only wakes the saver, which writes only if a token's use changed.
func (s *Server) dataplaneChanged(*dataplane.Tunnel) { s.markDirty() }

// durableChanged reports whether a token's use, or a notification's delivery,
// changed since the last write:
// connection states and their times are not worth an fsync each (after a
// restart every side is disconnected anyway).
func (s *Server) durableChanged() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.tunnels {
		if r.saved != durableOf(r.dp.Sides()) || r.savedPending != r.NotifyPending {
			return true
		}
	}
	return false
}

// durableOf is the token state of a tunnel's sides, as saved.
func durableOf(sides [2]dataplane.SideState) (d [2]durableSide) {
	for i, st := range sides {
		d[i] = durableSide{token: st.Token, clientToken: st.ClientToken, used: st.Used}
	}
	return d
}

// forgetLocked drops r: it is no longer describable and its tokens are unknown.
func (s *Server) forgetLocked(r *record) {
	delete(s.tunnels, r.ID)
	s.forgetRevokedLocked(r)
	s.dp.Remove(r.dp)
}

// trimClosedLocked forgets the tunnels closed first while more than
// Config.MaxClosedTunnels are closed, and reports whether it forgot any.
func (s *Server) trimClosedLocked() bool {
	var closed []*record
	for _, r := range s.tunnels {
		if r.Status == StatusClosed {
			closed = append(closed, r)
		}
	}
	n := len(closed) - s.cfg.MaxClosedTunnels
	if n <= 0 {
		return false
	}
	slices.SortFunc(closed, func(a, b *record) int {
		if c := a.ClosedAt.Compare(b.ClosedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, r := range closed[:n] {
		s.forgetLocked(r)
	}
	s.log.Info("closed tunnels forgotten: more than the limit are closed", "forgotten", n, "max_closed_tunnels", s.cfg.MaxClosedTunnels)
	return true
}

func (s *Server) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// saver writes the state after data-plane changes that use a token.
func (s *Server) saver() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.dirty:
			if !s.durableChanged() {
				continue
			}
			if err := s.save(); err != nil {
				s.log.Error("saving state", "err", err)
			}
		}
	}
}

// janitor closes expired tunnels and forgets closed ones after the retention.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.tick)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// sweep is one round of the janitor. The API calls and handshakes that depend on
// whether a tunnel is open run it first as well, so that a tunnel's lifetime ends
// when it says, not at the janitor's next round: a token is refused, and the
// tunnel described CLOSED, from its expiry on.
func (s *Server) sweep() {
	// By the wall clock, as a record restored from the state file has only
	// that (and as AWS, and DescribeTunnel's expiresAt, go): after a step of
	// the host's clock (NTP's first answer, a laptop resumed from sleep,
	// whose monotonic clock does not count the sleep) a running server
	// closes a tunnel when a restarted one would.
	now := s.now().Round(0)
	changed := false
	s.mu.Lock()
	if !s.sweepAt.IsZero() && now.Before(s.sweepAt) {
		s.mu.Unlock()
		return
	}
	s.sweeps++
	next := now.Add(time.Hour) // the most a sweep waits with nothing due
	for id, r := range s.tunnels {
		if r.Status == StatusOpen && !now.Before(r.ExpiresAt) {
			// Closed at its expiry, not now: a tunnel that expired while the
			// server was down would otherwise be described as closed at the
			// restart, and kept ClosedRetention (and a MaxClosedTunnels slot)
			// from then; closed at its expiry, the check below forgets it in
			// this same sweep if its retention has ended too.
			s.log.Info("tunnel expired", "tunnel", id, "expired_at", r.ExpiresAt)
			s.closeLocked(r, CloseReasonExpired, r.ExpiresAt)
			changed = true
		}
		due := r.ExpiresAt
		if r.Status == StatusClosed {
			if due = r.ClosedAt.Add(s.cfg.ClosedRetention); !now.Before(due) {
				s.log.Info("closed tunnel forgotten", "tunnel", id)
				s.forgetLocked(r)
				changed = true
				continue
			}
		}
		if due.Before(next) {
			next = due
		}
	}
	if s.trimClosedLocked() {
		changed = true
	}
	s.sweepAt = next
	var ticket uint64
	if changed {
		ticket = s.saveTicketLocked()
	}
	s.mu.Unlock()
	if changed {
		s.commit(ticket, false) // an error is logged; the next sweep or call saves again
	}
}

func cloneDest(dc *DestinationConfig) *DestinationConfig {
	if dc == nil {
		return nil
	}
	return &DestinationConfig{ThingName: dc.ThingName, Services: slices.Clone(dc.Services)}
}

// partitions are the AWS partitions other than aws by the prefix of their
// regions' names, as the SDKs' partitions.json has them (regionRegex).
var partitions = []struct{ prefix, partition string }{
	{"cn-", "aws-cn"},
	{"us-gov-", "aws-us-gov"},
	{"us-iso-", "aws-iso"},
	{"us-isob-", "aws-iso-b"},
	{"eu-isoe-", "aws-iso-e"},
	{"us-isof-", "aws-iso-f"},
	{"eusc-", "aws-eusc"},
}

// partition is the partition of region, the second field of an ARN: a tunnel
// opened in cn-north-1 is arn:aws-cn:iot:cn-north-1:..., not arn:aws:, and an
// AWS SDK or IAM policy written for the region expects that.
func partition(region string) string {
	for _, p := range partitions {
		if strings.HasPrefix(region, p.prefix) {
			return p.partition
		}
	}
	return "aws"
}

// keyOf is r's place in the ListTunnels order.
func keyOf(r *record) cursor { return cursor{created: r.CreatedAt, id: r.ID} }

func thingOf(r *record) string {
	if r.Dest == nil {
		return ""
	}
	return r.Dest.ThingName
}

func servicesOf(r *record) []string {
	if r.Dest == nil {
		return nil
	}
	return r.Dest.Services
}
