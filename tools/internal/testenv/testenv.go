// Package testenv holds what the tools' tests share about the machine they run
// on, without the weight of tools/internal/stack.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// NeedProgram finds name on PATH; it skips the test when missing, or fails it
// under CI=true, where make test has installed it.
func NeedProgram(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s is required (make test installs it): %v", name, err)
		}
		tb.Skipf("%s not installed; `make test` installs it", name)
	}
	return p
}
