package lab

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/tools/console"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// startConsole serves the operator web console (tools/console) on addr, wired to
// the lab's tunneld and its operator key. It returns the URL to open, which holds
// the console's access token. vendor is console.Config.Vendor (nil: the
// xterm.js files built in).
func startConsole(addr string, td *tunneld.Server, info Info, keys *console.HostKeys, tdHost string, vendor fs.FS, log *slog.Logger) (string, func(), error) {
	cfg := consoleConfig(td, info, keys, tdHost, log)
	cfg.Vendor = vendor
	srv, err := console.New(cfg)
	if err != nil {
		return "", nil, err
	}
	if err := srv.CheckVendor(); err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("%w: choose another address with --console", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	return srv.URL(ln.Addr()), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, nil
}

// consoleConfig is the lab's console's: the lab's tunneld at tdHost, never
// through the operator's https_proxy (noProxy).
func consoleConfig(td *tunneld.Server, info Info, keys *console.HostKeys, tdHost string, log *slog.Logger) console.Config {
	return console.Config{
		ControlPlane: console.TunneldServer(td), Endpoint: tdHost, Region: info.Region, CAFile: info.CAFile,
		Proxy: noProxy, Thing: Thing, User: info.User,
		Keys:     []console.Key{{Name: "lab operator key (" + filepath.Base(info.SSHKey) + ")", Path: info.SSHKey}},
		HostKeys: keys,
		Logger:   log,
	}
}

// pinConsoleHostKey stores this run's device host key in the console's store, as
// writeKnownHosts pins it for ssh: the lab made the key, so there is nothing to
// trust on first use, and a store kept from a run with another device in the same
// state directory (the local agent, then a board) would otherwise stop the
// console's logins with a changed-key warning.
func pinConsoleHostKey(keys *console.HostKeys, key gossh.PublicKey) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := keys.Check(ctx, Thing, key, gossh.FingerprintSHA256(key))
	return err
}
