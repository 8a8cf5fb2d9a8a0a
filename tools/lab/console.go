package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/porthole-iot/porthole/tools/console"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// startConsole serves the operator web console (tools/console) on addr, wired to
// the lab's tunneld and its operator key. It returns the URL to open, which holds
// the console's access token.
func startConsole(addr string, td *tunneld.Server, info Info, tdHost string, log *slog.Logger) (string, func(), error) {
	srv, err := console.New(console.Config{
		ControlPlane: console.TunneldServer(td), Endpoint: tdHost, Region: info.Region, CAFile: info.CAFile,
		Thing: Thing, User: info.User,
		Keys:     []console.Key{{Name: "lab operator key (" + filepath.Base(info.SSHKey) + ")", Path: info.SSHKey}},
		HostKeys: &console.HostKeys{Path: filepath.Join(info.StateDir, "console_host_keys.json")},
		Logger:   log,
	})
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
