package usage

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

const toolUsage = "Usage of tool:\n  -n int\n    \tnumber\n"

// TestParse: help asked for is on stdout, a mistake and its usage on the flag
// set's output, and the flag set's output is as it was.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		help, fails    bool
		stdout, stderr string
	}{
		{[]string{"-h"}, true, true, toolUsage, ""},
		{[]string{"--help"}, true, true, toolUsage, ""},
		{[]string{"-n", "x"}, false, true, "", "invalid value \"x\" for flag -n: parse error\n" + toolUsage},
		{[]string{"-n", "1"}, false, false, "", ""},
	} {
		var stdout, stderr strings.Builder
		fs := flag.NewFlagSet("tool", flag.ContinueOnError)
		fs.SetOutput(&stderr)
		fs.Int("n", 0, "number")
		err := Parse(fs, tc.args, &stdout)
		if errors.Is(err, flag.ErrHelp) != tc.help || (err != nil) != tc.fails {
			t.Errorf("Parse(%q) = %v; want help %v, an error %v", tc.args, err, tc.help, tc.fails)
		}
		if stdout.String() != tc.stdout || stderr.String() != tc.stderr {
			t.Errorf("Parse(%q) printed stdout %q, stderr %q; want %q, %q", tc.args, stdout.String(), stderr.String(), tc.stdout, tc.stderr)
		}
		if fs.Output() != &stderr {
			t.Errorf("Parse(%q) left the flag set's output changed", tc.args)
		}
	}
}
