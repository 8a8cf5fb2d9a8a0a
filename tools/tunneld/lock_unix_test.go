//go:build unix

package tunneld

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

// A data directory in a sticky directory (--data-dir /tmp/tunneld) that
// another user makes, or replaces with a link, between checkDataDir and
// LockDir's MkdirAll: MkdirAll took the directory as it found it, and tunneld
// locked it and wrote every tunnel's tokens into the other user's directory.
// What was made and locked is checked now (beforeLock makes the other user's
// directory at that point, as the race would).
func TestDataDirMadeBeforeLockRefused(t *testing.T) {
	cases := []struct {
		name string
		root bool   // needs root, to give the directory to another user
		sub  string // the data directory, below the sticky directory
		// make is what the other user does in between, in the sticky directory
		// sticky; it returns the directory to find empty afterwards.
		make func(t *testing.T, sticky string) string
		want []string // in the error, with its path
	}{
		{"another user's directory", true, "tunneld", func(t *testing.T, sticky string) string {
			return mkdirAs(t, filepath.Join(sticky, "tunneld"), 0o755, 1000)
		}, []string{"belongs to uid 1000 (mode 0755)", "not to root or this user"}},
		{"another user's directory others can write", true, "tunneld", func(t *testing.T, sticky string) string {
			return mkdirAs(t, filepath.Join(sticky, "tunneld"), 0o777, 1000)
		}, []string{"belongs to uid 1000 (mode 0777)"}},
		{"a directory others can write", false, "tunneld", func(t *testing.T, sticky string) string {
			return mkdirAs(t, filepath.Join(sticky, "tunneld"), 0o777, -1)
		}, []string{"is writable by group or others (mode 0777)"}},
		{"another user's directory above", true, "a/tunneld", func(t *testing.T, sticky string) string {
			return filepath.Join(mkdirAs(t, filepath.Join(sticky, "a"), 0o777, 1000), "tunneld") // made by tunneld
		}, []string{"a belongs to uid 1000 (mode 0777)"}},
		{"a link to another directory", false, "tunneld", func(t *testing.T, sticky string) string {
			other := mkdirAs(t, filepath.Join(filepath.Dir(sticky), "other"), 0o700, -1)
			if err := os.Symlink(other, filepath.Join(sticky, "tunneld")); err != nil {
				t.Fatal(err)
			}
			return other
		}, []string{"was replaced while tunneld made it"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.root {
				hostenv.NeedRoot(t, "the test gives a directory to another user (chown)")
			}
			sticky := filepath.Join(t.TempDir(), "tmp")
			mkdirAs(t, sticky, 0o777|os.ModeSticky, -1)
			dir := filepath.Join(sticky, c.sub)
			var made string
			cfg := Config{DataDir: dir, Logger: testLogger(t), beforeLock: func() { made = c.make(t, sticky) }}
			s, err := New(cfg)
			if err == nil {
				s.Close()
				t.Fatalf("New with data directory %s made by someone else before the lock succeeded, want it refused", dir)
			}
			for _, w := range append(c.want, dir, "tokens") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New with data directory %s = %v, want an error saying %q", dir, err, w)
				}
			}
			if names, err := os.ReadDir(made); err != nil || len(names) > 0 {
				t.Errorf("refusing data directory %s: %s holds %v (%v), want nothing written there", dir, made, names, err)
			}
		})
	}
}

// LockDir refuses a directory another user could change, checked on what it
// opened: the lab takes it on its state directory too.
func TestLockDirRefusesUnsafe(t *testing.T) {
	cases := []struct {
		name string
		mode os.FileMode
		uid  int // -1: this user
		want string
	}{
		{"others can write", 0o777, -1, "is writable by group or others (mode 0777)"},
		{"group can write", 0o770, -1, "is writable by group or others (mode 0770)"},
		{"sticky, others can write", 0o777 | os.ModeSticky, -1, "is writable by group or others (mode 1777)"},
		{"another user's", 0o700, 1000, "belongs to uid 1000 (mode 0700)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.uid >= 0 {
				hostenv.NeedRoot(t, "the test gives a directory to another user (chown)")
			}
			dir := mkdirAs(t, filepath.Join(t.TempDir(), "d"), c.mode, c.uid)
			f, err := LockDir(dir)
			if err == nil {
				f.Close()
				t.Fatalf("LockDir(%s) of mode %v, uid %d succeeded, want it refused", dir, c.mode, c.uid)
			}
			if !strings.Contains(err.Error(), dir+" "+c.want) {
				t.Errorf("LockDir(%s) = %v, want an error saying %q", dir, err, dir+" "+c.want)
			}
		})
	}
	dir := mkdirAs(t, filepath.Join(t.TempDir(), "d"), 0o755, -1)
	f, err := LockDir(dir)
	if err != nil {
		t.Fatalf("LockDir(%s) of mode 0755, this user's: %v", dir, err)
	}
	f.Close()
}

// mkdirAs makes directory dir with mode, for uid (-1: this user).
func mkdirAs(t *testing.T, dir string, mode os.FileMode, uid int) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		if err := os.Chown(dir, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
