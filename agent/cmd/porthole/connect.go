package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/porthole-iot/porthole/agent"
	"github.com/porthole-iot/porthole/agent/internal/syntax"
	"github.com/porthole-iot/porthole/agent/tunnel"
)

// listenFlags collects repeated -L SERVICE=[addr:]port.
type listenFlags map[string]string

func (l listenFlags) String() string { return fmt.Sprint(map[string]string(l)) }
func (l listenFlags) Set(s string) error {
	// localproxy's -s takes SSH=2222,WEB=8080 (spec §5.1); no service id or
	// listen address holds a comma.
	if strings.IndexByte(s, ',') >= 0 {
		return errors.New("one mapping per -L: -L SSH=2222 -L WEB=8080")
	}
	svc, addr, err := tunnel.ParseListen(s)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "tunnel: "))
	}
	if _, bare := l[""]; (svc == "") != bare && len(l) > 0 {
		return errors.New("a bare [addr:]port is for a one-service tunnel and cannot be mixed with SERVICE=[addr:]port")
	}
	if _, dup := l[svc]; dup {
		if svc == "" {
			return errors.New("a bare [addr:]port can be given once, for a one-service tunnel; name the services: SERVICE=[addr:]port")
		}
		return fmt.Errorf("service %q mapped twice", svc)
	}
	l[svc] = addr
	return nil
}

