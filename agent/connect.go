package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// ConnectConfig is `porthole connect`: the operator's source-mode proxy.
type ConnectConfig struct {
	Tunnel tunnel.Config // endpoint or region, access token, TLS, proxy
	// Listen maps services to local addresses (-L SERVICE=[addr:]port).
	Listen map[string]string
	// Stdio, when set, carries one connection of this service over Stdin/Stdout
	// (for ssh -o ProxyCommand). "-" means the tunnel's only service.
	Stdio       string
	Stdin       io.Reader
	Stdout      io.Writer
	PeerVersion tunnel.Version
	// ClientTokenFrom names where Tunnel.ClientToken came from (the variable
	// AWSIOT_TUNNEL_CLIENT_TOKEN), for the hints when the service refuses it;
	// "" when Connect picks the client token itself.
	ClientTokenFrom string
	// TokenCacheDir is where client tokens are kept per access token, and where a
	// running Connect holds its lock on that token. "" means neither.
	TokenCacheDir string
	// EndpointFrom names the variable Tunnel's Endpoint or Region came from
	// (AWSIOT_TUNNEL_ENDPOINT or AWSIOT_TUNNEL_REGION), "" when from the
	// flags: the messages that say what to check name it, as a value left
	// from another session is mended by unsetting it, not by a flag.
	EndpointFrom string
	Logger       *slog.Logger
}

// endpointSource is what the messages tell the operator to check for the
// endpoint: the variable it came from, or the flags.
func (cc *ConnectConfig) endpointSource() string {
	if cc.EndpointFrom != "" {
		return cc.EndpointFrom
	}
	return "--region or --endpoint"
}

// ErrUsage marks errors in how porthole was called or configured (exit code 1):
// errors.Is(err, ErrUsage) holds for every error made by Usagef.
var ErrUsage = errors.New("usage or configuration error")

// Usagef formats an error that is a usage or configuration mistake. Its text is
// just the message; errors.Is(err, ErrUsage) reports it.
func Usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

type usageError struct{ err error }

func (e *usageError) Error() string        { return e.err.Error() }
func (e *usageError) Unwrap() error        { return e.err }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

