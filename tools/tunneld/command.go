package tunneld

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/usage"
)

// Options are the command line of porthole-tunneld.
type Options struct {
	Listen     string // address of both planes
	TLSCert    string // PEM certificate chain; with TLSKey, serve HTTPS/WSS
	TLSKey     string
	DataDir    string
	Region     string
	MQTTBroker string // host:port or URL; "" disables notifications
	MQTTCA     string
	MQTTCert   string
	MQTTKey    string
	ClientID   string
	PrintAddr  bool
	Bandwidth  int
	MaxTunnels int
	MaxClosed  int
	MaxConns   int
	Unsigned   bool
	CredFile   string
	Verbose    bool
	// Reload, if not nil, asks Run to load --tls-cert and --tls-key again at each
	// receive (main sends SIGHUP there).
	Reload <-chan os.Signal

	// shutdownTimeout bounds the wait for requests in flight at the stop; 0
	// means 10 s. (Tests shorten it.)
	shutdownTimeout time.Duration
}

const usageText = `Usage: porthole-tunneld [flags]

A self-hosted AWS IoT Secure Tunneling service. One address serves the control plane
(AWS JSON 1.1 on POST /, for the AWS CLI and SDKs with --endpoint-url) and the data
plane (WebSocket on /tunnel, for localproxy, porthole and the AWS IoT Device SDKs).
Opening a tunnel for a thing, or rotating its destination token, publishes the token
on $aws/things/<thing>/tunnels/notify through the MQTT broker, if one is given.

Example:
  porthole-tunneld --listen 127.0.0.1:8443 --data-dir /var/lib/porthole-tunneld \
    --mqtt-broker 127.0.0.1:8883 --mqtt-ca ca.pem --mqtt-cert tunneld.pem --mqtt-key tunneld.key
  AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x aws iotsecuretunneling open-tunnel \
    --endpoint-url http://127.0.0.1:8443 --region us-east-1 \
    --destination-config thingName=dev1,services=SSH

Flags:
`

