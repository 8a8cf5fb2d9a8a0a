package sshd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePasswd(t *testing.T) {
	data := `# BusyBox style
root:x:0:0:root:/root:/bin/ash

daemon:*:1:1:daemon:/usr/sbin:/bin/false
broken:x:notanumber:0::/:/bin/sh
short:x:5:5
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`
	got, err := parsePasswd(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []passwdEntry{
		{Name: "root", UID: 0, GID: 0, Home: "/root", Shell: "/bin/ash"},
		{Name: "daemon", UID: 1, GID: 1, Home: "/usr/sbin", Shell: "/bin/false"},
		{Name: "nobody", UID: 65534, GID: 65534, Home: "/nonexistent", Shell: "/usr/sbin/nologin"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parsePasswd (-want +got):\n%s", diff)
	}
}

func TestParseGroups(t *testing.T) {
	data := "wheel:x:10:alice,bob\nusers:x:100:bob\nbad:x:zz:alice\nempty:x:5:\n"
	got, err := parseGroups(strings.NewReader(data), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{10}, got); diff != "" {
		t.Errorf("parseGroups (-want +got):\n%s", diff)
	}
}

func TestLookupUser(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "passwd"), "root:x:0:0::/root:/bin/sh\nop:x:1000:1000::/home/op:/bin/sh\n")
	writeFile(t, filepath.Join(dir, "group"), "adm:x:4:op\nop:x:1000:op\n")
	for _, tc := range []struct {
		euid    int
		user    string
		wantErr bool
		groups  []uint32
	}{
		{euid: 0, user: "root", groups: []uint32{0}},
		{euid: 0, user: "op", groups: []uint32{1000, 4}},
		{euid: 0, user: "ghost", wantErr: true},
		{euid: 1000, user: "op", groups: []uint32{1000, 4}},
		{euid: 1000, user: "root", wantErr: true},
	} {
		s := &Server{PasswdFile: filepath.Join(dir, "passwd"), GroupFile: filepath.Join(dir, "group"), geteuid: func() int { return tc.euid }}
		a, err := s.lookupUser(tc.user)
		if tc.wantErr {
			if !errors.Is(err, ErrUnknownUser) {
				t.Errorf("euid %d lookupUser(%s) = %v, want ErrUnknownUser", tc.euid, tc.user, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("euid %d lookupUser(%s): %v", tc.euid, tc.user, err)
			continue
		}
		if diff := cmp.Diff(tc.groups, a.Groups); diff != "" {
			t.Errorf("groups of %s (-want +got):\n%s", tc.user, diff)
		}
	}
	s := &Server{PasswdFile: filepath.Join(dir, "missing")}
	if _, err := s.lookupUser("root"); err == nil {
		t.Error("lookup with a missing passwd file succeeded")
	}
}

func TestLoginShellFallback(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "notexec")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct{ shell, want string }{
		{"/bin/sh", "/bin/sh"},
		{"/bin/does-not-exist", "/bin/sh"},
		{"", "/bin/sh"},
		{notExec, "/bin/sh"},
		{dir, "/bin/sh"},
	} {
		if got := loginShell(&account{Shell: tc.shell}); got != tc.want {
			t.Errorf("loginShell(%q) = %q, want %q", tc.shell, got, tc.want)
		}
	}
}