// Connect runs the source side until ctx ends or the tunnel ends.
//
// The client token is kept per access token in TokenCacheDir, so that successive
// `ssh` invocations through --stdio (each a new process) present the same client
// token and the service accepts the reused source token. Only one source connection
// per token can be live at a time: the service lets a new one take the place of the
// old (spec §3.8), so Connect holds a lock on the token while it runs and a second
// Connect with the same token ends (ErrUsage) before it dials.
func Connect(ctx context.Context, cc ConnectConfig) error {
	cfg := cc.Tunnel
	cfg.Logger = cc.Logger
	if cfg.AccessToken.IsZero() {
		return Usagef("no access token (use --token-file or AWSIOT_TUNNEL_ACCESS_TOKEN)")
	}
	// As localproxy refuses -s with -d (spec §5.1): RunStdio would ignore Listen.
	if cc.Stdio != "" && len(cc.Listen) > 0 {
		return Usagef("give either -L or --stdio, not both: --stdio carries one connection over stdin/stdout (for ssh ProxyCommand), -L listens on local ports")
	}
	if cc.Stdio == "" && len(cc.Listen) == 0 {
		return Usagef("nothing to do: give -L SERVICE=[addr:]port or --stdio SERVICE")
	}
	if cfg.Endpoint == "" {
		if err := tunnel.ValidateEndpoint("", cfg.Region, false); err != nil {
			return Usagef("%s", untunneled(err))
		}
	}
	// A CA file that cannot be read or holds no certificate fails every dial the
	// same way: say so before anything listens, rather than retry forever with the
	// -L ports open and an operator's ssh hanging on them.
	if cfg.CAFile != "" {
		if err := tunnel.CheckCAFile(cfg.CAFile); err != nil {
			return caFileError(err)
		}
	}
	// An operator waits at a terminal: after a failure, try again within half a
	// minute rather than the agent's two.
	if cfg.RetryMax == 0 {
		cfg.RetryMax = connectRetryMax
	}
	if cfg.PongTimeout == 0 {
		cfg.PongTimeout = connectPongTimeout
	}
	// The client token is kept once the service has accepted the access
	// token with it, or when a stop may have cut its answer short: a token
	// it refuses leaves nothing behind.
	save := func() {}
	if cc.TokenCacheDir != "" {
		// Held with a client token given (AWSIOT_TUNNEL_CLIENT_TOKEN) too: a
		// second source with it would take this one's place all the same.
		unlock, err := lockToken(ctx, cc.TokenCacheDir, cfg.AccessToken, tokenLockWait)
		switch {
		case err == nil:
			defer unlock()
		case errors.Is(err, ErrUsage) || ctx.Err() != nil:
			return err
		case cc.Logger != nil:
			cc.Logger.Warn("client token cache unusable; a second porthole connect with this token would take this one's place", "error", err)
		}
	}
	if cfg.ClientToken.IsZero() && cc.TokenCacheDir != "" {
		ct, cached, err := cachedClientToken(cc.TokenCacheDir, cfg.AccessToken)
		if err != nil && cc.Logger != nil {
			cc.Logger.Warn("client token cache unreadable: a new client token is used, which the service refuses if this token was used here before", "error", err)
		}
		cfg.ClientToken = ct
		if !cached {
			save = func() {
				if err := saveClientToken(cc.TokenCacheDir, cfg.AccessToken, ct); err != nil && cc.Logger != nil {
					cc.Logger.Warn("client token cache unusable; this token can then be used once only", "error", err)
				}
			}
		}
	}
	// Some failures before the first connection cannot be mended by retrying,
	// and an operator is waiting: stop and say so (stopBeforeJoining). (The
	// agent keeps retrying: a device may get its clock, CA or DNS later.)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var connected, toldRetrying bool
	var stopped error // what ended the run before it joined, as said to the operator
	onState := cfg.OnState
	cfg.OnState = func(up bool, err error) {
		if onState != nil {
			onState(up, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if up && !connected {
			save()
		}
		connected = connected || up
		if connected || stopped != nil {
			return
		}
		if stopped = stopBeforeJoining(err, cc.endpointSource()); stopped != nil {
			cancel()
			return
		}
		var he *tunnel.HandshakeError
		if errors.As(err, &he) && !he.Temporary() || ctx.Err() != nil || toldRetrying || cc.Logger == nil {
			return
		}
		// As localproxy, keep trying (spec §3.8): the network may come back.
		// But say once that this is what happens, and how to stop.
		toldRetrying = true
		cc.Logger.Warn("not connected to the tunneling service yet: porthole connect keeps trying until it connects " +
			"(check the network, " + cc.endpointSource() + ", and --https-proxy); stop it with Ctrl-C")
	}
	src := &tunnel.Source{Config: cfg, Listen: cc.Listen, PeerVersion: cc.PeerVersion}
	var err error
	if cc.Stdio != "" {
		svc := cc.Stdio
		if svc == "-" {
			svc = ""
		}
		err = src.RunStdio(ctx, svc, cc.Stdin, cc.Stdout)
	} else {
		err = src.Run(ctx)
	}
	if cc.Stdio == "-" && errors.Is(err, tunnel.ErrConfig) {
		return Usagef("%w; name one: --stdio SERVICE", err)
	}
	if errors.Is(err, tunnel.ErrConfig) || errors.Is(err, tunnel.ErrListen) {
		return Usagef("%w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if stopped != nil {
		return stopped
	}
	if !connected && ctx.Err() != nil {
		// Stopped (Ctrl-C) with a handshake perhaps under way: the service
		// may have taken the client token with it, and the next run would
		// be refused with a new one.
		save()
	}
	// What follows ends the tunnel for this token for good: usage errors
	// (exit 1), so that a supervisor that respawns on failure (systemd's
	// RestartPreventExitStatus=1) does not retry a dead token.
	var he *tunnel.HandshakeError
	switch {
	case errors.As(err, &he) && !he.Temporary():
		return Usagef("%w; %s", err, refusalHint(he, cc.ClientTokenFrom, cc.endpointSource()))
	case errors.Is(err, tunnel.ErrClosedByService):
		// CloseTunnel, the tunnel's lifetime, or a rotated source token (which
		// revokes the one in use) all end the connection so.
		return Usagef("%w: the tunnel was closed or expired, or its source token was rotated "+
			"(porthole connect then needs the new token)", err)
	}
	return err
}

// stopBeforeJoining is the error porthole connect ends with for a failure
// before its first connection that retrying cannot mend, nil for others: a
// --ca-file changed since the start, and a proxy that refuses its credentials
// (407), are usage errors (exit 1); a certificate that does not verify (a wrong
// CA, endpoint or clock), a host name that does not resolve (a wrong region or
// endpoint) and an endpoint or proxy that does not answer in TLS are runtime
// failures (exit 2), since a later run may succeed (a clock set by NTP, DNS
// back, a captive portal gone). The proxy's own failures name the proxy, the
// others endpoint: ConnectConfig.endpointSource.
func stopBeforeJoining(err error, endpoint string) error {
	var de *net.DNSError
	var rh tls.RecordHeaderError
	var pe *tunnel.ProxyError
	proxied := errors.As(err, &pe)
	plain := errors.As(err, &rh)
	cert := tunnel.IsCertificateError(err)
	dns := errors.As(err, &de) && de.IsNotFound
	switch {
	case errors.Is(err, tunnel.ErrCAFile):
		return caFileError(err)
	case proxied && pe.Status == 407:
		return Usagef("%w (check --https-proxy or https_proxy)", err)
	case proxied && plain:
		return wrapErr("the HTTPS proxy does not answer in TLS: a plain proxy is http://, not https:// (check --https-proxy or https_proxy)", err)
	case proxied && (cert || dns):
		return wrapErr("the HTTPS proxy cannot be reached (check --https-proxy or https_proxy: its host name, and its certificate for https://)", err)
	case plain:
		return wrapErr("the endpoint does not answer in TLS (check "+endpoint+" and the port; a lab's service without TLS is --endpoint ws://host:port with --allow-insecure-websocket)", err)
	case cert:
		return wrapErr("the tunneling service's certificate did not verify (check --ca-file, the endpoint and this machine's clock)", err)
	case dns:
		return wrapErr("the tunneling service's host name does not resolve (check "+endpoint+")", err)
	}
	return nil
}

// connectPongTimeout is Connect's tunnel.Config.PongTimeout: a laptop that
// slept or moved to another network holds a dead connection, and the ssh
// session and -L ports hung without a word. Longer than a local reader may
// hold the WebSocket up (the stall timeout, 30 s): four pings at the default
// interval. Whether AWS answers pings while the other side is away, after it
// was there, is unknown (spec §3.7, §8): if not, a device that reboots makes
// connect reconnect every 90 s until it is back, with the "did this machine
// sleep" message (its streams are gone either way). A variable for tests.
var connectPongTimeout = 90 * time.Second

// connectRetryMax caps Connect's reconnect backoff (the engine's default is 120 s).
const connectRetryMax = 30 * time.Second

// caFileError is a --ca-file that cannot be used, as a usage error.
func caFileError(err error) error {
	return Usagef("--ca-file: %s", strings.TrimPrefix(err.Error(), "tunnel: CA file: "))
}

// rotateSource is the remedy the developer guide gives for a source token that was
// used or is held by another client (spec §4).
// The token does not hold the tunnel's ID: list-tunnels shows it (with the
// thing name and description).
const rotateSource = "aws iotsecuretunneling rotate-tunnel-access-token --tunnel-id ID --client-mode SOURCE " +
	"(ID: from aws iotsecuretunneling list-tunnels)"

// refusalHint says what to do about a 4xx from the service, after the service's
// own words (spec §2.6 and the developer guide's troubleshooting table, §4). The
// service's body never holds a token, and neither does the hint. clientTokenFrom
// is ConnectConfig.ClientTokenFrom: where a client token the service refuses
// came from, to be named; endpoint is ConnectConfig.endpointSource.
func refusalHint(he *tunnel.HandshakeError, clientTokenFrom, endpoint string) string {
	if he.StatusCode != 400 && he.StatusCode != 401 && he.StatusCode != 403 {
		// The service refuses tokens with 400 (emulators with 401 or 403).
		return fmt.Sprintf("the endpoint answered HTTP %d instead of a tunnel: it does not look like a Secure Tunneling data plane "+
			"(check %s)", he.StatusCode, endpoint)
	}
	body := strings.ToLower(he.Body)
	switch {
	case strings.Contains(body, "previously used"):
		return "the token was used before by a source this machine has no client token for (another machine or user, " +
			"a cleared cache, localproxy): a source token serves one client; get a new one: " + rotateSource
	case strings.Contains(body, "already in use"):
		// Client tokens are unique across open tunnels (spec §2.1, §3.8): one
		// left set for another tunnel is refused, and so is a rotated access
		// token with it.
		if clientTokenFrom != "" {
			return "the client token in " + clientTokenFrom + " is in use with another tunnel: use one client token per tunnel, " +
				"or unset " + clientTokenFrom + " (porthole connect then keeps one per access token)"
		}
		return "the client token is in use with another tunnel: use one client token per tunnel"
	case strings.Contains(body, "client token") && clientTokenFrom != "":
		// "does not match": a run without the variable, or with another value,
		// set another client token first.
		return "this token was first used with another client token than the one in " + clientTokenFrom + ": by a porthole connect " +
			"without it (unset it: the client token that run kept is used then) or with another value, or by another source " +
			"(another machine, user or tool); run as the first did, or get a new token: " + rotateSource
	case strings.Contains(body, "client token"):
		return "another source (another machine, user or tool, a porthole connect with AWSIOT_TUNNEL_CLIENT_TOKEN set, or one " +
			"here whose client token could not be kept, as it warned) holds this token with its own client token; stop it " +
			"(or set the variable as it did), or get a new token: " + rotateSource
	case strings.Contains(body, "closed"):
		return "the tunnel is closed (CloseTunnel, or its lifetime ended): open a new one"
	case strings.Contains(body, "local-proxy-mode"):
		return "this looks like the tunnel's destination token: porthole connect needs its sourceAccessToken"
	case strings.Contains(body, "access token"):
		return "the token is not the source token of an open tunnel here: the tunnel may be closed or expired, " +
			"the token rotated (use the one the rotation gave), or the tunnel in another region (" + endpoint + "); get a new token (" +
			rotateSource + ") or open a new tunnel"
	}
	return "check that the token is the tunnel's sourceAccessToken, that the tunnel is open, and " + endpoint +
		"; a used token needs a new one: " + rotateSource
}

// cachedClientToken returns the client token kept for access, or a new one
// (cached false) for saveClientToken once the service has accepted it.
// A file that is there but cannot be read (out of descriptors, EIO) is the
// error: the new token then differs from the one the service holds.
func cachedClientToken(dir string, access tunnel.Token) (t tunnel.Token, cached bool, err error) {
	p := filepath.Join(dir, tokenKey(access.Reveal()))
	b, err := os.ReadFile(p)
	if err == nil {
		if t, err := tunnel.NewClientToken(strings.TrimSpace(string(b))); err == nil {
			return t, true, nil
		}
	} else if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return tunnel.GenerateClientToken(), false, err
}

// clientTokenMaxAge is how long a cached client token, and any other file in the
// cache, is kept: twice the longest a tunnel can be open (spec §7), after which
// its access token is dead.
const clientTokenMaxAge = 2 * maxTunnelLifetime

// saveClientToken keeps client token t for access in dir, and removes what the
// cache holds for tunnels that have ended.
func saveClientToken(dir string, access, t tunnel.Token) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	pruneClientTokens(dir, time.Now().Add(-clientTokenMaxAge))
	return writeFileAtomic(filepath.Join(dir, tokenKey(access.Reveal())), []byte(t.Reveal()+"\n"))
}

// pruneClientTokens removes the files in dir last written before cutoff: client
// tokens of tunnels that have ended, temporary files of a crashed write, and lock
// files left by a killed Connect (not one that is held).
func pruneClientTokens(dir string, cutoff time.Time) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(cutoff) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if !strings.HasSuffix(p, tokenLockSuffix) {
			os.Remove(p)
			continue
		}
		if f, err := flockPath(p, false); err == nil {
			removeLocked(p, f)
		}
	}
}

