//go:build linux

package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/agent/internal/quiet"
	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/sshd"
)

// Agent is the device agent: it listens for tunnel notifications and runs a
// destination session for each, routing streams to the configured services.
type Agent struct {
	cfg    *Config
	log    *slog.Logger
	ssh    *sshd.Server
	mqtt   *notify.Listener
	events *eventQueue
	// refusals bounds the audit events of refused logins, sessions and forwards,
	// rejections the events of rejected notifications.
	refusals   refusalLimit
	rejections refusalLimit
	store      stateStore
	svc        atomic.Pointer[map[string]string]
	proxy      func(*url.URL) (*url.URL, error) // tunnel.https_proxy, parsed once; nil: the environment

	// now is the clock; nil means time.Now (a test seam).
	now func() time.Time

	mu sync.Mutex
	// sessions are kept by access token, not by its fingerprint: the
	// fingerprint is 32 bits, and of two tunnels whose tokens share one the
	// second was taken for the first and never joined.
	sessions map[string]*session
	ctx      context.Context // set by Run
	wg       sync.WaitGroup
	sshConns sync.WaitGroup
}

// session is one destination session of the agent.
type session struct {
	fp      string
	token   string // the access token, to forget the saved state when yielding
	started time.Time
	// received is when the tunnel's notification came, on the monotonic
	// clock: what its age is when the wall clock has been stepped since. Zero
	// when not known (the tunnel was saved later than the clock said at start).
	received time.Time
	streams  atomic.Int32 // open streams, and those dialling their target
	up       atomic.Bool  // its connection to the service is up
	lastUsed atomic.Int64 // monoNow of the last stream start or end
	cancel   context.CancelFunc
	ended    string // why the agent ended it (endLocked), for its tunnel-ended event; guarded by a.mu
	// unsaved is set when its tunnel's state could not be saved as it started
	// (data_dir full): saveStepped tries again at each clock check and at the
	// stop, where an existing file only is rewritten. Without it a device whose
	// flash filled up never resumed the tunnel an operator freed space through.
	// Guarded by a.mu.
	unsaved bool
	// candidate is set on a session started past max_tunnels: it takes an
	// idle one's place once the service has accepted its token (admit).
	// Guarded by a.mu.
	candidate bool
}

// New builds an agent from a validated config; log may be nil.
func New(cfg *Config, log *slog.Logger) (*Agent, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// tunnel.ca_file not there yet is said once every other setting has
	// passed, as the MQTT files not there yet are: what stops the agent for
	// good comes first.
	caErr := checkTunnelCA(cfg.Tunnel.CAFile)
	if caErr != nil && !errors.Is(caErr, notify.ErrNotReady) {
		return nil, caErr
	}
	a := &Agent{cfg: cfg, log: log, store: stateStore{dir: filepath.Join(cfg.DataDir, "tunnels")}, sessions: map[string]*session{}}
	a.refusals.report = a.reportSuppressed
	a.rejections.burst, a.rejections.window, a.rejections.report = rejectionBurst, rejectionWindow, a.reportRejections
	if p := cfg.Tunnel.HTTPSProxy; p != "" {
		u, err := tunnel.ParseProxyURL(p) // Validate has accepted it
		if err != nil {
			return nil, wrapErr("config: tunnel.https_proxy", err)
		}
		a.proxy = tunnel.ProxyURL(u)
	} else if _, err := tunnel.EnvironmentProxy(cfg.Tunnel.Endpoint, "us-east-1", cfg.Tunnel.AllowInsecureWebSocket); err != nil {
		// The environment's https_proxy (HTTPS_PROXY) serves every tunnel; one
		// that does not parse would fail each of them the same way. (Without
		// tunnel.endpoint a notification names the region: one stands in.)
		return nil, errors.New("config: the environment's proxy: " + untunneled(err))
	}
	svc := cfg.Services
	a.svc.Store(&svc)
	ssh, err := newSSHServer(cfg, log.With("component", "sshd"), a.audit)
	if err != nil {
		return nil, err
	}
	a.ssh = ssh
	a.mqtt, err = notify.New(notify.Config{
		ThingName:      cfg.ThingName,
		ClientID:       cfg.MQTT.ClientID,
		Broker:         cfg.MQTT.Endpoint,
		CAFile:         cfg.MQTT.CAFile,
		CertFile:       cfg.MQTT.CertFile,
		KeyFile:        cfg.MQTT.KeyFile,
		KeepAlive:      time.Duration(cfg.MQTT.KeepAlive),
		SessionExpiry:  time.Duration(cfg.MQTT.SessionExpiry),
		Logger:         log.With("component", "mqtt"),
		OnNotification: a.notified,
		OnRejected:     a.rejected,
		OnSubscribeError: func(err error) {
			a.emit(&Event{Type: "notify-subscription-failed", Reason: err.Error()})
		},
	})
	if err != nil {
		return nil, configKey(err)
	}
	if caErr != nil {
		return nil, caErr
	}
	if cfg.MQTT.EventTopic != "" {
		topic := cfg.MQTT.EventTopic
		a.events = newEventQueue(func(ctx context.Context, b []byte) error { return a.mqtt.Publish(ctx, topic, b) }, log.With("component", "events"))
	}
	return a, nil
}

// Check is what `porthole check-config` runs: cfg is valid, the files it names
// are usable (the MQTT certificate, not expired, its key and the CA, the tunnel
// CA, the SSH host keys), and its data directory is safe. It changes nothing on
// disk.
func Check(cfg *Config) error {
	if err := CheckStart(cfg); err != nil {
		return err
	}
	return checkCertificate(cfg)
}

// CheckStart is Check without the device certificate's dates: what stops the
// agent from starting. The agent starts with an expired certificate, warns, and
// reads the file again before each connection to the broker, so an init script
// that gates the start on CheckStart (`porthole check-config -start`) lets a
// renewal on disk, or a clock set right later, bring the device back without a
// restart by hand.
//
// MQTT identity files that are not there yet or not a pair yet
// (notify.ErrNotReady) are a warning, as a data_dir on storage not mounted
// yet is, and so are a tunnel.ca_file and an ssh.host_keys file not there
// yet: the agent exits 2 at start until they are, and the init system
// starts it again. (Only the first of the MQTT files and tunnel.ca_file not
// there yet is said: New stops at it.)
func CheckStart(cfg *Config) error {
	return checkStart(cfg, false)
}

