package lab

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestLoginName: the lab finds its user's name in the passwd file as the
// agent's SSH server reads it: lines trimmed of spaces, comments and lines
// without 7 fields, a name or a numeric gid skipped, the first line with the
// uid counts.
func TestLoginName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	passwd := "#dev:x:1000:1000::/home/dev:/bin/sh\n" +
		"short:x:1000:1000\n" +
		":x:1000:1000::/:/bin/sh\n" +
		"nogid:x:1000:staff::/:/bin/sh\n" +
		"  alice:x:1000:1000:Alice:/home/alice:/bin/sh\r\n" +
		"alias:x:1000:1000::/home/alice:/bin/sh\n" +
		"bob:x:1001:1001::/home/bob:/bin/sh"
	if err := os.WriteFile(path, []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uid  int
		want string
		err  error
	}{
		{1000, "alice", nil},
		{1001, "bob", nil}, // the last line, without a newline
		{1002, "", errNoPasswdEntry},
	} {
		if got, err := loginName(path, tc.uid); got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("loginName(%d) = %q, %v; want %q, %v", tc.uid, got, err, tc.want, tc.err)
		}
	}
}