// tokenLockSuffix ends the name of a lock file in the cache: KEY.lock, next to
// the client token KEY it guards.
const tokenLockSuffix = ".lock"

// tokenLockWait is how long Connect waits for the lock on its token: ssh ends a
// ProxyCommand with SIGHUP and does not wait for it, so the next ssh's porthole
// connect may start while the last one is still on its way out. That one holds
// the lock until the service has answered its Close frame, or up to 3 s when it
// does not (agent/tunnel: a second to write the frame, protocolCloseWait to
// wait for the answer); with a wait of 1 s the next was refused as "another
// porthole connect is using this token".
const tokenLockWait = 4 * time.Second

// lockToken takes the lock on access in dir, waiting up to wait for its holder to
// let go, or says which process holds it. The lock is an flock on dir/KEY.lock,
// which holds the holder's pid; unlock removes the file, so none is left behind
// (a killed holder's is pruned later).
func lockToken(ctx context.Context, dir string, access tunnel.Token, wait time.Duration) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, wrapErr("client token cache", err)
	}
	p := filepath.Join(dir, tokenKey(access.Reveal())+tokenLockSuffix)
	f, err := retryFlock(ctx, wait, func() (*os.File, error) { return flockPath(p, true) })
	if errors.Is(err, errLockHeld) {
		who := "another porthole connect"
		if pid := tokenLockHolder(p); pid > 0 {
			who += " (pid " + strconv.Itoa(pid) + ")"
		}
		// A second source connection would take the place of the first (spec
		// §3.8), and the first would take it back when it reconnects.
		return nil, Usagef("%s is using this token; a tunnel carries one source connection at a time, so stop that one first (one porthole connect can carry several -L mappings)", who)
	}
	if err != nil {
		return nil, wrapErr("client token cache", err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	}
	return func() { removeLocked(p, f) }, nil
}