// CheckReload is CheckStart for cfg, read again for a reload (SIGHUP) of the
// running agent a. A reload applies nothing of [mqtt] (Reload says it needs a
// restart), and the running listener reads its files again before each
// connection, keeping the pair it has while they do not load. So while cfg
// names the MQTT identity files a runs with, any problem of theirs is logged
// as a warning, not a reason to refuse the reload: refused, a rotation caught
// halfway, or a file mistyped on disk, kept an ssh.password_hashes entry
// taken away, or a service map, from being applied. Files cfg names anew are
// checked as at start. A tunnel.ca_file or host key not there yet is a
// warning too (cfg.identity, cfg.notServed), as at start: a reload applies
// neither (the tunnel dialer and the SSH server go on with the running
// config), and the next start exits 2 until they are there, which its init
// system retries.
func (a *Agent) CheckReload(cfg *Config) error {
	m := a.cfg.MQTT
	same := cfg.MQTT.CAFile == m.CAFile && cfg.MQTT.CertFile == m.CertFile && cfg.MQTT.KeyFile == m.KeyFile
	if err := checkStart(cfg, same); err != nil {
		return err
	}
	if cfg.identity != "" {
		a.log.Warn("certificate files do not load: the running agent goes on with those it read before (a reload does not read them), but would not start with these",
			"error", cfg.identity)
	}
	// What of cfg is used as another value (cfg.adjusted) is said as at
	// start: unsaid, a password hash of a cost above maxHashCost left its
	// user without password login and the log with "reloaded" alone.
	for _, w := range cfg.adjusted {
		a.log.Warn(w)
	}
	for _, w := range cfg.notServed {
		a.log.Warn(w)
	}
	return nil
}

// checkStart is CheckStart. With running, cfg names the MQTT identity files
// the agent runs with, and any problem of theirs is a warning
// (cfg.identity), not only notify.ErrNotReady.
func checkStart(cfg *Config, running bool) error {
	cfg.identity = ""
	_, err := New(cfg, nil)
	var ce *notify.ConfigError
	switch {
	case errors.Is(err, notify.ErrNotReady),
		running && errors.As(err, &ce) && (ce.Field == "CAFile" || ce.Field == "CertFile" || ce.Field == "KeyFile"):
		// The MQTT listener is the last thing New builds: all it checks
		// before has passed (tunnel.ca_file not there yet is said after
		// it).
		cfg.identity = err.Error()
	case err != nil:
		return err
	}
	// A directory above data_dir that is missing is a warning (Warnings): the
	// storage may be mounted later, and the agent then exits 2 until it is.
	if err := checkDataDir(cfg.DataDir); err != nil && !errors.As(err, new(*missingAboveError)) {
		return err
	}
	return checkHostKeys(cfg)
}

// checkHostKeys checks the SSH host keys as the server reads them at start,
// naming the config key of a problem: ssh.host_keys for the extra files,
// data_dir for the server's own key. The extra files the server would leave
// out (an RSA key under 1024 bits) are warnings (cfg.notServed), not errors:
// an older agent started with them, and data_dir's key serves. So are keys
// on storage not there yet, first in cfg.notServed (Run says the first).
func checkHostKeys(cfg *Config) error {
	cfg.notServed = nil
	if _, err := sshd.CheckHostKeys(cfg.DataDir, nil); errors.Is(err, fs.ErrNotExist) && !errors.Is(err, sshd.ErrHostKey) {
		// The key's link leads to storage not there yet: a warning, as a
		// data_dir on it is (missingAboveError), and exit 2 at start.
		cfg.notServed = append(cfg.notServed, "data_dir: "+err.Error()+": the agent will exit (2) at start until then")
	} else if err != nil {
		return wrapErr("data_dir", err)
	}
	notServed, err := sshd.CheckHostKeys("", cfg.SSH.HostKeys)
	if errors.Is(err, fs.ErrNotExist) && !errors.Is(err, sshd.ErrHostKey) {
		// A file by an absolute path, on storage not there yet: the same.
		cfg.notServed = append(cfg.notServed, "ssh.host_keys: "+err.Error()+" (storage mounted later?): the agent will exit (2) at start until then")
	} else if err != nil {
		return wrapErr("config: ssh.host_keys", err)
	}
	for _, w := range notServed {
		cfg.notServed = append(cfg.notServed, "ssh.host_keys "+w)
	}
	return nil
}

// Warnings lists what in cfg works but should be mended, or cannot work yet;
// the agent logs them at start (WARN) and check-config prints them.
func Warnings(cfg *Config) []string {
	var out []string
	// Not refused, unlike an SSH host key: images often carry files at 0644, and
	// refusing would cut a fielded device off.
	if fi, err := os.Stat(cfg.MQTT.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		out = append(out, fmt.Sprintf("mqtt.key_file %s has mode %04o: other local users can read the device's identity key (chmod 600)", cfg.MQTT.KeyFile, fi.Mode().Perm()))
	}
	if r := cfg.readable; r.path != "" && (len(cfg.SSH.PasswordHashes) > 0 || strings.Contains(cfg.Tunnel.HTTPSProxy, "@")) {
		out = append(out, fmt.Sprintf("%s has mode %04o: other local users can read the password hashes or the proxy's password in it (chmod 600)", r.path, r.mode))
	}
	out = append(out, cfg.adjusted...)
	out = append(out, cfg.notServed...)
	if cfg.identity != "" {
		out = append(out, cfg.identity)
	}
	if h := lowPortHint(cfg.SSH.Listen); h != "" {
		out = append(out, "ssh.listen "+cfg.SSH.Listen+": "+h+": the agent cannot listen there")
	}
	if w := eventTopicWarning(cfg.MQTT.EventTopic, cfg.MQTT.Endpoint); w != "" {
		out = append(out, w)
	}
	if w := notify.EndpointWarning(cfg.MQTT.Endpoint); w != "" {
		out = append(out, "mqtt.endpoint: "+w)
	}
	out = append(out, TLSOffWarnings(cfg.Tunnel.Endpoint, cfg.Tunnel.InsecureSkipVerify, cfg.Tunnel.AllowInsecureWebSocket,
		cfg.Tunnel.HTTPSProxy != "", "tunnel.insecure_skip_verify", "tunnel.endpoint")...)
	// A unit slip ("2ms" for "2m") passed every check, and a device reachable
	// through tunnels only then refused or cut every login: one through a
	// tunnel takes a few round trips and a password check, seconds on a slow
	// link. Not refused: an older build started with it.
	for _, d := range []struct {
		key string
		v   Duration
	}{{"login_grace_time", cfg.SSH.LoginGraceTime}, {"idle_timeout", cfg.SSH.IdleTimeout}, {"max_session_time", cfg.SSH.MaxSessionTime}} {
		if v := time.Duration(d.v); v > 0 && v < 10*time.Second {
			out = append(out, fmt.Sprintf("ssh.%s %v is under 10s: SSH logins and sessions are cut that soon (\"m\" is minutes, \"ms\" milliseconds)", d.key, v))
		}
	}
	return append(out, startWarnings(cfg)...)
}

