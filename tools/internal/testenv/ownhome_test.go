package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// passwdWithHome moves uid 0's home, and only its, to an empty directory only
// root may enter; a file without uid 0 is an error.
func TestPasswdWithHome(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	in := "root:x:0:0:root:/root:/bin/bash\n# a comment: with colons\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" +
		"toor:x:0:0::/root:/bin/sh\nodd:x:10\n"
	if err := os.WriteFile(src, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	passwd, err := passwdWithHome(src, dir, home)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(passwd)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(in, ":/root:", ":"+home+":")
	if string(b) != want {
		t.Errorf("passwd:\n%s\nwant:\n%s", b, want)
	}
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("home: %v, %v", fi, err)
	}

	os.WriteFile(src, []byte("daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"), 0o644)
	if _, err := passwdWithHome(src, dir, filepath.Join(dir, "home2")); err == nil || !strings.Contains(err.Error(), "no uid 0") {
		t.Errorf("without uid 0: %v", err)
	}
}