// flockPath opens path (creating it, when create is set) and takes an exclusive
// lock without waiting (lockNoWait); errLockHeld means another holds it. It retries when path
// was removed or replaced between the open and the lock, so that the lock held is
// always on the file that path names.
func flockPath(path string, create bool) (*os.File, error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE
	}
	for range 10 {
		f, err := os.OpenFile(path, flags, 0o600)
		if err != nil {
			return nil, err
		}
		lerr := lockNoWait(f)
		held, err1 := f.Stat()
		named, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, named) {
			if lerr != nil {
				f.Close()
				return nil, lerr
			}
			return f, nil
		}
		f.Close() // removed by its holder or the pruner meanwhile: try the new one
		if !create && errors.Is(err2, os.ErrNotExist) {
			return nil, err2
		}
	}
	return nil, errors.New("locking " + path + ": it keeps being replaced")
}

// tokenLockHolder returns the pid written in the lock file at path, or 0.
func tokenLockHolder(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// trimToken is s without the white space around it and a UTF-8 byte order
// mark (Notepad, PowerShell's Set-Content -Encoding UTF8) at its start: they
// end or start a file, and a token never holds them.
func trimToken(s string) string {
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "\ufeff"))
}

// AccessToken checks an access token from any source (--token, --token-file,
// AWSIOT_TUNNEL_ACCESS_TOKEN), trimming the white space around it the same way for
// all: the newline that ends a file or an echo, a CR and a byte order mark from
// Windows. Its error says what is wrong for a message that names the source.
func AccessToken(s string) (tunnel.Token, error) {
	s = trimToken(s)
	// A JSON string: `jq` without -r, or the AWS CLI's --query without
	// --output text. No access token is quoted so; sent as it is, the service
	// refuses it as a wrong token, and the operator rotates a good one.
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return tunnel.Token{}, errors.New("access token is in double quotes, as JSON output writes it: give the bare token " +
			"(jq -r .sourceAccessToken, or the AWS CLI's --query sourceAccessToken --output text)")
	}
	// The AWS CLI's --output text without --query: the whole answer on one
	// line, its fields (both tokens among them) between tabs.
	if strings.Contains(s, "\t") {
		return tunnel.Token{}, errors.New("access token holds tabs, as the AWS CLI's --output text writes a whole answer: give the token alone " +
			"(the AWS CLI's --query sourceAccessToken --output text, or jq -r .sourceAccessToken)")
	}
	t, err := tunnel.NewAccessToken(s)
	if err != nil {
		return t, errors.New(untunneled(err))
	}
	return t, nil
}