func runConnect(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	// A log reader that goes away (porthole connect ... 2>&1 | logger, or |
	// tee ended by Ctrl-C) must not end the connections: Go kills a program
	// whose write to fd 1 or 2 gets EPIPE unless SIGPIPE is handled, and the
	// next log line did (exit 141, the -L ports and their logins gone, the
	// device never told). Handled, as by the agent: the write fails instead,
	// and the line is dropped. With --stdio a stdout that ssh no longer reads
	// fails its writes the same way, and the connection ends as when its
	// target closes (stdin ends with ssh).
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)
	fs := flag.NewFlagSet("porthole connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := listenFlags{}
	region := fs.String("region", "", "AWS region of the tunnel (builds the endpoint; default: AWSIOT_TUNNEL_REGION)")
	endpoint := fs.String("endpoint", "", "data-plane endpoint host[:port] or wss:// URL, instead of --region (default: AWSIOT_TUNNEL_ENDPOINT)")
	tokenFile := fs.String("token-file", "", "file holding the source access token (wins over AWSIOT_TUNNEL_ACCESS_TOKEN)")
	tokenArg := fs.String("token", "", "source access token, instead of --token-file (visible to other users in the process list: prefer --token-file)")
	fs.Var(listen, "L", "SERVICE=[addr:]port to listen on (repeatable; a bare [addr:]port for a one-service tunnel)")
	stdio := fs.String("stdio", "", "carry one connection of SERVICE over stdin/stdout (for ssh ProxyCommand), instead of -L; - for the only service")
	peer := fs.String("destination-client-type", "V3", "the destination's protocol: V3, or V2/V1 for older agents (Device Client, Greengrass), which carry one connection per service at a time")
	caFile := fs.String("ca-file", "", "extra CA file or directory for the service's TLS certificate")
	insecure := fs.Bool("insecure-skip-verify", false, "do not verify the tunneling service's TLS certificate (labs only); an https:// proxy's is still verified")
	allowWS := fs.Bool("allow-insecure-websocket", false, "allow a ws:// endpoint without TLS (labs and tests only)")
	proxy := fs.String("https-proxy", "", "HTTPS proxy URL http[s]://[user:password@]host[:port] (default: https_proxy/HTTPS_PROXY, honouring NO_PROXY); a password here is visible to other users in the process list: prefer the https_proxy variable")
	verbose := fs.Bool("v", false, "debug logging")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	level := slog.LevelInfo
	switch {
	case *verbose:
		level = slog.LevelDebug
	case *stdio != "":
		level = slog.LevelWarn // a ProxyCommand is quiet unless something is wrong
	}
	// As the agent's (logWriter): a terminal paused with Ctrl-S must not stop
	// the connections.
	out := newLogWriter(stderr)
	defer out.close(2 * time.Second)
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level, ReplaceAttr: dropTime}))
	out.onDropped(func(n int) { log.Warn("log lines dropped: the terminal did not take them in time", "dropped", n) })

	set := flagsGiven(fs)
	endpointName, fromEnv := "--endpoint", false
	if *region == "" && *endpoint == "" {
		// As localproxy: the environment stands in for -r and -e (both set
		// is refused below, as there). The messages below then name the
		// variable, as the access token's do: no flag was given, and a
		// variable left from a lab session is mended by unsetting it.
		// Trimmed, as the token variables are: cmd.exe's
		// `set AWSIOT_TUNNEL_REGION=eu-west-1 && porthole connect …` keeps the
		// space before &&.
		*region, *endpoint = strings.TrimSpace(os.Getenv(regionEnv)), strings.TrimSpace(os.Getenv(endpointEnv))
		endpointName, fromEnv = endpointEnv, true
	}
	tok, from, err := accessToken(set["token"], *tokenArg, set["token-file"], *tokenFile, os.Getenv)
	if err != nil {
		return err
	}
	if from == "--token" {
		log.Warn("--token is visible to every user of this machine in the process list; prefer --token-file")
	}
	if fi, err := os.Stat(*tokenFile); from == "--token-file" && err == nil && sharedTokenFile(runtime.GOOS, fi.Mode()) {
		log.Warn("the token file is readable by other users of this machine: chmod 600 it", "file", *tokenFile, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
	for _, w := range agent.TLSOffWarnings(*endpoint, *insecure, *allowWS, *proxy != "", "--insecure-skip-verify", endpointName) {
		log.Warn(w)
	}
	if from != "" {
		log.Info("access token", "from", from, "token", tok)
	}
	if (*region == "") == (*endpoint == "") {
		return agent.Usagef("give exactly one of --region and --endpoint (or of %s and %s)", regionEnv, endpointEnv)
	}
	err = tunnel.ValidateEndpoint(*endpoint, *region, *allowWS)
	switch {
	case errors.Is(err, tunnel.ErrPlainWebSocket) && fromEnv:
		// Not --allow-insecure-websocket: with a variable left from a lab, it
		// would send a real token in the clear.
		return agent.Usagef("%s=%s is not TLS (left from a lab?): unset it, or give --region or --endpoint", endpointEnv, *endpoint)
	case errors.Is(err, tunnel.ErrPlainWebSocket):
		return agent.Usagef("--endpoint %s is not TLS: add --allow-insecure-websocket (labs and tests only)", *endpoint)
	case err != nil && fromEnv && *endpoint == "":
		return tunnelUsage(regionEnv, err)
	case err != nil && fromEnv:
		return tunnelUsage(endpointEnv, err)
	case err != nil:
		return tunnelUsage("", err)
	}
	var pv tunnel.Version // a switch, not a map literal built at every run: less code
	switch *peer {
	case "V1":
		pv = tunnel.V1
	case "V2":
		pv = tunnel.V2
	case "V3":
		pv = tunnel.V3
	}
	if pv == 0 {
		// localproxy's -y documents V1 and V2 and takes any other value for
		// V3 (its README), a v1 too as far as it says, which a V1 destination
		// cannot follow: refused here, not guessed either way.
		return agent.Usagef("--destination-client-type %q: want V1, V2 or V3, in upper case", *peer)
	}
	cfg := tunnel.Config{Region: *region, Endpoint: *endpoint, AccessToken: tok, CAFile: *caFile, CAFileName: "--ca-file",
		InsecureSkipVerify: *insecure, AllowInsecureWebSocket: *allowWS, UserAgent: "porthole/" + agent.Version}
	clientTokenFrom := ""
	if v := strings.TrimSpace(os.Getenv(clientTokenEnv)); v != "" {
		// localproxy's -i: a source token used with a client token is
		// accepted again only with that client token.
		ct, err := tunnel.NewClientToken(v)
		if err != nil {
			return tunnelUsage(clientTokenEnv, err)
		}
		cfg.ClientToken, clientTokenFrom = ct, clientTokenEnv
	}
	if *proxy != "" {
		u, err := tunnel.ParseProxyURL(*proxy)
		if err != nil {
			return tunnelUsage("--https-proxy", err)
		}
		cfg.Proxy = tunnel.ProxyURL(u)
		if _, ok := u.User.Password(); ok {
			// As --token: argv is anyone's to read; the environment is not.
			log.Warn("--https-proxy holds a password, visible to every user of this machine in the process list; prefer the https_proxy environment variable")
		}
	} else if _, err := tunnel.EnvironmentProxy(*endpoint, *region, *allowWS); err != nil {
		// Every dial would fail the same way: say so now, naming the variable.
		return tunnelUsage("", err)
	}
	cache := ""
	if dir, err := os.UserCacheDir(); err == nil {
		cache = filepath.Join(dir, "porthole", "client-tokens")
	} else {
		// Neither HOME nor XDG_CACHE_HOME (a systemd system unit, cron, env
		// -i): say what is lost, as Connect does for a cache it cannot
		// write, or the next run's refusal blames another source.
		lost := "a second porthole connect with this token would take this one's place (no lock)"
		if cfg.ClientToken.IsZero() {
			lost = "this token can then be used once only, and " + lost
		}
		log.Warn("client token cache unusable; "+lost, "error", err)
	}
	// A hangup ends it as Ctrl-C does, the device told that the streams are
	// gone: it is how it usually ends when not stopped by hand (the terminal
	// of a `porthole connect ... &` closed, ssh ending its ProxyCommand).
	// Unless it is ignored (nohup): Notify would stop ignoring it.
	stopped, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx := stopped
	if !signal.Ignored(syscall.SIGHUP) {
		var hangup context.CancelFunc
		ctx, hangup = signal.NotifyContext(stopped, syscall.SIGHUP)
		defer hangup()
	}
	endpointFrom := ""
	switch {
	case fromEnv && *endpoint != "":
		endpointFrom = endpointEnv
	case fromEnv:
		endpointFrom = regionEnv
	}
	err = agent.Connect(ctx, agent.ConnectConfig{Tunnel: cfg, Listen: listen, Stdio: *stdio, Stdin: stdin, Stdout: stdout,
		PeerVersion: pv, ClientTokenFrom: clientTokenFrom, TokenCacheDir: cache, EndpointFrom: endpointFrom, Logger: log})
	if *stdio != "" && errors.Is(err, context.Canceled) && stopped.Err() != nil {
		// Stopped by hand: a script that runs it must not read success
		// (exit 2). A hangup is how ssh ends its ProxyCommand: exit 0.
		if errors.Is(err, tunnel.ErrStoppedOpen) {
			return errors.New("stopped with the connection open: what it carried may be cut short")
		}
		return errors.New("stopped before the connection opened: nothing was carried")
	}
	return err
}

// tunnelUsage is err, from the tunnel package, as a usage error: its "tunnel: "
// prefix replaced by what, the flag or variable at fault ("" for none).
func tunnelUsage(what string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "tunnel: ")
	if what != "" {
		msg = what + ": " + msg
	}
	return agent.Usagef("%s", msg)
}