// ParseFlags parses the command line. With --help it prints the usage to stdout and
// returns flag.ErrHelp; on a usage error it prints the error and the usage to stderr.
func ParseFlags(args []string, stdout, stderr io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("porthole-tunneld", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8443", "`address` (host:port) of the control plane (POST /) and the data plane (/tunnel); port 0 picks a free port, see --print-addr")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "PEM certificate `file` (chain) to serve HTTPS and WSS; needs --tls-key; without both, plain HTTP and WS")
	fs.StringVar(&o.TLSKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.StringVar(&o.DataDir, "data-dir", "", "`directory` for the state file tunnels.json (tunnels and their tokens survive a restart); empty keeps state in memory")
	fs.StringVar(&o.Region, "region", DefaultRegion, "AWS `region` reported in notifications and tunnel ARNs, 1-64 characters of [a-zA-Z0-9._-] (what the agent takes); with --credentials, requests must be signed for it")
	fs.StringVar(&o.MQTTBroker, "mqtt-broker", "", "MQTT broker for tunnel notifications: host:port (TLS), or an mqtts:// (TLS; also tls://, ssl://) or mqtt:// (plain TCP; also tcp://) URL; empty disables notifications")
	fs.StringVar(&o.MQTTCA, "mqtt-ca", "", "PEM CA `file` that signed the broker's certificate")
	fs.StringVar(&o.MQTTCert, "mqtt-cert", "", "PEM client certificate `file` for mutual TLS with the broker (its identity must be allowed to publish on $aws/things/+/tunnels/notify)")
	fs.StringVar(&o.MQTTKey, "mqtt-key", "", "PEM private key `file` of --mqtt-cert")
	fs.StringVar(&o.ClientID, "mqtt-client-id", "", "MQTT client `id`; empty means porthole-tunneld-<random>")
	fs.BoolVar(&o.PrintAddr, "print-addr", false, "print the bound address (host:port) on a line of its own on stdout once listening; useful with port 0")
	fs.IntVar(&o.Bandwidth, "bandwidth", 0, "limit each tunnel to this many `bytes` per second, both directions and WebSocket pings and pongs together; 0 is unlimited (AWS documents 800 KB/s)")
	fs.IntVar(&o.MaxTunnels, "max-open-tunnels", DefaultMaxOpenTunnels, "OpenTunnel fails with LimitExceededException while this `number` of tunnels are open; at least 1")
	fs.IntVar(&o.MaxClosed, "max-closed-tunnels", DefaultMaxClosedTunnels, "keep at most this `number` of closed tunnels describable (for 3 hours each); past it the ones closed first are forgotten; at least 1")
	fs.IntVar(&o.MaxConns, "max-connections", DefaultMaxConnections, "serve at most this `number` of connections at once, API clients' and tunnel WebSockets' together; those beyond it wait in the listen backlog until one ends, so that a flood of connections cannot use up the process's descriptors; keep it under the open-files limit (ulimit -n, LimitNOFILE=); at least 1")
	fs.BoolVar(&o.Unsigned, "allow-unsigned", false, "accept control-plane requests without an Authorization header (ignored with --credentials)")
	fs.StringVar(&o.CredFile, "credentials", "", "`file` of \"ACCESS_KEY_ID SECRET_ACCESS_KEY\" lines (# comments): verify every control-plane request's SigV4 signature against them, and its scope (--region, service IoTSecuredTunneling); without it, signatures are not checked and any credentials work")
	fs.BoolVar(&o.Verbose, "v", false, "log at debug level")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nLogs go to stderr; access tokens are logged only as fingerprints.\nSIGHUP loads --tls-cert and --tls-key again (for certificate renewal hooks); if they\ndo not load, or the new certificate is out of its dates while the served one is\nnot, the previous pair is kept and an error is logged.\nExit codes: 0 after SIGINT or SIGTERM (or --help), 1 on a usage or configuration\nerror (do not restart), 2 on a runtime failure (among them a data directory\nthat cannot be written for a full disk or a read-only file system).\n")
	}
	if err := usage.Parse(fs, args, stdout); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return o, err
	}
	// Config.MaxOpenTunnels 0 means the default, but on the command line the
	// default is spelled out: a 0 there is a mistake, not a request for 100.
	for _, f := range []struct {
		name string
		v    int
		min  int
	}{{"bandwidth", o.Bandwidth, 0}, {"max-open-tunnels", o.MaxTunnels, 1}, {"max-closed-tunnels", o.MaxClosed, 1}, {"max-connections", o.MaxConns, 1}} {
		if f.v < f.min {
			want := "must not be negative"
			if f.min > 0 {
				want = fmt.Sprintf("must be at least %d", f.min)
			}
			err := fmt.Errorf("invalid value %d for flag -%s: %s", f.v, f.name, want)
			fmt.Fprintln(stderr, err)
			fs.Usage()
			return o, err
		}
	}
	// Every notification carries the region, and the agent refuses them all
	// for one it does not take. "" is the default, as it always was (a unit's
	// --region "$REGION" with the variable unset ran): named here so that the
	// start line logs the region in use.
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if err := checkRegion(o.Region); err != nil {
		err = fmt.Errorf("invalid value %q for flag -region: %w", o.Region, err)
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return o, err
	}
	// A --listen net.Listen cannot parse fails the same at every restart, so it is
	// a usage error (exit 1) here rather than a runtime failure (exit 2) that
	// Restart=on-failure retries forever. A host name that does not resolve is
	// left to net.Listen: DNS may come up later.
	if err := checkListen(o.Listen); err != nil {
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return o, err
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		err := errors.New("--tls-cert and --tls-key go together")
		fmt.Fprintln(stderr, err)
		return o, err
	}
	if o.MQTTBroker == "" && (o.MQTTCA != "" || o.MQTTCert != "" || o.MQTTKey != "") {
		err := errors.New("--mqtt-ca, --mqtt-cert and --mqtt-key need --mqtt-broker")
		fmt.Fprintln(stderr, err)
		return o, err
	}
	return o, nil
}