// TLSOffWarnings says what turning the tunnel's TLS off exposes, for the agent's
// start and check-config and for porthole connect: skipName and endpointName
// are how the caller names the settings, proxied says whether a proxy is set
// other than by the environment. Over loopback (a lab) nothing crosses a
// network, unless a proxy carries it: no warning then.
func TLSOffWarnings(endpoint string, skipVerify, allowPlain, proxied bool, skipName, endpointName string) []string {
	envProxy, _ := tunnel.EnvironmentProxy(endpoint, "", allowPlain)
	if loopbackEndpoint(endpoint) && !proxied && envProxy == nil {
		return nil
	}
	var out []string
	if skipVerify {
		out = append(out, skipName+" is on: the tunneling service's certificate is not checked, so anyone in the network path can take the access tokens and reach the tunnel's services (an https:// proxy's certificate is still checked)")
	}
	if allowPlain && tunnel.PlainEndpoint(endpoint) {
		out = append(out, endpointName+" is ws:// (no TLS): the access tokens and the tunnels cross the network unencrypted (labs only)")
	}
	return out
}

// loopbackEndpoint reports whether a data-plane endpoint (host[:port] or a
// URL) names this machine: localhost or a loopback address.
func loopbackEndpoint(endpoint string) bool {
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		endpoint = u.Host
	}
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback()
}