// HostPublicKeys returns the public halves of the SSH host keys the agent
// presents: the key in dataDir, made if there is none yet (porthole keygen), and
// those of the extra files. dataDir is checked first as the agent checks it at
// start, so that no key is made where others could replace it.
func HostPublicKeys(dataDir string, extra []string) ([]gossh.PublicKey, error) {
	if err := makeDataDir(dataDir); err != nil {
		return nil, err
	}
	return (&sshd.Server{DataDir: dataDir, HostKeyFiles: extra}).PublicKeys()
}

// notifyKey is the config key that the field of notify.Config comes from.
func notifyKey(field string) string {
	switch field {
	case "ThingName":
		return "thing_name"
	case "ClientID":
		return "mqtt.client_id"
	case "Broker":
		return "mqtt.endpoint"
	case "CAFile":
		return "mqtt.ca_file"
	case "CertFile":
		return "mqtt.cert_file"
	case "KeyFile":
		return "mqtt.key_file"
	case "KeepAlive":
		return "mqtt.keepalive"
	case "SessionExpiry":
		return "mqtt.session_expiry"
	}
	return "mqtt"
}

// configKey rewrites a *notify.ConfigError to name the config key, as Validate's
// errors do.
func configKey(err error) error {
	var ce *notify.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	return &keyError{key: notifyKey(ce.Field), ce: ce}
}

// keyError is a *notify.ConfigError named by its config key. errors.Is finds
// notify.ErrNotReady through it: an MQTT identity file not there yet or not
// whole, or a key that is not its certificate's. That one is, as a data_dir
// on storage not mounted yet (missingAboveError), a runtime failure (exit 2,
// which init systems restart) and a warning of check-config: the files live
// on storage mounted later in boot (/persist, /mnt/data, beside a read-only
// root), or a reboot came between a renewal's new certificate and its key,
// and a later start finds them right. Refused as a configuration error (exit
// 1, not restarted), the device stayed off the network until someone
// restarted the agent by hand.
type keyError struct {
	_   [0]func() // not comparable: no equality function in the binary (docs/size.md)
	key string
	ce  *notify.ConfigError
}

func (e *keyError) Error() string {
	if errors.Is(e.ce, notify.ErrNotReady) {
		return e.key + ": " + e.ce.Err.Error() + ": if the files are on storage mounted later in boot, or a renewal is " +
			"still writing them, the agent will exit (2) at start until they load, for its init system to start it again; " +
			"otherwise put the right files there"
	}
	return "config: " + e.key + ": " + e.ce.Err.Error()
}

func (e *keyError) Unwrap() error { return e.ce }

// newSSHServer maps the [ssh] settings onto the embedded server.
func newSSHServer(cfg *Config, log *slog.Logger, audit func(sshd.Event)) (*sshd.Server, error) {
	permit, err := localForwardPolicy(cfg.SSH.PermitLocalForward)
	if err != nil {
		return nil, wrapErr("config: ssh.permit_local_forward", err)
	}
	s := &sshd.Server{
		DataDir:                cfg.DataDir,
		HostKeyFiles:           cfg.SSH.HostKeys,
		AuthorizedKeysFiles:    cfg.SSH.AuthorizedKeys,
		TrustedUserCAKeysFiles: cfg.SSH.TrustedUserCAKeys,
		PasswordHashes:         cfg.SSH.PasswordHashes,
		AcceptEnv:              cfg.SSH.AcceptEnv,
		MaxAuthTries:           cfg.SSH.MaxAuthTries,
		LoginGraceTime:         time.Duration(cfg.SSH.LoginGraceTime),
		IdleTimeout:            time.Duration(cfg.SSH.IdleTimeout),
		MaxSessionTime:         time.Duration(cfg.SSH.MaxSessionTime),
		MaxSessions:            cfg.SSH.MaxSessions,
		MaxForwards:            cfg.SSH.MaxForwards,
		PermitLocalForward:     permit,
		AgentForwarding:        cfg.SSH.AgentForwarding,
		AuditCommandLines:      cfg.SSH.AuditCommandLines,
		Ciphers:                cfg.SSH.Ciphers,
		Audit:                  audit,
		Logger:                 log,
		CallerChecksLogins:     true, // Warnings, with the config's key names
	}
	if len(cfg.SSH.PermitLocalForward) == 0 {
		s.PermitLocalForward = func(string, netip.AddrPort) bool { return false }
	}
	if cfg.SSH.AllowRemoteForward {
		s.PermitRemoteForward = func(_, bind string, _ uint32) bool {
			ip := net.ParseIP(bind)
			return bind == "localhost" || ip != nil && ip.IsLoopback()
		}
	}
	return s, nil
}

// monoNow is the monotonic time since the agent's package started, in
// nanoseconds: which session was used last must not change when the wall
// clock is stepped (NTP's first answer on a router, date -s).
func monoNow() int64 { return int64(time.Since(monoStart)) }

var monoStart = time.Now()

func (a *Agent) clock() time.Time {
	if a.now != nil {
		return a.now()
	}
	return time.Now()
}

// utc formats t in UTC as RFC 3339, as logs and messages show times: one
// call at each, not t.UTC().Format(time.RFC3339) repeated (docs/size.md).
func utc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// eventFlushTimeout bounds the last flush of the event queue when the agent stops:
// a broker that is away must not hold up a SIGTERM (init systems kill after a few
// seconds).
const eventFlushTimeout = 2 * time.Second

// stopBudget bounds the stop, from "agent stopping" to the end of the last
// flush of the events, which gets what the sessions' ends leave of it (their
// goodbyes on a stalled tunnel, a program ignoring the hangup: 3.5 s and more),
// and at least minLastFlush: the SSH connections are waited for only until then.
// porthole agent exits 5 s after SIGTERM whether Run has returned or not (and
// procd kills 5 s after it by default; the packages' init scripts wait 10): the
// second left is for the MQTT DISCONNECT and the lines saying what the stop
// lost, which a flush of its whole eventFlushTimeout pushed past that exit.
const stopBudget = 4 * time.Second

// minLastFlush is the least the last flush gets, whatever is left of the
// stop's budget: a broker that is there takes the last events in
// milliseconds, and the warning that one did not take them must be true.
const minLastFlush = 500 * time.Millisecond

// lastFlush is how long the last flush of the events gets when the stop must
// end by stopBy (monoNow's clock).
func lastFlush(stopBy int64) time.Duration {
	return min(eventFlushTimeout, max(time.Duration(stopBy-monoNow()), minLastFlush))
}

