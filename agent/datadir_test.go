package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLockDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := lockDataDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir made with %v (%v), want 0700", fi.Mode(), err)
	}
	start := time.Now()
	_, err = lockDataDir(dir, 300*time.Millisecond)
	if err == nil || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "in use by another porthole agent") {
		t.Fatalf("second lock: %v, want a usage error", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the lock left %d files in the data directory", len(ents))
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("second lock gave up after %v, before its wait", waited)
	}
	// The first agent leaving while the second waits lets the second in.
	go func() { time.Sleep(100 * time.Millisecond); first.Close() }()
	second, err := lockDataDir(dir, 5*time.Second)
	if err != nil {
		t.Fatalf("lock after the first agent left: %v", err)
	}
	second.Close()
}

func TestCheckDataDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := mk("ok", 0o700)
	sticky := mk("sticky", 0o777|os.ModeSticky)
	inSticky := filepath.Join(sticky, "data")
	os.Mkdir(inSticky, 0o700)
	for _, p := range []string{ok, filepath.Join(ok, "not-yet"), inSticky} {
		if err := checkDataDir(p); err != nil {
			t.Errorf("checkDataDir(%s): %v", p, err)
		}
	}
	worldWritable := mk("ww", 0o777)
	groupWritable := mk("gw", 0o770)
	under := filepath.Join(mk("open", 0o757), "data")
	os.Mkdir(under, 0o700)
	openTunnels := mk("tunnels-open", 0o700)
	if err := os.Mkdir(filepath.Join(openTunnels, "tunnels"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := checkDataDir(openTunnels); err != nil {
		t.Errorf("checkDataDir with a 0700 tunnels directory: %v", err)
	}
	os.Chmod(filepath.Join(openTunnels, "tunnels"), 0o777)
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	for _, tc := range []struct{ path, want string }{
		{worldWritable, "writable by group or others"},
		{groupWritable, "writable by group or others"},
		{mk("ww-sticky", 0o777|os.ModeSticky), "writable by group or others"}, // sticky counts above, not for the directory itself
		{under, "open is writable by group or others"},
		{filepath.Join(under, "missing", "deeper"), "no such file"},
		{file, "is not a directory"},
		{openTunnels, "tunnels is writable by group or others"},
	} {
		if err := checkDataDir(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkDataDir(%s) = %v, want %q", tc.path, err, tc.want)
		}
	}
	if os.Geteuid() == 0 {
		foreign := mk("foreign", 0o700)
		if err := os.Chown(foreign, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := checkDataDir(foreign); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
			t.Errorf("checkDataDir(foreign) = %v, want it refused", err)
		}
	}
}