// maxTokenFile is the most ReadTokenFile reads: a token with white space
// around it fits many times over, and a wrong path (/dev/zero, a disk image)
// is refused without reading it whole.
const maxTokenFile = 16 << 10

// ReadTokenFile reads an access token from a file, as AccessToken.
func ReadTokenFile(path string) (tunnel.Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return tunnel.Token{}, Usagef("token file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	switch {
	case err != nil:
		return tunnel.Token{}, Usagef("token file: %w", err)
	case len(b) > maxTokenFile:
		return tunnel.Token{}, Usagef("token file %s: larger than %d KiB, not an access token", path, maxTokenFile>>10)
	case bytes.HasPrefix(b, []byte{0xff, 0xfe}) || bytes.HasPrefix(b, []byte{0xfe, 0xff}):
		return tunnel.Token{}, Usagef("token file %s is UTF-16 text (PowerShell's > or Out-File write it so): save the token as ASCII or UTF-8", path)
	case strings.HasPrefix(trimToken(string(b)), "{"):
		// Never the content in the message: it holds tokens.
		return tunnel.Token{}, Usagef("token file %s holds JSON (open-tunnel's answer?): write only the source token to it, e.g. with jq -r .sourceAccessToken", path)
	}
	t, err := AccessToken(string(b))
	if err != nil {
		return tunnel.Token{}, Usagef("token file %s: %v", path, err)
	}
	return t, nil
}