// Run serves until ctx ends: the MQTT listener, the saved tunnels, the optional SSH
// listener (an ssh.listen address it cannot bind is logged and tried again in
// the background, not fatal). On the way out it ends every session and SSH
// connection first, so that their last events (stream-end, ssh-session-end) are
// queued, then flushes the events for at most eventFlushTimeout and not past
// stopBudget from the stop's start (but for at least minLastFlush), and only
// then disconnects from the broker the events go through. The SSH connections
// get sshEndWait (500 ms) to end by themselves.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.mu.Lock()
	a.ctx = ctx
	a.mu.Unlock()

	if err := checkDataDir(a.cfg.DataDir); err != nil {
		if errors.As(err, new(*missingAboveError)) {
			return err // storage not mounted yet: a restart may find it
		}
		return Usagef("%w", err)
	}
	lock, err := lockDataDir(ctx, a.cfg.DataDir, lockWait)
	if ctx.Err() != nil {
		if lock != nil {
			lock.Close()
		}
		return nil // stopped before it started
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	if c, _ := sshd.HashesCost(a.cfg.SSH.PasswordHashes); c > slowHashCost {
		// Said now: the start waits for a hash of that cost (seconds to a
		// minute on a router), silent otherwise.
		a.log.Info("making a password hash of the highest cost among ssh.password_hashes before the start", "bcrypt_cost", c)
	}
	// The host key is made (or checked) now, so a bad key fails at start; one
	// that exists but cannot be used needs an operator, not a restart.
	if _, err := a.ssh.PublicKeys(); err != nil {
		// Said as check-config says it, naming the key.
		kerr := checkHostKeys(a.cfg)
		if errors.Is(err, sshd.ErrHostKey) {
			if kerr != nil {
				err = kerr
			}
			return Usagef("%w", err)
		}
		if errors.Is(err, fs.ErrNotExist) && kerr == nil && len(a.cfg.notServed) > 0 {
			// A key on storage not there yet: a restart may find it.
			return errors.New(a.cfg.notServed[0])
		}
		return err
	}
	// A bind that fails is not fatal (serveSSHListen): it is said once the
	// start is logged, and tried again in the background. A host name in it
	// is looked up within sshListenLookup: a DNS that does not answer at boot
	// held the start, MQTT and every saved tunnel for 40 s with OpenWrt's
	// resolv.conf.
	var ln net.Listener
	var bindErr error
	if a.cfg.SSH.Listen != "" {
		lctx, cancel := context.WithTimeout(ctx, sshListenLookup)
		ln, bindErr = new(net.ListenConfig).Listen(lctx, "tcp", a.cfg.SSH.Listen)
		cancel()
	}
	a.log.Info("porthole agent started", "version", Version, "thing", a.cfg.ThingName)
	// The fleet learns of a restart: a crash's sessions got no end events.
	a.emit(&Event{Type: "agent-started", Version: Version})
	for _, w := range Warnings(a.cfg) {
		a.log.Warn(w)
	}

	// From here on nothing returns early: the end of Run stops what is started
	// here, in the order that lets the last events out.
	var bg sync.WaitGroup
	evctx, evcancel := context.WithCancel(context.Background())
	defer evcancel()
	evdone := make(chan struct{})
	if a.events != nil {
		go func() { defer close(evdone); a.events.run(evctx) }()
	} else {
		close(evdone)
	}
	if a.cfg.SSH.Listen != "" {
		bg.Add(1)
		go func() { defer bg.Done(); a.serveSSHListen(ctx, ln, bindErr) }()
	}
	saved, expired, errs := a.store.load(a.clock())
	for _, err := range errs {
		a.log.Warn("tunnel state", "error", err)
	}
	for _, fp := range expired {
		// Its trail (tunnel-connected before the stop) ends here.
		a.emit(&Event{Type: "tunnel-ended", Tunnel: fp, Reason: "older than a tunnel lives (12 h) when the agent started"})
	}
	for _, t := range saved {
		fp := fingerprint(t.AccessToken)
		if u := a.unmapped(t.Services); len(u) > 0 && len(u) == len(t.Services) {
			// As a notification for it would be refused now: joining would
			// serve nothing, and past max_tunnels take a working tunnel's place.
			a.log.Warn("tunnel saved before restart has no service this device serves now: not resuming it", "tunnel", fp, "services", t.Services)
			a.forget(t.AccessToken, fp)
			a.emit(&Event{Type: "tunnel-ended", Tunnel: fp, Services: t.Services, Reason: "no service of the tunnel has a target in [services] any more"})
			continue
		}
		a.log.Info("resuming tunnel saved before restart", "tunnel", fp, "services", t.Services)
		a.start(t, false)
	}
	mctx, mcancel := context.WithCancel(context.Background())
	defer mcancel()
	mqttDone := make(chan struct{})
	var mqttErr error
	go func() { defer close(mqttDone); mqttErr = a.mqtt.Run(mctx) }()

	select {
	case <-ctx.Done():
	case <-mqttDone: // only when it cannot run at all
	}
	stopping := ctx.Err() != nil
	a.log.Info("agent stopping")
	stopBy := monoNow() + int64(stopBudget)
	a.mu.Lock()
	cancel() // under mu: start adds no session after this
	a.mu.Unlock()
	a.wg.Wait()                                 // destination sessions; their streams close: stream-end
	a.shutdownSSH(stopBy - int64(minLastFlush)) // SSH connections: ssh-session-end
	a.refusals.flush()
	a.rejections.flush()
	evcancel()
	<-evdone
	a.events.finish(lastFlush(stopBy)) // the last events
	mcancel()
	<-mqttDone // a clean MQTT DISCONNECT, last
	bg.Wait()
	a.log.Info("agent stopped")
	if stopping {
		return nil
	}
	return mqttErr
}

// sshCloseWait is how long the agent's stop waits for the SSH connections it
// has closed to end: more than sshd's leaveDelay (2 s).
const sshCloseWait = 3 * time.Second

// sshEndWait is how long the agent's stop lets SSH connections end by
// themselves before it closes them: a command just finishing sends its exit
// status. It was 2 s, which an interactive login never used (it does not end
// by itself), and which, with leaveDelay and the last events, took the stop to
// 4 s of porthole agent's 5 (a slow broker then lost the session-end events).
const sshEndWait = 500 * time.Millisecond

// shutdownSSH ends the SSH connections, and waits for them until by (monoNow's
// clock): a request that blocks for good (an SFTP OPEN of a FIFO no program
// opens) holds its connection sshd's abandonDelay (5 s), past porthole
// agent's exit; the stop goes on without it, and says so.
func (a *Agent) shutdownSSH(by int64) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(by-monoNow()))
	defer cancel()
	sctx, scancel := context.WithTimeout(ctx, sshEndWait)
	err := a.ssh.Shutdown(sctx)
	scancel()
	if err != nil {
		a.ssh.Close()
		// Give the closed connections time to end, and send their events: a
		// session whose program ignores the hangup ends sshd's leaveDelay (2 s)
		// after it, and the connections of ssh.listen, unlike the tunnel's
		// (sshConns), are waited for only here.
		cctx, ccancel := context.WithTimeout(ctx, sshCloseWait)
		a.ssh.Shutdown(cctx)
		ccancel()
	}
	ended := make(chan struct{})
	go func() { a.sshConns.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-ctx.Done():
		a.log.Warn("SSH connections still ending when the stop ran out of time: their end events are not sent")
	}
}

