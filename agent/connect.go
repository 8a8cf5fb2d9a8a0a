package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// ConnectConfig is `porthole connect`: the operator's source-mode proxy.
type ConnectConfig struct {
	Tunnel tunnel.Config // endpoint or region, access token, TLS, proxy
	// Listen maps services to local addresses (-L SERVICE=[addr:]port).
	Listen map[string]string
	// Stdio, when set, carries one connection of this service over Stdin/Stdout
	// (for ssh -o ProxyCommand). "-" means the tunnel's only service.
	Stdio         string
	Stdin         io.Reader
	Stdout        io.Writer
	PeerVersion   tunnel.Version
	TokenCacheDir string // where client tokens are kept per access token; "" means none
	Logger        *slog.Logger
}

// ErrUsage marks errors in how porthole was called or configured (exit code 1):
// errors.Is(err, ErrUsage) holds for every error made by Usagef.
var ErrUsage = errors.New("usage or configuration error")

// Usagef formats an error that is a usage or configuration mistake. Its text is
// just the message; errors.Is(err, ErrUsage) reports it.
func Usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

type usageError struct{ err error }

func (e usageError) Error() string        { return e.err.Error() }
func (e usageError) Unwrap() error        { return e.err }
func (e usageError) Is(target error) bool { return target == ErrUsage }

// Connect runs the source side until ctx ends or the tunnel ends.
//
// The client token is kept per access token in TokenCacheDir, so that successive
// `ssh` invocations through --stdio (each a new process) present the same client
// token and the service accepts the reused source token. Only one source connection
// per token can be live at a time.
func Connect(ctx context.Context, cc ConnectConfig) error {
	cfg := cc.Tunnel
	cfg.Logger = cc.Logger
	if cfg.AccessToken.IsZero() {
		return Usagef("no access token (use --token-file or AWSIOT_TUNNEL_ACCESS_TOKEN)")
	}
	// The client token is kept only once the service has accepted the access
	// token with it: a token it refuses leaves nothing behind.
	save := func() {}
	if cfg.ClientToken.IsZero() && cc.TokenCacheDir != "" {
		ct, cached := cachedClientToken(cc.TokenCacheDir, cfg.AccessToken)
		cfg.ClientToken = ct
		if !cached {
			save = func() {
				if err := saveClientToken(cc.TokenCacheDir, cfg.AccessToken, ct); err != nil && cc.Logger != nil {
					cc.Logger.Warn("client token cache unusable; this token can then be used once only", "error", err)
				}
			}
		}
	}
	// A certificate that fails verification before the first connection is a
	// wrong CA, a wrong endpoint or a wrong clock, and a host name that does not
	// resolve is a wrong region or endpoint: retrying cannot mend them, and an
	// operator is waiting, so stop and say so. (The agent keeps retrying: a device
	// may get its clock, CA or DNS later.)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var connected bool
	var certErr, dnsErr error
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
		var de *net.DNSError
		switch {
		case connected || certErr != nil || dnsErr != nil:
		case tunnel.IsCertificateError(err):
			certErr = err
			cancel()
		case errors.As(err, &de) && de.IsNotFound:
			dnsErr = err
			cancel()
		}
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
		if len(cc.Listen) == 0 {
			return Usagef("nothing to do: give -L SERVICE=[addr:]port or --stdio SERVICE")
		}
		err = src.Run(ctx)
	}
	if errors.Is(err, tunnel.ErrConfig) || errors.Is(err, tunnel.ErrListen) {
		return Usagef("%w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if certErr != nil {
		return fmt.Errorf("the tunneling service's certificate did not verify (check --ca-file, the endpoint and this machine's clock): %w", certErr)
	}
	if dnsErr != nil {
		return fmt.Errorf("the tunneling service's host name does not resolve (check --region or --endpoint): %w", dnsErr)
	}
	return err
}

// cachedClientToken returns the client token kept for access, or a new one
// (cached false) for saveClientToken once the service has accepted it.
func cachedClientToken(dir string, access tunnel.Token) (t tunnel.Token, cached bool) {
	p := filepath.Join(dir, tokenKey(access.Reveal()))
	if b, err := os.ReadFile(p); err == nil {
		if t, err := tunnel.NewClientToken(strings.TrimSpace(string(b))); err == nil {
			return t, true
		}
	}
	return tunnel.GenerateClientToken(), false
}

// saveClientToken keeps client token t for access in dir.
func saveClientToken(dir string, access, t tunnel.Token) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, tokenKey(access.Reveal())), []byte(t.Reveal()+"\n"), 0o600)
}

// ReadTokenFile reads an access token from a file (trailing newline trimmed).
func ReadTokenFile(path string) (tunnel.Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return tunnel.Token{}, Usagef("token file: %w", err)
	}
	t, err := tunnel.NewAccessToken(strings.TrimSpace(string(b)))
	if err != nil {
		return tunnel.Token{}, Usagef("token file %s: %v", path, err)
	}
	return t, nil
}
