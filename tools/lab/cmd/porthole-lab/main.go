// Command porthole-lab runs the whole porthole path on this machine: an MQTT broker,
// tunneld, the porthole agent as the device (a host process, or inside a QEMU board
// with --board), and the operator's source side. See
// package lab. Exit codes: 0 after Ctrl-C, SIGTERM or SIGHUP (also during
// start-up), 1 bad usage (a flag or a --state refused, or a --state another
// lab is running on) or a missing prerequisite, 2 a failed step.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/porthole-iot/porthole/tools/console"
	"github.com/porthole-iot/porthole/tools/internal/usage"
	"github.com/porthole-iot/porthole/tools/lab"
)

func main() {
	// A hangup (the terminal closed) stops the lab as Ctrl-C does: its tunnel
	// closed, the agent stopped. Unless it is ignored (nohup): Notify would stop
	// ignoring it.
	stopOn := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		stopOn = append(stopOn, syscall.SIGHUP)
	}
	// Ctrl-C in `make lab | tee lab.txt` ends tee first, and the lab's next line
	// to stdout would raise SIGPIPE and kill it part-way through its stop (or
	// before it, during start-up), its lab.json left naming a dead pid. Caught,
	// the write fails with EPIPE instead, which the lab ignores on its progress
	// output. Not signal.Ignore: the agent and its shells would inherit that.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), stopOn...)
	stopWithMake()
	ctx, cancel := context.WithCancel(ctx)
	if !signal.Ignored(syscall.SIGHUP) {
		watchHangup(ctx, cancel)
	}
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	stop()
	os.Exit(code)
}

// run runs the lab until ctx ends (Ctrl-C) and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	state := fs.String("state", ".lab", "state directory (made once, reused); a relative path is in the current directory")
	sshPort := fs.Int("ssh-port", 2222, "local port for SSH through the tunnel (0: any free port)")
	httpPort := fs.Int("http-port", 8080, "local port for the device's status page through the tunnel (0: any free port)")
	consoleAddr := fs.String("console", "127.0.0.1:0", "listen address of the web console (SSH in the browser), on loopback "+
		"(port 0, the default: a free port, another each run; a fixed port shares its browser origin with whatever served on it before, such as a device's page through --http-port; \"\": none)")
	noAgent := fs.Bool("no-agent", false, "run only the broker, tunneld and the web console (on 127.0.0.1), for an agent started by hand on this machine or in a QEMU guest;\n"+
		"the lab writes its agent's config to device/porthole.toml in the state directory and prints the porthole agent line that runs it here")
	boardName := fs.String("board", "", "run the agent inside QEMU board `NAME` (a folder under board/, e.g. qemu-armv7-virt) instead of on the host:\n"+
		"cross-build porthole, build the initramfs, boot it; needs the source tree, Go and the packages of tools/deps.sh board")
	region := fs.String("region", "us-east-1", "the region of the lab's tunneld: in its notifications, tunnel ARNs and SigV4 credential scope, and the aws line's --region\n"+
		"(the lab's agent dials tunneld by its tunnel.endpoint; one without it would dial data.tunneling.iot.REGION.amazonaws.com)")
	self, _ := os.Executable()
	porthole := fs.String("porthole", filepath.Join(filepath.Dir(self), "porthole"), "the porthole binary the agent runs from")
	if err := usage.Parse(fs, args, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	if fs.NArg() > 0 {
		// flag stops at the first word that is not a flag: the flags after it
		// would be ignored without a word.
		fmt.Fprintf(stderr, "porthole-lab: unexpected argument %q (flags only; see -h)\n", fs.Arg(0))
		return 1
	}
	// The console serves plain HTTP, and the lab's logs in with the lab's key:
	// beyond loopback, anyone on the network could open a terminal to the
	// lab's device (root on this machine when the lab runs as root). Checked
	// whether or not this build has the console: the address is as wrong.
	if *consoleAddr != "" {
		var nl *console.NotLoopbackError
		switch err := console.CheckLoopback(*consoleAddr); {
		case errors.As(err, &nl):
			fmt.Fprintf(stderr, "porthole-lab: --console %v, and log in to the lab's device with its key; "+
				"give a loopback address (127.0.0.1:PORT)\n", err)
			return 1
		case err != nil:
			fmt.Fprintf(stderr, "porthole-lab: --console %v: want a loopback host:port, such as 127.0.0.1:8088\n", err)
			return 1
		}
	}
	ports := []struct {
		name string
		port int
	}{{"--ssh-port", *sshPort}, {"--http-port", *httpPort}}
	for _, p := range ports {
		if p.port < 0 || p.port > 65535 {
			fmt.Fprintf(stderr, "porthole-lab: %s %d is not a port (1-65535, or 0 for any free one)\n", p.name, p.port)
			return 1
		}
	}
	if *sshPort != 0 && *sshPort == *httpPort {
		fmt.Fprintf(stderr, "porthole-lab: --ssh-port and --http-port are both %d: the lab listens on each; choose two ports\n", *sshPort)
		return 1
	}
	// The console's port equal to one of the source side's would be found only
	// after the whole start-up, by a listener that fails naming neither flag.
	if _, cp, err := net.SplitHostPort(*consoleAddr); err == nil {
		if n, err := net.LookupPort("tcp", cp); err == nil && n != 0 {
			for _, p := range ports {
				if n == p.port {
					fmt.Fprintf(stderr, "porthole-lab: --console %s and %s are both port %d: the lab listens on each; choose two ports\n", *consoleAddr, p.name, n)
					return 1
				}
			}
		}
	}
	if *region != "" { // "": the default, as tunneld's --region
		if err := lab.CheckRegion(*region); err != nil {
			fmt.Fprintf(stderr, "porthole-lab: --region %v\n", err)
			return 1
		}
	}
	if *boardName != "" && *noAgent {
		fmt.Fprintln(stderr, "porthole-lab: --board runs the agent in the board; leave out --no-agent")
		return 1
	}
	fmt.Fprintln(stdout, "porthole lab: starting")
	err := lab.Run(ctx, lab.Options{StateDir: *state, SSHPort: *sshPort, HTTPPort: *httpPort, NoAgent: *noAgent, Board: *boardName, Region: *region, Console: *consoleAddr, Porthole: *porthole, Out: stdout})
	if errors.Is(err, lab.ErrInterrupted) {
		fmt.Fprintf(stderr, "porthole-lab: %v\n", err)
		return 0
	}
	if errors.Is(err, lab.ErrPrerequisite) || errors.Is(err, lab.ErrStateInUse) {
		fmt.Fprintf(stderr, "porthole-lab: %v\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "porthole-lab: %v\n", err)
		return 2
	}
	return 0
}
