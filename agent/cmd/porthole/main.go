// Command porthole is the device agent and the operator's source-mode proxy.
//
// Exit codes (for init systems): 0 clean stop, 1 usage or configuration error (do
// not respawn; fix the config), 2 runtime failure (respawn with a delay).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/porthole-iot/porthole/agent"
	"github.com/porthole-iot/porthole/agent/internal/syntax"
	"github.com/porthole-iot/porthole/agent/tunnel"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage: porthole <command> [flags]

commands:
  agent         run the device agent (the default): porthole agent -c /etc/porthole/porthole.toml
  connect       source-mode proxy for operators: porthole connect --region R --token-file F -L SSH=2222
  check-config  validate a config file: porthole check-config -c FILE
  keygen        print the SSH host keys' fingerprints, creating data_dir's if missing
  version       print the version

Run 'porthole <command> -h' for the command's flags.

Exit codes: 0 clean stop, 1 usage or configuration error (an init system should
not respawn; for connect also a tunnel that refused or ended its token for good),
2 runtime failure (respawn after a delay, e.g. procd respawn 3600 15 0,
systemd Restart=on-failure RestartSec=5 RestartPreventExitStatus=1).
`

// Exit codes.
const (
	exitOK      = 0
	exitUsage   = 1
	exitRuntime = 2
)

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd, implied := "agent", true
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			cmd, args = "help", args[1:]
		case "-version", "--version":
			cmd, args = "version", args[1:]
		default:
			if len(args[0]) > 0 && args[0][0] != '-' {
				cmd, args, implied = args[0], args[1:], false
			}
		}
	}
	var err error
	switch cmd {
	case "agent":
		err = runAgent(args, stdout, stderr)
	case "connect":
		err = runConnect(args, stdin, stdout, stderr)
	case "check-config":
		err = runCheckConfig(args, stdout, stderr)
	case "keygen":
		err = runKeygen(args, stdout, stderr)
	case "version":
		err = runVersion(args, stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usage+usageNote)
	default:
		fmt.Fprintf(stderr, "porthole: unknown command %q\n\n%s%s", cmd, usage, usageNote)
		return exitUsage
	}
	code := exitRuntime
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.Is(err, agent.ErrUsage):
		if errors.As(err, new(flagError)) { // package flag printed it already
			if implied && cmd == "agent" {
				fmt.Fprint(stderr, "\nWith no command, porthole runs the device agent (porthole agent -c FILE).\n"+
					"The operator's proxy is a command of its own: porthole connect --region R --token-file F -L SSH=2222\n"+
					"(porthole -h lists the commands)\n")
			}
			return exitUsage
		}
		code = exitUsage
	case errors.Is(err, context.Canceled):
		return exitOK
	}
	msg := err.Error()
	if cmd == "connect" {
		// It may quote the endpoint's or proxy's certificate
		// (x509.HostnameError: the names it holds, any bytes) on the
		// operator's terminal, ssh's own when run as its ProxyCommand.
		msg = tunnel.Printable(msg) + listenHint(err)
	}
	// Bounded: a stderr that takes nothing (a console paused with Ctrl-S, a
	// pipe nobody drains) must not keep a failed agent from exiting, and its
	// init system from starting it again.
	out := newLogWriter(stderr)
	fmt.Fprintf(out, "porthole %s: %s\n", cmd, msg)
	out.flush(2 * time.Second)
	return code
}

var errHelp = errors.New("help shown")

// flagError is a usage error that package flag has printed already, with the
// usage below it: run does not print it again.
type flagError struct{ error }

func (e flagError) Unwrap() error { return e.error }

// flagsGiven names the flags of fs that the command line set.
func flagsGiven(fs *flag.FlagSet) map[string]bool {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	return given
}

// parseFlags parses fs, mapping -h to errHelp, with the usage on stdout as
// `porthole -h` has it, and bad flags to a usage error, with the usage on fs's
// output (stderr).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	errOut := fs.Output()
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	err := fs.Parse(args)
	fs.SetOutput(errOut)
	if errors.Is(err, flag.ErrHelp) {
		stdout.Write(usage.Bytes())
		return errHelp
	}
	errOut.Write(usage.Bytes())
	if err != nil {
		return flagError{agent.Usagef("%w", err)}
	}
	if fs.NArg() > 0 {
		arg := strconv.Quote(fs.Arg(0))
		if syntax.Name(fs.Arg(0), 32, 1<<16, tokenChars) {
			arg = "(not shown: it looks like a token)"
		}
		return agent.Usagef("unexpected argument %s", arg)
	}
	return nil
}

// runVersion prints the version; -h prints its one-line usage.
func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("porthole version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), "usage: porthole version (prints the version; takes no flags)") }
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	// The Go release too: it decides which standard-library fixes the
	// binary has (docs/firmware.md), and an audit asks.
	io.WriteString(stdout, "porthole "+agent.Version+" ("+runtime.Version()+")\n")
	return nil
}