// Run serves until ctx ends, then shuts down (saving the state). It logs to stderr
// and, with PrintAddr, prints the bound address to stdout.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	level := slog.LevelInfo
	if o.Verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg := Config{
		Region: o.Region, DataDir: o.DataDir, Bandwidth: o.Bandwidth,
		MaxOpenTunnels: o.MaxTunnels, MaxClosedTunnels: o.MaxClosed, MaxConnections: o.MaxConns, AllowUnsigned: o.Unsigned, Logger: log,
	}
	if n, ok := openFileLimit(); ok && uint64(o.MaxConns)+reservedFiles > n {
		log.Warn("--max-connections is over what the open-files limit leaves: the process may run out of descriptors before the cap, and then refuse tunnels' first connections (their use cannot be saved); raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections",
			"max_connections", o.MaxConns, "open_files_limit", n, "reserved", reservedFiles)
	}
	if o.CredFile != "" {
		creds, err := readCredentials(o.CredFile)
		if err != nil {
			return configError{err}
		}
		// Not on Windows: who may read a file is its ACL there, and Go reports
		// mode 0666 for every writable file (the warning would come every run).
		if fi, err := os.Stat(o.CredFile); err == nil && runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("the --credentials file is readable by others than its owner: it holds secret keys (chmod 600)",
				"path", o.CredFile, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
		}
		cfg.Credentials = creds
	}
	scheme := "http"
	var certs *certFiles
	if o.TLSCert != "" {
		var err error
		if certs, err = loadCertFiles(o.TLSCert, o.TLSKey); err != nil {
			return configError{err}
		}
		if leaf := certs.cur.Load().Leaf; certs.outOfDate(leaf) != "" {
			// Served all the same, as before: the clock may be what is wrong,
			// and a renewal hook's SIGHUP can bring a valid pair.
			log.Warn("the TLS certificate "+certs.outOfDate(leaf)+": clients will refuse it", "cert", o.TLSCert,
				"not_before", leaf.NotBefore.UTC(), "not_after", leaf.NotAfter.UTC())
		}
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}
		scheme = "https"
	}
	var mqtt *MQTTNotifier
	if o.MQTTBroker != "" {
		var err error
		mqtt, err = NewMQTTNotifier(MQTTConfig{Broker: o.MQTTBroker, CAFile: o.MQTTCA, CertFile: o.MQTTCert, KeyFile: o.MQTTKey,
			ClientID: o.ClientID, Logger: log.With("component", "mqtt")})
		if err != nil {
			return configError{err}
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			mqtt.Close(ctx)
		}()
		cfg.Notifier = mqtt
	} else {
		log.Warn("no --mqtt-broker: tunnels are not notified to devices")
	}
	if w := exposure(o); w != "" {
		log.Warn(w, "listen", o.Listen)
	}
	srv, err := New(cfg)
	if errors.Is(err, ErrDataDirInUse) || mayPass(err) {
		return err // the other server may stop, space be freed: a restart may succeed
	}
	if err != nil {
		return configError{err} // a state file that does not parse, a directory not ours or not writable
	}
	l, err := net.Listen("tcp", o.Listen)
	if err != nil {
		srv.Close()
		return fmt.Errorf("listening on %s: %w", o.Listen, err)
	}
	addr := l.Addr().String()
	log.Info("listening", "addr", addr, "api", scheme+"://"+addr+"/", "data_plane", strings.Replace(scheme, "http", "ws", 1)+"://"+addr+"/tunnel",
		"region", srv.cfg.Region, "data_dir", o.DataDir)
	if o.PrintAddr {
		fmt.Fprintln(stdout, addr)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
serve:
	for {
		select {
		case err := <-errc:
			srv.Close()
			return fmt.Errorf("serving: %w", err)
		case <-o.Reload:
			if certs == nil {
				log.Info("reload asked: no --tls-cert to reload")
				continue
			}
			if leaf, err := certs.reload(); err != nil {
				log.Error("TLS certificate not reloaded: still serving the previous one", "err", err)
			} else if why := certs.outOfDate(leaf); why != "" {
				log.Warn("TLS certificate reloaded, though it "+why+" (so had the previous one): clients will refuse it", "cert", o.TLSCert,
					"not_before", leaf.NotBefore.UTC(), "not_after", leaf.NotAfter.UTC())
			} else {
				log.Info("TLS certificate reloaded", "cert", o.TLSCert, "not_after", leaf.NotAfter.UTC())
			}
		case <-ctx.Done():
			break serve
		}
	}
	log.Info("shutting down")
	wait := cmp.Or(o.shutdownTimeout, 10*time.Second)
	sctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err = srv.Shutdown(sctx) // the state is saved whether or not requests ended in time
	if errors.Is(err, context.DeadlineExceeded) {
		// The stop was asked for: requests that did not end in time (a
		// client that never sends the rest of a body; no credentials are
		// needed for that) are cut, and it is a clean stop, not a runtime
		// failure (exit 2) for a supervisor to respawn.
		log.Warn("requests still in flight at the stop: connections cut", "waited", wait)
		srv.Close()
		err = nil
	}
	if serr := <-errc; !errors.Is(serr, ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// reservedFiles is what --max-connections should leave of the open-files
// limit for the rest: the listener, the state file and its directory, the
// MQTT connection, the logs, and some to spare.
const reservedFiles = 64

// exposure is the warning Run logs at start about who can reach o's control
// plane and read what crosses it, or "".
func exposure(o Options) string {
	switch {
	case o.CredFile != "" && o.TLSCert == "" && !loopbackOnly(o.Listen):
		// The signatures hold, but the answers carry the access tokens, and the
		// data plane's handshakes too.
		return "listening beyond loopback without --tls-cert: access tokens cross the network in clear text; give --tls-cert and --tls-key, or put a TLS proxy in front"
	case o.CredFile != "":
		return ""
	case !loopbackOnly(o.Listen):
		return "listening beyond loopback without --credentials: anyone who reaches this address can open, rotate and close tunnels and receive their access tokens"
	default:
		return "without --credentials: every user of this machine can open, rotate and close tunnels and receive their access tokens"
	}
}

// loopbackOnly reports whether listen (host:port) binds loopback addresses only;
// an empty host, 0.0.0.0 and [::] bind every interface.
func loopbackOnly(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	return err == nil && loopbackHost(host)
}

// checkListen reports whether listen is host:port with a port net.Listen takes:
// a number from 0 to 65535 (0 picks a free one) or a service name (https), as
// before the check, which a unit file may use.
func checkListen(listen string) error {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("invalid value %q for flag -listen: %w", listen, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("invalid value %q for flag -listen: want host:port with a port from 0 to 65535 (or a service name)", listen)
	}
	return nil
}

// configError is an error of Run that a restart cannot mend: a file named on the
// command line that does not load, a data directory that is not usable.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

// mayPass reports whether err, from New, is one of the file system's that
// mend without a change to the configuration: a full disk or quota (freeing
// space), a file over RLIMIT_FSIZE, a read-only or failing file system
// (remounting, a new medium), the system out of files or memory. The agent
// takes the same as runtime failures (sshd.ErrHostKey). Every other error of
// New is a configuration error: a state file that does not parse or is of
// another version, a data directory that others may change or that tunneld's
// user may not write (EACCES), a path that is not a directory.
func mayPass(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG, syscall.EROFS, syscall.EIO, syscall.ENFILE, syscall.ENOMEM:
		return true
	}
	return false
}

// IsConfigError reports whether Run failed on its configuration (exit code 1: do
// not restart) rather than at run time (exit code 2).
func IsConfigError(err error) bool {
	var ce configError
	return errors.As(err, &ce)
}

// readCredentials reads "ACCESS_KEY_ID SECRET" lines; blank lines and # comments are
// skipped. Errors never quote a line, which holds a secret.
func readCredentials(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading --credentials: %w", err)
	}
	creds := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("--credentials %s line %d: want ACCESS_KEY_ID SECRET_ACCESS_KEY", path, i+1)
		}
		creds[f[0]] = f[1]
	}
	if len(creds) == 0 {
		return nil, fmt.Errorf("--credentials %s: no credentials", path)
	}
	return creds, nil
}
