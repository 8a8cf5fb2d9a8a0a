// Command porthole is the device agent and the operator's source-mode proxy.
//
// Exit codes: 0 success, 1 runtime failure, 2 usage error.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/porthole-iot/porthole/agent"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: porthole <command> [flags]

commands:
  version   print the version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version":
		fmt.Fprintf(stdout, "porthole %s\n", agent.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "porthole: unknown command %q\n%s", args[0], usage)
		return 2
	}
}