// notified handles one validated notification from the listener; it must not block.
func (a *Agent) notified(n notify.Notification) {
	a.mu.Lock()
	ctx := a.ctx
	a.mu.Unlock()
	if ctx == nil {
		return
	}
	unmapped := a.unmapped(n.Services)
	if len(unmapped) > 0 && len(unmapped) == len(n.Services) {
		// Joining would serve nothing, and past max_tunnels it would take an idle
		// session's place.
		a.log.Warn("tunnel has no service this device serves: not joining it (add a target to [services], names as the tunnel gives them, letter case too; then rotate the destination token)",
			"tunnel", fingerprint(n.ClientAccessToken), "services", unmapped)
		a.rejectNotification(Event{Tunnel: fingerprint(n.ClientAccessToken), Services: unmapped,
			Reason: "no service of the tunnel has a target in [services]"})
		return
	}
	if len(unmapped) > 0 {
		a.log.Warn("tunnel has services this device does not serve; their streams will be reset", "services", unmapped)
		a.emit(&Event{Type: "service-unmapped", Tunnel: fingerprint(n.ClientAccessToken), Services: unmapped,
			Reason: "no target configured in [services]"})
	}
	t := savedTunnel{
		AccessToken: n.ClientAccessToken,
		ClientToken: tunnel.GenerateClientToken().Reveal(),
		Region:      n.Region,
		Services:    n.Services,
		Received:    a.clock().UTC(),
	}
	a.start(t, true) // or keepForNextStart, if the agent is stopping: start decides under a.mu
}

