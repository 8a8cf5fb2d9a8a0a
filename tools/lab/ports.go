package lab

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/porthole-iot/porthole/tools/console"
)

// beforeSource is called before the source side takes its local ports: a test
// takes one there, as a second lab started at once would.
var beforeSource = func() {}

// portFlag is a flag that names a local port the lab listens on.
type portFlag struct {
	name string // "--ssh-port"
	// host is the address of a flag that takes host:port (--console);
	// "" for one that takes a port, on 127.0.0.1.
	host string
	port int
}

// arg is the flag with port as its value.
func (f portFlag) arg(port int) string {
	if f.host == "" {
		return f.name + " " + strconv.Itoa(port)
	}
	return f.name + " " + net.JoinHostPort(f.host, strconv.Itoa(port))
}

// sourcePorts are the source side's local ports that opt asks for; port 0
// (any free one) is left out.
func sourcePorts(opt Options) []portFlag {
	var ports []portFlag
	if opt.SSHPort != 0 {
		ports = append(ports, portFlag{name: "--ssh-port", port: opt.SSHPort})
	}
	// --no-agent: no source side, only the suggested connect line's SSH port.
	if opt.HTTPPort != 0 && !opt.NoAgent {
		ports = append(ports, portFlag{name: "--http-port", port: opt.HTTPPort})
	}
	return ports
}

// consolePort is the console's port that opt asks for, if any: none without a
// console, with port 0, or in a build without xterm.js, where the console is
// skipped and its port not listened on.
func consolePort(opt Options) []portFlag {
	host, p, err := net.SplitHostPort(opt.Console)
	if err != nil || console.CheckVendor(opt.vendor) != nil {
		return nil
	}
	port, err := net.LookupPort("tcp", p)
	if err != nil || port == 0 {
		return nil
	}
	return []portFlag{{name: "--console", host: host, port: port}}
}

// checkPorts refuses, before anything starts, the local ports the lab cannot
// take. Every port in use is named at once, with the way to choose another
// through make (make lab takes no flags of its own).
func checkPorts(ports []portFlag) error {
	var inUse, choose []string
	for _, f := range ports {
		host := f.host
		if host == "" {
			host = "127.0.0.1"
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(f.port)))
		if errors.Is(err, syscall.EADDRINUSE) {
			inUse = append(inUse, strconv.Itoa(f.port))
			choose = append(choose, f.arg(f.port+1))
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", f.arg(f.port), err)
		}
		ln.Close()
	}
	if len(inUse) == 0 {
		return nil
	}
	what := "port " + inUse[0] + " is"
	if len(inUse) > 1 {
		what = "ports " + strings.Join(inUse, " and ") + " are"
	}
	return fmt.Errorf("%s in use: choose others, e.g. %s (with make: make lab LABFLAGS=\"%[2]s\"; 0 takes any free port)",
		what, strings.Join(choose, " "))
}

// takenSince is err, a listen of the lab's on ports that failed; one in use
// (EADDRINUSE) is named as checkPorts names it: free when the lab checked it
// at its start, it was taken since (two labs started at once).
func takenSince(err error, ports []portFlag) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		if e := checkPorts(ports); e != nil {
			return fmt.Errorf("%w; it was free when the lab started (another lab or program took it meanwhile)", e)
		}
	}
	return err
}
