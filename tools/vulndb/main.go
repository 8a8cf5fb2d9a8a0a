// Command vulndb builds a Go vulnerability database that govulncheck reads with
// -db file:///DIR, from the golang.org/x/vulndb module at a pinned version: that
// repository holds the Go vulnerability database's entries as OSV files
// (data/osv/<ID>.json), and the module proxy serves it like any module, so
// `make vulncheck` needs no network but the Go module proxy. It writes the
// database's v1 layout (https://go.dev/security/vuln/database#api):
//
//	index/db.json       {"modified": the newest entry's time}
//	index/modules.json  [{"path": module, "vulns": [{"id", "modified"}]}], by path and id
//	ID/<ID>.json        each OSV entry as the module has it
//
// It reads the `go mod download -json` output of that one module on stdin:
//
//	go mod download -json golang.org/x/vulndb@VERSION | vulndb -out DIR
//
// DIR is replaced whole or not at all. The exit status is 0 when DIR is written,
// 1 when it is not.
//
// It is a host tool run by `make vulncheck`; it is never linked into the device
// binary. It is not a vulnerability scanner; govulncheck is.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vulndb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "the database `directory` to write (replaced)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		return errors.New("usage: go mod download -json golang.org/x/vulndb@VERSION | vulndb -out DIR")
	}
	mod, err := readDownload(stdin)
	if err != nil {
		return err
	}
	st, err := build(mod.Dir, *out, mod.Time)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "vulndb: %s: %d entries, %d modules (%s@%s)\n", *out, st.Entries, st.Modules, mod.Path, mod.Version)
	return nil
}

// module is the part of a `go mod download -json` answer vulndb uses.
type module struct {
	Path    string
	Version string
	Error   string
	Dir     string    // the module's files in the module cache
	Info    string    // a file holding the version's {"Version", "Time"}
	Time    time.Time `json:"-"` // read from Info
}

// readDownload decodes the `go mod download -json` answer for one module.
func readDownload(r io.Reader) (*module, error) {
	var m module
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return nil, fmt.Errorf("reading go mod download -json on stdin: %w", err)
	}
	if m.Error != "" {
		return nil, fmt.Errorf("go mod download %s@%s: %s", m.Path, m.Version, m.Error)
	}
	if m.Dir == "" || m.Info == "" {
		return nil, fmt.Errorf("go mod download -json: no Dir or Info for %s@%s", m.Path, m.Version)
	}
	b, err := os.ReadFile(m.Info)
	if err != nil {
		return nil, err
	}
	var info struct{ Time time.Time }
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("reading %s: %w", m.Info, err)
	}
	m.Time = info.Time
	return &m, nil
}