// unmapped returns the services of a tunnel that [services] does not map.
func (a *Agent) unmapped(names []string) []string {
	services := *a.svc.Load()
	var out []string
	for _, n := range names {
		if _, ok := services[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// keepForNextStart saves the tunnel of a notification that came while the agent
// stops (MQTT stays connected until the last events are out, and the listener
// has acknowledged the message, so the broker will not deliver it again), for
// the next start to join, as it resumes the tunnels saved at stop. A tunnel
// saved already (a session of it ran) keeps its file and client token.
func (a *Agent) keepForNextStart(t savedTunnel) {
	fp := fingerprint(t.AccessToken)
	if _, err := os.Stat(a.store.path(tokenKey(t.AccessToken))); err == nil {
		return
	}
	if err := a.store.save(t); err != nil {
		a.log.Warn("tunnel notification received while stopping, and not saved: it is lost (rotate the destination token to join the tunnel)", "tunnel", fp, "error", err)
		return
	}
	a.log.Info("tunnel notification received while stopping: saved, the next start joins the tunnel", "tunnel", fp)
}

// start runs a destination session for t, unless one runs for that token already.
// Past MaxTunnels the new session is a candidate: it ends the oldest session
// without open streams only once the service has accepted its token (connected),
// so a stale, closed or forged notification cannot cut a device off a working
// tunnel. There are as many candidates as idle sessions to make room (one when
// none is idle: every session may be busy with a tunnel whose token was just
// rotated, its streams still ending); a newer notification replaces the oldest
// candidate that has not connected yet. Notifications queued while the device
// was offline come together: one candidate at a time kept only the last.
func (a *Agent) start(t savedTunnel, fresh bool) {
	fp := fingerprint(t.AccessToken)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx.Err() != nil {
		// Checked under a.mu, where Run cancels: a notification the listener
		// has acknowledged while the agent stops is kept for the next start,
		// not dropped.
		if fresh {
			a.keepForNextStart(t)
		}
		return
	}
	if _, ok := a.sessions[t.AccessToken]; ok {
		a.log.Debug("session for this token already running", "tunnel", fp)
		return
	}
	candidate := len(a.sessions) >= a.cfg.Tunnel.MaxTunnels
	if candidate {
		var old *session
		idle, candidates := 0, 0
		for _, s := range a.sessions {
			switch {
			case s.candidate:
				candidates++
				if old == nil || s.started.Before(old.started) {
					old = s
				}
			case s.streams.Load() == 0:
				idle++
			}
		}
		if old != nil && candidates >= idle {
			a.log.Info("max tunnels reached: a newer tunnel replaces one still connecting", "ended", old.fp, "for", fp)
			a.endLocked(old, fmt.Sprintf("replaced by a newer tunnel before it connected (max_tunnels %d)", a.cfg.Tunnel.MaxTunnels))
		}
		a.log.Info("max tunnels reached: the new tunnel will take the oldest idle session's place once it connects", "tunnel", fp)
	}
	var saveErr error
	if fresh {
		if saveErr = a.store.save(t); saveErr != nil {
			a.log.Warn("cannot save tunnel state; a restart will not resume this tunnel until it is saved (tried again every minute and at stop)", "tunnel", fp, "error", saveErr)
		}
	}
	now := a.clock()
	s := &session{fp: fp, token: t.AccessToken, started: now, unsaved: saveErr != nil, candidate: candidate}
	// A tunnel saved later than the clock says now was saved with the clock
	// right and is read with it behind (a router rebooted without an RTC, before
	// NTP): its age is not known, and the stop leaves its time as saved. The
	// negative age, taken as its age, had the stop after NTP save it received in
	// the future (56 years ahead from 1970): the next starts kept a dead tunnel
	// that long.
	//
	// A session still dialling a tunnel past the 12 h no tunnel outlives
	// (spec §7; an endpoint or proxy that never answers) gives it up. One of
	// an age not known was received before now, so it has 12 h at most.
	deadline := time.Now().Add(sessionLifetime)
	if age := now.Sub(t.Received); age >= 0 {
		s.received = time.Now().Add(-age)
		deadline = s.received.Add(sessionLifetime)
	}
	ctx, cancel := context.WithDeadline(a.ctx, deadline)
	s.cancel = cancel
	s.lastUsed.Store(monoNow())
	a.sessions[t.AccessToken] = s
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.runSession(ctx, s, t)
		// Ended by itself (closed, refused), the session's context would
		// otherwise be held, timer and all, until its 12-hour deadline.
		cancel()
		a.mu.Lock()
		if a.sessions[t.AccessToken] == s {
			delete(a.sessions, t.AccessToken)
		}
		a.mu.Unlock()
	}()
}

// admit is called when candidate s has connected: the oldest idle session yields
// to it. If every other session has become busy meanwhile, s itself ends, so the
// agent never holds more than max_tunnels connected sessions.
func (a *Agent) admit(s *session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !s.candidate {
		return
	}
	victim := a.oldestIdleLocked() // s is not one: it is still a candidate
	s.candidate = false
	n := 0 // the sessions that are no candidates, s now one of them
	for _, o := range a.sessions {
		if !o.candidate {
			n++
		}
	}
	if n <= a.cfg.Tunnel.MaxTunnels {
		return // another session ended meanwhile
	}
	if victim == nil {
		a.log.Warn("too many tunnels, all busy: ending the new one", "tunnel", s.fp, "max_tunnels", a.cfg.Tunnel.MaxTunnels)
		a.rejectNotificationLocked(Event{Tunnel: s.fp, Reason: fmt.Sprintf("max_tunnels (%d) sessions busy", a.cfg.Tunnel.MaxTunnels)})
		a.endLocked(s, fmt.Sprintf("max_tunnels (%d) sessions busy", a.cfg.Tunnel.MaxTunnels))
		return
	}
	a.log.Info("max tunnels reached: ending the oldest idle session", "ended", victim.fp, "for", s.fp)
	a.endLocked(victim, fmt.Sprintf("idle, ended for a newer tunnel (max_tunnels %d)", a.cfg.Tunnel.MaxTunnels))
}

// endLocked ends session s and forgets its tunnel. The yielded tunnel is given up,
// not paused: without this every notification past max_tunnels (token rotations,
// say) left a state file behind for up to 12 h, and a restart dialled each of them
// in turn.
//
// reason is its tunnel-ended event's: the session had its tunnel-connected (or
// connect-failed) events, and its trail must not stop without an end.
func (a *Agent) endLocked(s *session, reason string) {
	s.ended = reason
	s.unsaved = false // given up: not to be saved later
	s.cancel()
	delete(a.sessions, s.token)
	a.forget(s.token, s.fp)
}

// forget removes a tunnel's saved state. A failure is logged: the next start
// would find the tunnel again (and say why it is not resumed) without a word
// on why the file is still there.
func (a *Agent) forget(token, fp string) {
	if err := a.store.remove(token); err != nil {
		a.log.Warn("removing tunnel state", "tunnel", fp, "error", err)
	}
}

// oldestIdleLocked returns the least recently used session without open streams,
// other than candidates; one whose connection is down comes first (a tunnel
// whose destination token was rotated: the service has cut it, and its
// reconnects with the revoked token will be refused).
func (a *Agent) oldestIdleLocked() *session {
	var best *session
	for _, s := range a.sessions {
		if s.candidate || s.streams.Load() > 0 {
			continue
		}
		if best == nil || best.up.Load() && !s.up.Load() ||
			best.up.Load() == s.up.Load() && s.lastUsed.Load() < best.lastUsed.Load() {
			best = s
		}
	}
	return best
}

// runSession runs one destination session to its end and forgets its saved state
// when the tunnel is over (closed by the service, token refused).
func (a *Agent) runSession(ctx context.Context, s *session, t savedTunnel) {
	log := a.log.With("tunnel", s.fp)
	access, err := tunnel.NewAccessToken(t.AccessToken)
	if err != nil {
		log.Warn("unusable access token", "error", err)
		a.forget(t.AccessToken, s.fp)
		return
	}
	client, err := tunnel.NewClientToken(t.ClientToken)
	if err != nil {
		client = tunnel.GenerateClientToken()
	}
	dialer := &serviceDialer{services: &a.svc, label: s.fp, ssh: a.serveSSH}
	d := &tunnel.Destination{
		Config: tunnel.Config{
			Region:                 t.Region,
			Endpoint:               a.cfg.Tunnel.Endpoint,
			AccessToken:            access,
			ClientToken:            client,
			CAFile:                 a.cfg.Tunnel.CAFile,
			CAFileName:             "tunnel.ca_file",
			InsecureSkipVerify:     a.cfg.Tunnel.InsecureSkipVerify,
			AllowInsecureWebSocket: a.cfg.Tunnel.AllowInsecureWebSocket,
			PingInterval:           time.Duration(a.cfg.Tunnel.PingInterval),
			UserAgent:              "porthole/" + Version,
			Logger:                 log,
			OnState:                a.onState(s, log),
		},
		Dialer:         a.countStreams(s, dialer, log),
		MaxConnections: a.cfg.Tunnel.MaxConnections,
	}
	if len(t.Services) == 1 {
		d.DefaultService = t.Services[0]
	}
	d.Proxy = a.proxy
	stopWatch := a.watchClock(ctx, s, &t, log)
	err = d.Run(ctx)
	stopWatch() // t is runSession's again
	var he *tunnel.HandshakeError
	switch {
	case err == nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = errLifetimeOver
		a.emit(&Event{Type: "tunnel-ended", Tunnel: s.fp, Reason: err.Error()})
	case err == nil:
		log.Info("tunnel session stopped")
		a.mu.Lock()
		ended := s.ended
		a.mu.Unlock()
		if ended != "" {
			a.emit(&Event{Type: "tunnel-ended", Tunnel: s.fp, Reason: "ended by the agent: " + ended})
		}
		a.restamp(s, t, log)
		return // the agent stops (keep the state for a restart) or the session yielded (endLocked removed it)
	case errors.Is(err, tunnel.ErrClosedByService):
		// With the Close frame's status and reason: a lifetime that ended
		// and a CloseTunnel read alike without them.
		a.emit(&Event{Type: "tunnel-ended", Tunnel: s.fp, Reason: untunneled(err)})
	case errors.As(err, &he):
		a.emit(&Event{Type: "tunnel-ended", Tunnel: s.fp, Reason: fmt.Sprintf("handshake refused: %d %s", he.StatusCode, he.Body)})
	default:
		a.emit(&Event{Type: "tunnel-ended", Tunnel: s.fp, Reason: err.Error()})
	}
	if errors.Is(err, tunnel.ErrClosedByService) {
		log.Info("tunnel over", "reason", err)
	} else {
		log.Warn("tunnel over", "reason", err) // a refused token, a mismatched service map
	}
	a.forget(t.AccessToken, s.fp)
}

// errLifetimeOver ends a session still running when its tunnel can no longer
// be open.
var errLifetimeOver = errors.New("older than a tunnel lives (12 h): given up")

// restamp saves t again, as the agent stops, with the time it was received as
// the session's monotonic clock has it, when the wall clock has been stepped
// since (NTP's first answer on a router that booted with a stale clock): the
// next start ages saved tunnels by the wall clock, and would otherwise drop an
// open tunnel as older than a tunnel can live, or keep a dead one for too long.
// A tunnel whose state could not be saved yet (s.unsaved) is saved now.
//
// Under a.mu, as the clock checks save: an idle session that yields as the
// agent stops (admit) has its state removed and is not saved again.
func (a *Agent) restamp(s *session, t savedTunnel, log *slog.Logger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx.Err() == nil {
		return // the session yielded: its state is gone
	}
	if err := a.saveStepped(s, &t, log); s.unsaved {
		log.Warn("cannot save tunnel state; a restart will not resume this tunnel", "error", err)
	}
}

// saveStepped saves t again with the time it was received as session s's
// monotonic clock has it, if the wall clock has been stepped by a minute or
// more since t was saved and t's state file is still there. t keeps the new
// time, saved or not: one try per step. A tunnel whose state could not be
// saved (s.unsaved) is saved whether stepped or not, until a save succeeds;
// the error is that of such a save that failed. Called with a.mu held.
func (a *Agent) saveStepped(s *session, t *savedTunnel, log *slog.Logger) error {
	stepped := false
	if !s.received.IsZero() {
		received := a.clock().Add(-time.Since(s.received)).UTC()
		if d := received.Sub(t.Received); d <= -time.Minute || d >= time.Minute {
			if !s.unsaved {
				if _, err := os.Stat(a.store.path(tokenKey(t.AccessToken))); err != nil {
					return nil // removed: the tunnel is over
				}
			}
			stepped = true
			t.Received = received
		}
	}
	if !stepped && !s.unsaved {
		return nil // no step worth a write to flash
	}
	err := a.store.save(*t)
	switch {
	case err == nil && s.unsaved:
		s.unsaved = false
		log.Info("tunnel state saved; a restart will resume this tunnel")
	case err != nil && s.unsaved:
		// Said at start and again at stop (restamp), not once a minute.
		return err
	case err != nil:
		log.Warn("cannot save tunnel state after a step of the clock; a restart may not resume this tunnel", "error", err)
	}
	return nil
}

// Connection failures are published as changes of the tunnel's state, not once
// per attempt: a tunnel whose endpoint cannot be reached retries for as long as it
// lives (up to 12 h) with a backoff capped at 2 min, and every event is a billed
// QoS 1 publish. tunnel-disconnected says that a connection that was up is lost;
// the first failed attempt of a tunnel not connected is a tunnel-connect-failed at
// once, and later ones are summed up in another (attempts, and how long it has
// failed) after failureEventFirst, then at intervals doubling up to
// failureEventMax. A failure that ends the tunnel is its tunnel-ended event
// (runSession). The tunnel package logs every attempt.
const (
	failureEventFirst = time.Minute
	failureEventMax   = time.Hour
)

// onState reports connection changes as events, and says so plainly when a TLS
// failure comes from a clock that is behind (routers often boot in 1970). The
// tunnel calls it from one goroutine, so its state needs no lock.
func (a *Agent) onState(s *session, log *slog.Logger) func(bool, error) {
	var (
		up      bool          // a connection is up
		failed  int           // failed attempts since the last connection (or the start)
		since   time.Time     // when they began; zero: no failure yet
		next    time.Time     // when the next summary may be published
		backoff time.Duration // the interval after that summary
		clock   quiet.Repeats // the WARN that the clock is behind, once per quiet.Every
	)
	return func(connected bool, err error) {
		now := a.clock()
		s.up.Store(connected)
		if connected {
			a.emit(&Event{Type: "tunnel-connected", Tunnel: s.fp, Attempts: failed})
			up, failed, since = true, 0, time.Time{}
			clock.Reset()
			a.admit(s)
			return
		}
		if errors.Is(err, context.Canceled) {
			return
		}
		reason := a.failureReason(err)
		if reason == clockBehind {
			level, attrs := clock.Level(slog.LevelWarn, clockBehind, now, []any{"clock", now.UTC(), "build", BuildTime()})
			log.Log(context.Background(), level, "the clock is before this binary was built; TLS will keep failing until it is set (NTP)", attrs...)
		}
		wasUp := up
		up = false
		if endsTunnel(err) {
			return // runSession publishes tunnel-ended with the reason
		}
		if wasUp {
			a.emit(&Event{Type: "tunnel-disconnected", Tunnel: s.fp, Reason: reason})
			since, next, backoff = now, now.Add(failureEventFirst), failureEventFirst
			return
		}
		failed++
		switch {
		case since.IsZero():
			since, next, backoff = now, now.Add(failureEventFirst), failureEventFirst
		case now.Before(next):
			return
		default:
			backoff = min(2*backoff, failureEventMax)
			next = now.Add(backoff)
		}
		e := Event{Type: "tunnel-connect-failed", Tunnel: s.fp, Reason: reason, Attempts: failed}
		if d := now.Sub(since); d > 0 {
			e.Duration = d.Round(time.Second).String()
		}
		a.emit(&e)
	}
}

// clockBehind is failureReason's reason for a certificate that has expired by
// a clock that is before the binary was built: the clock is wrong.
const clockBehind = "TLS certificate check failed because the system clock is behind"

// failureReason says in a few words why a connection attempt failed or a
// connection was lost.
func (a *Agent) failureReason(err error) string {
	var he *tunnel.HandshakeError
	var ce x509.CertificateInvalidError
	var pe *tunnel.ProxyError
	viaProxy := errors.As(err, &pe)
	switch {
	case errors.As(err, &he):
		return fmt.Sprintf("handshake refused: %d %s", he.StatusCode, he.Body)
	case errors.Is(err, tunnel.ErrClosedByService):
		return "closed by the service"
	case errors.As(err, &ce) && ce.Reason == x509.Expired && a.clock().Before(BuildTime()):
		return clockBehind
	case viaProxy && pe.Status == 407: // Proxy Authentication Required
		return "the HTTPS proxy wants credentials it was not given or refused (407): tunnel.https_proxy, or https_proxy where that is empty"
	case viaProxy && pe.Status != 0:
		return fmt.Sprintf("the HTTPS proxy refused to connect to the service (%d)", pe.Status)
	case viaProxy && tunnel.IsCertificateError(err):
		return "TLS certificate check of the HTTPS proxy failed"
	case errors.As(err, &ce) && ce.Reason == x509.Expired:
		// The clock is after the build but outside the certificate's dates
		// (days off, or a certificate really expired): tunnel.ca_file has
		// nothing to do with it. As notify's tlsHint says it for the broker.
		return "the service's TLS certificate has expired or is not yet valid (the clock says " + utc(a.clock()) + ")"
	case errors.As(err, new(x509.HostnameError)):
		// Signed by a CA trusted, for another name: no CA file helps. With
		// no tunnel.endpoint, the name is the region's, which AWS's own
		// certificate has: a middlebox answers in its place.
		if a.cfg.Tunnel.Endpoint == "" {
			return "the service's TLS certificate is for another host name: a proxy or firewall intercepts TLS"
		}
		return "the service's TLS certificate is for another host name: check tunnel.endpoint"
	case tunnel.IsCertificateError(err):
		return "TLS certificate check of the service failed (tunnel.ca_file)"
	case errors.Is(err, tunnel.ErrCAFile):
		// Read at each attempt: removed or rewritten since the start, it
		// fails every one before anything is dialled.
		return untunneled(err)
	case errors.Is(err, syscall.EMFILE):
		return "the agent is out of file descriptors (ulimit -n)"
	case errors.Is(err, syscall.ENFILE):
		return "the system is out of file descriptors (fs.file-max)"
	}
	return "network"
}

// endsTunnel reports whether err ends the destination session instead of
// causing a reconnect (as the tunnel package decides: a 4xx handshake answer, a
// close by the service, a configuration mismatch).
func endsTunnel(err error) bool {
	var he *tunnel.HandshakeError
	if errors.As(err, &he) {
		return !he.Temporary()
	}
	return errors.Is(err, tunnel.ErrClosedByService) || errors.Is(err, tunnel.ErrConfig)
}

// countStreams wraps the dialer to count a session's open streams and report each
// stream's start and end.
func (a *Agent) countStreams(s *session, d tunnel.Dialer, log *slog.Logger) tunnel.Dialer {
	return tunnel.DialerFunc(func(ctx context.Context, service string) (net.Conn, error) {
		// Counted from the dial on: the tunnel's dial of a slow target takes
		// up to 10 s, and a session counted idle meanwhile yielded its place
		// past max_tunnels (admit), cutting the connection on its way.
		s.streams.Add(1)
		c, err := d.DialService(ctx, service)
		if err != nil {
			s.streams.Add(-1)
			// Not a dial the tunnel gave up (its connection reset, superseded, or
			// the session ending): a peer that starts and resets streams would
			// turn each into an event. One past the dial's timeout is the
			// target's failure (it did not answer), as the tunnel says too.
			if ctx.Err() != context.Canceled {
				a.emit(&Event{Type: "stream-refused", Tunnel: s.fp, Service: service, Reason: err.Error()})
			}
			return nil, err
		}
		s.lastUsed.Store(monoNow())
		a.emit(&Event{Type: "stream-start", Tunnel: s.fp, Service: service})
		return &countingConn{Conn: c, start: a.clock(), onClose: func(in, out int64, dur time.Duration) {
			s.streams.Add(-1)
			s.lastUsed.Store(monoNow())
			a.emit(&Event{Type: "stream-end", Tunnel: s.fp, Service: service, BytesIn: in, BytesOut: out, Duration: dur.Round(time.Millisecond).String()})
		}}, nil
	})
}

// serveSSH hands one tunnel stream to the embedded SSH server.
func (a *Agent) serveSSH(c net.Conn) {
	a.sshConns.Add(1)
	go func() {
		defer a.sshConns.Done()
		if err := a.ssh.ServeConn(c); err != nil && !errors.Is(err, sshd.ErrServerClosed) {
			a.log.Debug("ssh connection ended", "error", err)
		}
	}()
}

func (a *Agent) audit(e sshd.Event) {
	if a.events == nil {
		return
	}
	if refusal(e) && !a.refusals.allow(time.Now()) { // real time, as the window's timer runs on it
		return
	}
	a.emit(&Event{Type: "ssh-" + string(e.Type), SSH: &e})
}

// emit queues e for publishing, with the thing's name set in it. It takes a
// pointer: a copy of the struct at each of its calls was 0.45 KB more
// code on mipsle.
func (a *Agent) emit(e *Event) {
	if a.events == nil {
		return
	}
	e.Thing = a.cfg.ThingName
	a.events.add(*e)
}

// Reload applies a new configuration's service map and who may log in over SSH
// (ssh.authorized_keys, ssh.trusted_user_ca_keys, ssh.password_hashes) without
// dropping live sessions (SIGHUP), and logs what keeps those logins from
// working, as the start does. The files are read at every login anyway.
// Settings that need a restart are reported.
func (a *Agent) Reload(cfg *Config) []string {
	svc := cfg.Services
	a.svc.Store(&svc)
	var restart []string
	// Who may log in applies to every login from now on, as OpenSSH's sshd
	// reads its config again on SIGHUP: a key, CA or password taken away (the
	// documented reload after an edit) must not log in until a restart.
	err := a.ssh.SetLogins(sshd.Logins{AuthorizedKeysFiles: cfg.SSH.AuthorizedKeys,
		TrustedUserCAKeysFiles: cfg.SSH.TrustedUserCAKeys, PasswordHashes: cfg.SSH.PasswordHashes})
	if err != nil { // ErrPasswordLoginOff (Validate checked the hashes)
		restart = append(restart, "ssh.password_hashes (password login was off at start)")
	}
	for _, w := range loginWarnings(cfg) {
		a.log.Warn(w)
	}
	if cfg.MQTT != a.cfg.MQTT {
		restart = append(restart, "mqtt")
	}
	if cfg.ThingName != a.cfg.ThingName {
		restart = append(restart, "thing_name")
	}
	if cfg.DataDir != a.cfg.DataDir {
		restart = append(restart, "data_dir")
	}
	if fmt.Sprint(otherSSH(cfg.SSH)) != fmt.Sprint(otherSSH(a.cfg.SSH)) {
		restart = append(restart, "ssh")
	}
	if cfg.Log.Format != a.cfg.Log.Format {
		restart = append(restart, "log.format")
	}
	if cfg.Tunnel != a.cfg.Tunnel {
		restart = append(restart, "tunnel (applies to new tunnels only after a restart)")
	}
	sort.Strings(restart)
	return restart
}

// otherSSH is c without the settings Reload applies (sshd.Logins).
func otherSSH(c SSHConfig) SSHConfig {
	c.AuthorizedKeys, c.TrustedUserCAKeys, c.PasswordHashes = nil, nil, nil
	return c
}

// fingerprint labels a token in logs and events without revealing it; it is the
// same label the tunnel package logs.
func fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:4])
}

