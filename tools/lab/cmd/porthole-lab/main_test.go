package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/tools/internal/stack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestInterruptDuringStartUp stops the lab while it waits for the agent: it says
// so in one line, not with the error of the step it cut short, and exits 0 as
// after Ctrl-C once it is up. The agent is a script that never subscribes, or one
// that exits at once (as the real one does when Ctrl-C in a terminal reaches it
// too).
func TestInterruptDuringStartUp(t *testing.T) {
	for _, tc := range []struct{ name, agent string }{
		{"agent waits", "exec sleep 30"},
		{"agent exits", "exit 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := stack.SafeDir(t)
			porthole := filepath.Join(dir, "porthole")
			if err := os.WriteFile(porthole, []byte("#!/bin/sh\n"+tc.agent+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // Ctrl-C before the agent subscribes
			var stdout, stderr strings.Builder
			code := run(ctx, []string{"--state", filepath.Join(dir, "state"), "--porthole", porthole,
				"--ssh-port", "0", "--http-port", "0", "--console", ""}, &stdout, &stderr)
			t.Logf("stdout:\n%s", stdout.String())
			if want := "porthole-lab: interrupted during start-up\n"; code != 0 || stderr.String() != want {
				t.Fatalf("run = %d, stderr %q; want 0, %q", code, stderr.String(), want)
			}
			if !strings.Contains(stdout.String(), "lab stopped; everything it started is gone") {
				t.Fatalf("stdout lacks that the lab stopped:\n%s", stdout.String())
			}
		})
	}
}

// A word before the flags is refused: flag stops parsing at it, and the lab
// would start with the defaults instead of the flags after it.
func TestStrayArgument(t *testing.T) {
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"start", "--state", filepath.Join(t.TempDir(), "s")}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `unexpected argument "start"`) || stdout.Len() > 0 {
		t.Errorf("run start --state … = %d, stdout %q, stderr %q; want 1, nothing started, the word named", code, stdout.String(), stderr.String())
	}
}