// tokenEnv holds the access token when neither --token nor --token-file is given.
const tokenEnv = "AWSIOT_TUNNEL_ACCESS_TOKEN"

// The other variables localproxy reads (spec §5.1): the client token, and the
// endpoint or region when neither --endpoint nor --region is given.
const (
	clientTokenEnv = "AWSIOT_TUNNEL_CLIENT_TOKEN"
	endpointEnv    = "AWSIOT_TUNNEL_ENDPOINT"
	regionEnv      = "AWSIOT_TUNNEL_REGION"
)

// accessToken picks the access token and says where it came from ("" when none
// is given). As localproxy's, an option on the command line wins over the
// environment (spec §5.1); --token and --token-file together are a mistake.
// White space around the token is trimmed whatever its source.
func accessToken(tokenSet bool, token string, fileSet bool, file string, getenv func(string) string) (tunnel.Token, string, error) {
	var t tunnel.Token
	var err error
	switch {
	case tokenSet && fileSet:
		return t, "", agent.Usagef("give one of --token and --token-file, not both (--token-file keeps the token out of the process list)")
	case fileSet && file == "":
		return t, "", agent.Usagef("--token-file: empty")
	case fileSet:
		t, err = agent.ReadTokenFile(file)
		if err != nil && syntax.Name(file, 32, 1<<16, tokenChars) {
			// Not err, which quotes it; unless a file of that name exists:
			// then err says what is wrong with it (JSON, UTF-16, no token).
			if _, serr := os.Lstat(file); serr != nil {
				err = agent.Usagef("--token-file: its value looks like a token, not a file's name")
			}
		}
		return t, "--token-file", err
	case tokenSet:
		t, err = agent.AccessToken(token)
		if err != nil {
			return t, "", agent.Usagef("--token: %v", err)
		}
		return t, "--token", nil
	case getenv(tokenEnv) != "":
		t, err = agent.AccessToken(getenv(tokenEnv))
		if err != nil {
			return t, "", agent.Usagef("%s: %v", tokenEnv, err)
		}
		return t, tokenEnv, nil
	}
	return t, "", nil
}

// tokenChars are what a token holds besides letters and digits (base64url
// and its padding). An argument or a --token-file value of 32 characters or
// more (a client token's least, spec §1.3) and nothing else, without a file
// name's '.' or '/', may be a token given there by mistake: the messages
// about it do not quote it (a helper function of its own would cost the
// device binary more than the two calls of syntax.Name).
const tokenChars = "-_="

// sharedTokenFile reports whether a token file's mode lets other users read
// it. Not on Windows, where who may read a file is in its ACL and the mode
// Go reports is 0666 for every file (0444 read-only): the warning would come
// on every run, --stdio's included, with a chmod that changes nothing.
func sharedTokenFile(goos string, mode fs.FileMode) bool {
	return goos != "windows" && mode.Perm()&0o044 != 0
}

// dropTime keeps progress lines short: the terminal shows when they happen.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