// clockCheckInterval is how often a session checks whether the wall clock has
// been stepped since its tunnel was saved, and tries again to save a tunnel
// that could not be (a var for tests).
var clockCheckInterval = time.Minute

// watchClock restamps the saved state of session s while it runs, each time
// the wall clock has been stepped (NTP's first answer, date -s), as restamp
// does when the agent stops: an agent that dies without a stop (a power cut,
// the watchdog, the OOM killer) must not leave an open tunnel saved as
// received long ago, for the next start to drop, or in the future, for it to
// keep past its end. It also saves a tunnel whose state could not be saved as
// it started (data_dir full) once there is space again: an operator may free
// it through this very tunnel, then reboot. The same ticker, no goroutine
// more. It updates t.Received; stop waits for it to be done.
func (a *Agent) watchClock(ctx context.Context, s *session, t *savedTunnel, log *slog.Logger) (stop func()) {
	a.mu.Lock()
	unsaved := s.unsaved
	a.mu.Unlock()
	if s.received.IsZero() && !unsaved {
		return func() {} // its age is not known, and it is saved
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(clockCheckInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// Under a.mu, where a yielding session's state is removed
			// (endLocked) and the agent's stop begins: not saved again then.
			a.mu.Lock()
			if ctx.Err() == nil {
				a.saveStepped(s, t, log)
			}
			a.mu.Unlock()
		}
	}()
	return func() { cancel(); <-done }
}
