// Command porthole-tunneld is a self-hosted AWS IoT Secure Tunneling service: the
// control plane (AWS JSON 1.1, for the AWS CLI and SDKs with --endpoint-url) and the
// data plane (/tunnel) on one address, and MQTT notifications to devices. Run it with
// --help for the flags; package tools/tunneld documents the service.
//
// SIGINT and SIGTERM stop it (state saved); SIGHUP loads --tls-cert and --tls-key
// again, keeping the previous pair if they do not load. SIGPIPE is caught: a log
// reader that goes away does not end it.
//
// Exit codes, as porthole's: 0 after SIGINT or SIGTERM (or --help), 1 on a usage or
// configuration error (do not restart: fix the command line or the files it names),
// 2 on a runtime failure (restart after a delay).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/porthole-iot/porthole/tools/tunneld"
)

func main() {
	// A log reader that goes away (porthole-tunneld 2>&1 | logger, a log
	// service restarted) must not end tunneld and every tunnel with it: Go
	// kills a program whose write to fd 1 or 2 gets EPIPE unless SIGPIPE is
	// handled. Caught (as by the agent and the lab), the write fails
	// instead, and slog drops the line.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	opts, err := tunneld.ParseFlags(os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	opts.Reload = hup
	if err := tunneld.Run(ctx, opts, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "porthole-tunneld:", err)
		if tunneld.IsConfigError(err) {
			os.Exit(1)
		}
		os.Exit(2)
	}
}
