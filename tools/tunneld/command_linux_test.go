package tunneld

import (
	"context"
	"io"
	"syscall"
	"testing"
)

// TestRunFullDataDirIsRuntimeError: a state file that cannot be written at
// start because the disk is full (here EFBIG from RLIMIT_FSIZE, which a
// write gets as one onto a full disk gets ENOSPC) passes once space is freed:
// a runtime failure (exit 2, restarted), as the agent takes it, not a
// configuration error (exit 1), after which a supervisor that keeps to the
// documented exit codes never starts tunneld again. Not parallel: the limit
// is the process's.
func TestRunFullDataDirIsRuntimeError(t *testing.T) {
	o, err := ParseFlags([]string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = 8 // bytes: the empty state is 38
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), o, io.Discard, io.Discard)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err == nil {
		t.Fatal("Run with a state file it cannot write: nil error")
	}
	if IsConfigError(err) {
		t.Errorf("Run with a full data directory = %v: a configuration error (exit 1); want a runtime error (exit 2)", err)
	}
}
