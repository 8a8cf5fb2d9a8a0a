// Command porthole-console serves porthole's operator web console on its own: SSH
// terminals in the browser through AWS IoT Secure Tunneling (paste a source access
// token and the region) or a tools/tunneld; with --control-plane the page also opens
// and closes tunnels. It prints the URL to open, with its access token. See package
// console. It stops on Ctrl-C, SIGTERM and SIGHUP (a closed terminal), closing the
// tunnels it opened. Exit codes: 0 after a stop by signal, 1 bad usage, 2 the server
// failed.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/tools/console"
	"github.com/porthole-iot/porthole/tools/internal/usage"
)

func main() {
	// A log reader that goes away (porthole-console 2>&1 | logger, or | tee
	// ended by Ctrl-C) must not end the console and its terminals: Go kills a
	// program whose write to fd 1 or 2 gets EPIPE unless SIGPIPE is handled.
	// Caught (as by the agent and the lab), the write fails instead, and slog
	// drops the line.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type keyFlags []console.Key

func (k *keyFlags) String() string { return "" }
func (k *keyFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok {
		name, path = filepath.Base(v), v
	}
	if path == "" {
		// Not left to checkKey, whose "open : no such file or directory"
		// names no file.
		return errors.New("PATH empty (want [NAME=]PATH)")
	}
	*k = append(*k, console.Key{Name: name, Path: path})
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-console", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve the console on: loopback, unless --tls-cert or --plain-http "+
		"(default: a free port, another each run; a fixed port shares its browser origin with whatever served on it before)")
	plainHTTP := fs.Bool("plain-http", false, "serve plain HTTP on a --listen address that is not loopback, "+
		"for a TLS reverse proxy on a network you trust")
	tlsCert := fs.String("tls-cert", "", "serve https with this PEM certificate (chain) file, read at start; with --tls-key")
	tlsKey := fs.String("tls-key", "", "the PEM private key of --tls-cert")
	publicURL := fs.String("public-url", "", "the console's address in the browser when a reverse proxy serves it, e.g. "+
		"https://console.example.com: its pages and terminals may then come from that origin, and it is the URL printed")
	region := fs.String("region", "us-east-1", "AWS region of the tunnels (the data-plane endpoint follows from it); "+
		"with AWS's --control-plane, the region in its host")
	endpoint := fs.String("endpoint", "", "data-plane endpoint host[:port] or wss:// URL, instead of the region's")
	caFile := fs.String("ca-file", "", "extra PEM trust anchor for the data plane and --control-plane: a file, or a directory of them; read at start")
	cp := fs.String("control-plane", "", "control plane URL, so that the page can open and close tunnels: a porthole-tunneld "+
		"(https://host:port) or AWS (https://api.tunneling.iot.REGION.amazonaws.com); requests are signed with "+
		"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN when set")
	thing := fs.String("thing", "", "thing name to pre-fill")
	user := fs.String("user", "root", "login name to pre-fill")
	hostKeys := fs.String("host-keys", "", "host key store (trust on first use); default: porthole/console_host_keys.json in the user config dir")
	vendorDir := fs.String("vendor-dir", "", "serve xterm.js from this directory instead of the copy built in (tools/console/web/vendor)")
	debug := fs.Bool("debug", false, "log every request (method and path only)")
	var keys keyFlags
	fs.Var(&keys, "key", "private key offered for logins, [NAME=]PATH, without a passphrase (repeatable; the first is pre-selected; "+
		"a key with a passphrase can be pasted in the page with it instead)")
	if err := usage.Parse(fs, args, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	if fs.NArg() > 0 {
		// flag stops at the first word that is not a flag: the flags after it
		// would be ignored without a word.
		fmt.Fprintf(stderr, "porthole-console: unexpected argument %q (flags only; see -h)\n", fs.Arg(0))
		return 1
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *hostKeys == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			fmt.Fprintf(stderr, "porthole-console: %v: give --host-keys\n", err)
			return 1
		}
		*hostKeys = filepath.Join(dir, "porthole", "console_host_keys.json")
	}
	cfg := console.Config{Endpoint: *endpoint, Region: *region, CAFile: *caFile, Thing: *thing, User: *user,
		Keys: keys, HostKeys: &console.HostKeys{Path: *hostKeys}, PublicURL: *publicURL, Logger: log}
	if *cp != "" {
		u, err := url.Parse(*cp)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			// Not http: its answers hold access tokens, and the data plane
			// of a tunneld on that port would be plain ws://, which the
			// console does not use.
			fmt.Fprintf(stderr, "porthole-console: --control-plane %q: want https://host[:port] (a tunneld serves https with --tls-cert; give its CA with --ca-file)\n", *cp)
			return 1
		}
		// A tunneld serves both planes on one port; AWS's data plane follows
		// the region, which AWS's control plane has in its host: it refuses
		// requests signed for another, and its tunnels are in that region's
		// data plane.
		switch r := console.AWSRegion(u.Hostname()); {
		case r == "" && *endpoint == "":
			cfg.Endpoint = u.Host
		case r != "" && flagsGiven(fs)["region"] && *region != r:
			fmt.Fprintf(stderr, "porthole-console: --region %s, but --control-plane %s is AWS's in %s, "+
				"which refuses requests signed for another region: leave out --region, or give the control plane of %s\n", *region, *cp, r, *region)
			return 1
		case r != "":
			*region = r
		}
		cfg.Region = *region
		cfg.ControlPlane = &console.ControlPlaneAPI{URL: *cp, Region: *region, CAFile: *caFile,
			Credentials: console.Credentials{AccessKeyID: os.Getenv("AWS_ACCESS_KEY_ID"),
				SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: os.Getenv("AWS_SESSION_TOKEN")}}
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintln(stderr, "porthole-console: --tls-cert and --tls-key go together")
		return 1
	}
	if *tlsCert != "" {
		pair, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			fmt.Fprintf(stderr, "porthole-console: --tls-cert/--tls-key: %v\n", err)
			return 1
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	// The keys are read again at each login (the files may be replaced), but
	// checked here too, as --tls-cert is: a key that does not read, or has a
	// passphrase (which --key has no way to take), would fail every login in
	// the page after a start that looked fine.
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			fmt.Fprintf(stderr, "porthole-console: %v\n", err)
			return 1
		}
	}
	// Read again at each tunnel open, but checked here as porthole connect
	// checks its own: a file that is missing or holds no certificate failed
	// every tunnel the page opened after a start that looked fine.
	if *caFile != "" {
		if err := tunnel.CheckCAFile(*caFile); err != nil {
			fmt.Fprintf(stderr, "porthole-console: --ca-file: %s\n", strings.TrimPrefix(err.Error(), "tunnel: CA file: "))
			return 1
		}
	}
	if *vendorDir != "" {
		cfg.Vendor = os.DirFS(*vendorDir)
	}
	srv, err := console.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "porthole-console: %v\n", err)
		return 1
	}
	if err := srv.CheckVendor(); err != nil {
		fmt.Fprintf(stderr, "porthole-console: %v\n", err)
		return 1
	}
	if cfg.TLS == nil && !*plainHTTP {
		// Checked before listening: plain HTTP beyond loopback shows the
		// run's access token and every terminal to the network.
		var nl *console.NotLoopbackError
		switch err := console.CheckLoopback(*listen); {
		case errors.As(err, &nl):
			fmt.Fprintf(stderr, "porthole-console: --listen %v; give --tls-cert and --tls-key, "+
				"or --plain-http behind a TLS reverse proxy on a network you trust\n", err)
			return 1
		case err != nil:
			fmt.Fprintf(stderr, "porthole-console: --listen %v\n", err)
			return 1
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		// As the lab's --console: the error names the address, not the flag.
		fmt.Fprintf(stderr, "porthole-console: %v: choose another address with --listen\n", err)
		return 1
	}
	// A hangup stops it as Ctrl-C does, closing the tunnels it opened: it is
	// how the console ends when the terminal it runs in is closed (or the ssh
	// login to a jump host ends), and Go's default for SIGHUP killed it, the
	// tunnels left open, their devices connected, for their whole lifetime.
	// Unless it is ignored (nohup): Notify would stop ignoring it. As porthole
	// connect and porthole-lab.
	stopOn := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		stopOn = append(stopOn, syscall.SIGHUP)
	}
	ctx, stop := signal.NotifyContext(context.Background(), stopOn...)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "porthole console: open %s\n(the address holds this run's access token; Ctrl-C stops the console)\n", srv.URL(ln.Addr()))
	select {
	case <-ctx.Done():
	case err := <-served:
		fmt.Fprintf(stderr, "porthole-console: %v\n", err)
		return 2
	}
	// The stop can take seconds (the terminals' ends, the closes at the
	// service, up to about 15 s after an open's answer was lost), and a
	// second Ctrl-C is caught, not obeyed: quitting then would leave the
	// tunnels this console opened open, their devices connected, for their
	// whole lifetime. Both are said, or the console seemed to hang. Caught
	// before the first is said: a Ctrl-C that answers it is answered too.
	again := make(chan os.Signal, 1)
	signal.Notify(again, stopOn...)
	defer signal.Stop(again)
	log.Info("stopping: ending the terminals and closing at the service the tunnels this console opened")
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		for {
			select {
			case <-again:
				log.Warn("still stopping: the tunnels this console opened are closed at the service first (killed, it would leave them open until their lifetime ends)")
			case <-stopped:
				return
			}
		}
	}()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return 0
}

// flagsGiven names the flags of fs that the command line set.
func flagsGiven(fs *flag.FlagSet) map[string]bool {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	return given
}

// checkKey reports whether k's file holds a private key ssh can use without a
// passphrase. Its errors never quote the file.
func checkKey(k console.Key) error {
	b, err := os.ReadFile(k.Path)
	if err != nil {
		return fmt.Errorf("--key %s: %w", k.Name, err)
	}
	_, err = ssh.ParsePrivateKey(b)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return fmt.Errorf("--key %s (%s): the key has a passphrase, which --key does not take: "+
			"give a copy without one (ssh-keygen -p -f COPY), or paste the key and its passphrase in the page", k.Name, k.Path)
	case err != nil:
		return fmt.Errorf("--key %s (%s): not an OpenSSH or PEM private key", k.Name, k.Path)
	}
	return nil
}
