package hostenv

import (
	"os"
	"path/filepath"
	"testing"
)

// SharedTempDir points TMPDIR at a new directory below /tmp that every user
// may enter, when the TMPDIR given is one only its owner may enter
// (pam_tmpdir's /tmp/user/0, mode 0700): a test that runs the agent as
// another user (uid 65534) from a binary or data_dir below t.TempDir() would
// fail for the machine's TMPDIR, not for the agent. It returns what removes
// that directory. (sshd's tests, which may not import this package, have a
// copy of it.)
func SharedTempDir() (remove func()) {
	for d := os.TempDir(); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return func() {}
		}
		if fi.Mode().Perm()&0o001 == 0 {
			break
		}
		if d == filepath.Dir(d) {
			return func() {} // every user may enter it
		}
	}
	d, err := os.MkdirTemp("/tmp", "ph") // short: sockets are made below it (108 bytes)
	if err != nil {
		return func() {}
	}
	if err := os.Chmod(d, 0o755); err != nil {
		os.Remove(d)
		return func() {}
	}
	os.Setenv("TMPDIR", d)
	return func() { os.RemoveAll(d) }
}

// FileInTmp makes an empty file right below /tmp, not below os.TempDir(),
// which may be private (pam_tmpdir's 0700 /tmp/user/0): for a test of what
// a file in a shared, sticky directory means. It is removed when tb ends.
func FileInTmp(tb testing.TB, pattern string) string {
	tb.Helper()
	f, err := os.CreateTemp("/tmp", pattern)
	if err != nil {
		tb.Fatal(err)
	}
	f.Close()
	tb.Cleanup(func() { os.Remove(f.Name()) })
	return f.Name()
}

// NeedRoot skips a test that needs root, saying why, or fails it under
// CI=true, which runs as root.
func NeedRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s; CI runs as root", why)
		}
		tb.Skipf("%s; run as root (CI does)", why)
	}
}
