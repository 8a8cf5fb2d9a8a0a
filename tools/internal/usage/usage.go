// Package usage parses the command line of a host tool (porthole-tunneld,
// porthole-lab, porthole-console) as flag.FlagSet.Parse does, except where the
// usage goes: asked for (-h, --help), it is the tool's output, on stdout as
// porthole's own -h has it, so that `porthole-tunneld --help | less` shows it;
// after a mistake it stays on the flag set's output, stderr. It is not a flag
// package: the flags, their usage text and the exit codes are each tool's.
package usage

import (
	"bytes"
	"errors"
	"flag"
	"io"
)

// Parse parses args with fs. When they ask for help it writes the usage to
// stdout and returns flag.ErrHelp; on a mistake it writes the error and the
// usage to fs.Output() and returns the error, as fs.Parse.
func Parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	errOut := fs.Output()
	// What flag prints during Parse is held until Parse says why it printed it.
	var printed bytes.Buffer
	fs.SetOutput(&printed)
	err := fs.Parse(args)
	fs.SetOutput(errOut)
	if errors.Is(err, flag.ErrHelp) {
		stdout.Write(printed.Bytes())
	} else {
		errOut.Write(printed.Bytes())
	}
	return err
}
