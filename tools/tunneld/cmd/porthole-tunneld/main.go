// Command porthole-tunneld is a self-hosted AWS IoT Secure Tunneling service: the
// control plane (AWS JSON 1.1, for the AWS CLI and SDKs with --endpoint-url) and the
// data plane (/tunnel) on one address, and MQTT notifications to devices. Run it with
// --help for the flags; package tools/tunneld documents the service.
//
// Exit codes: 0 after SIGINT or SIGTERM (or --help), 1 on a runtime error, 2 on a
// usage error.
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
	opts, err := tunneld.ParseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := tunneld.Run(ctx, opts, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "porthole-tunneld:", err)
		os.Exit(1)
	}
}
