package sshd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestParsePasswd: lines that are not passwd(5) entries are skipped, not read
// as some other account: a commented-out one, one with a field too many, ids
// that do not fit 32 bits (4294967296 is not uid 0) or are not numbers, one
// without a name (an SSH client may send an empty user name; glibc's
// getpwnam("") would answer with that line).
func TestParsePasswd(t *testing.T) {
	data := `# BusyBox style
root:x:0:0:root:/root:/bin/ash

daemon:*:1:1:daemon:/usr/sbin:/bin/false
broken:x:notanumber:0::/:/bin/sh
short:x:5:5
#old:x:0:0:commented out:/root:/bin/sh
long:x:6:6::/:/bin/sh:extra
wrap:x:4294967296:0::/:/bin/sh
badgid:x:7:root::/:/bin/sh
biggid:x:8:4294967296::/:/bin/sh
:x:0:0:no name:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`
	got, _, err := parsePasswd(strings.NewReader(data))
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

// TestParseGroups: the groups that list a user as a member. White space
// before a member is skipped (staff, audio), as glibc's parser does (nss
// files-parse.c, parse_list), so initgroups(3), and with it OpenSSH, count
// such a member too. A line with a field too many is skipped: glibc reads
// its member list as "alice:more", which is not alice.
func TestParseGroups(t *testing.T) {
	data := "wheel:x:10:alice,bob\nusers:x:100:bob\nbad:x:zz:alice\nempty:x:5:\nstaff:x:50: alice\naudio:x:29:bob,\talice\n" +
		"five:x:20:alice:more\n"
	got, _, err := parseGroups(strings.NewReader(data), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{10, 50, 29}, got); diff != "" {
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

// TestFirstPasswdEntry: of two passwd lines for one name the first decides,
// as getpwnam(3) answers (glibc's files backend stops at the first match): a
// line appended later, with uid 0 say, gives the name neither its ids nor its
// home.
func TestFirstPasswdEntry(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "passwd"), "op:x:1000:1000::/home/op:/bin/sh\nop:x:0:0::/root:/bin/sh\n")
	writeFile(t, filepath.Join(dir, "group"), "")
	s := &Server{PasswdFile: filepath.Join(dir, "passwd"), GroupFile: filepath.Join(dir, "group"), geteuid: func() int { return 0 }}
	a, err := s.lookupUser("op")
	if err != nil {
		t.Fatalf("lookupUser(op): %v", err)
	}
	want := account{Name: "op", UID: 1000, GID: 1000, Groups: []uint32{1000}, Home: "/home/op", Shell: "/bin/sh"}
	if diff := cmp.Diff(want, *a); diff != "" {
		t.Errorf("lookupUser(op) (-want +got):\n%s", diff)
	}
	if home, ok := s.homeOf("op"); home != "/home/op" || !ok {
		t.Errorf("homeOf(op) = %q, %v, want /home/op, true", home, ok)
	}
}

// TestUserFilesClosed: the passwd, shadow and group files are closed after
// each lookup, or a server would run out of descriptors after enough logins.
// The kernel's names for the process's descriptors (/proc/self/fd) must not
// include them. Garbage collection is off meanwhile: an *os.File's finalizer
// would close a leaked descriptor at the next collection and hide the leak.
func TestUserFilesClosed(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	dir := t.TempDir()
	files := map[string]string{
		"passwd": "op:x:1000:1000::/home/op:/bin/sh\n",
		"shadow": "op:*:19000:0:99999:7:::\n",
		"group":  "adm:x:4:op\ntty:x:5:\n",
	}
	for name, data := range files {
		writeFile(t, filepath.Join(dir, name), data)
	}
	s := &Server{PasswdFile: filepath.Join(dir, "passwd"), GroupFile: filepath.Join(dir, "group"), geteuid: func() int { return 0 }}
	a, err := s.lookupUser("op") // passwd, shadow, group
	if err != nil {
		t.Fatalf("lookupUser(op): %v", err)
	}
	if diff := cmp.Diff([]uint32{1000, 4}, a.Groups); diff != "" {
		t.Errorf("groups of op (-want +got):\n%s", diff)
	}
	if gid, ok := s.groupID("tty"); gid != 5 || !ok {
		t.Errorf("groupID(tty) = %d, %v, want 5, true", gid, ok)
	}
	if home, ok := s.homeOf("op"); home != "/home/op" || !ok {
		t.Errorf("homeOf(op) = %q, %v, want /home/op, true", home, ok)
	}
	for name := range files {
		if n := descriptorsOn(t, filepath.Join(dir, name)); n != 0 {
			t.Errorf("%d descriptors still open on %s", n, name)
		}
	}
}

// TestUserFilesLongLines: an over-long line in passwd or group is skipped,
// with one warning that does not quote it, and the lines after it
// still count; a line bufio.Scanner refused (over 64 KiB) is no longer a
// problem; a file is read up to maxUserFile.
func TestUserFilesLongLines(t *testing.T) {
	const secret = "SECRET-CONTENT"
	tooLong := "#" + secret + strings.Repeat("x", maxUserLine) + "\n"
	scannerLimit := "#" + strings.Repeat("y", 100<<10) + "\n"
	users := "root:x:0:0::/root:/bin/sh\n"
	groups := "adm:x:4:op\n"
	for _, tc := range []struct {
		name          string
		passwd, group string
		user          string
		wantGroups    []uint32 // nil: the user is unknown
		warnFile      string   // the file a warning is about; "": no warning
		wantLog       []string // what the warning says besides
	}{
		{
			name:   "line over 64 KiB",
			passwd: scannerLimit + users + "op:x:1000:1000::/home/op:/bin/sh\n", group: scannerLimit + groups,
			user: "op", wantGroups: []uint32{1000, 4},
		},
		{
			name:   "passwd line over the limit",
			passwd: users + tooLong + tooLong + "op:x:1000:1000::/home/op:/bin/sh\n", group: groups,
			user: "op", wantGroups: []uint32{1000, 4},
			warnFile: "passwd", wantLog: []string{"long_lines=2", "first_long_line=2", "truncated=false"},
		},
		{
			name:   "group line over the limit",
			passwd: users + "op:x:1000:1000::/home/op:/bin/sh\n", group: tooLong + groups,
			user: "op", wantGroups: []uint32{1000, 4},
			warnFile: "group", wantLog: []string{"long_lines=1", "first_long_line=1"},
		},
		{
			name:   "passwd over the file limit",
			passwd: users + strings.Repeat("#"+strings.Repeat("z", 1000)+"\n", maxUserFile/1000) + "late:x:1001:1001::/:/bin/sh\n", group: groups,
			user:     "late",
			warnFile: "passwd", wantLog: []string{"long_lines=0", "truncated=true"},
		},
		{
			name:   "root before the file limit",
			passwd: users + strings.Repeat("#"+strings.Repeat("z", 1000)+"\n", maxUserFile/1000) + "late:x:1001:1001::/:/bin/sh\n", group: groups,
			user: "root", wantGroups: []uint32{0},
			warnFile: "passwd", wantLog: []string{"truncated=true"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "passwd"), tc.passwd)
			writeFile(t, filepath.Join(dir, "group"), tc.group)
			logger, logs := newTestLogger(t)
			s := &Server{PasswdFile: filepath.Join(dir, "passwd"), GroupFile: filepath.Join(dir, "group"),
				Logger: logger, geteuid: func() int { return 0 }}
			a, err := s.lookupUser(tc.user)
			switch {
			case tc.wantGroups == nil && !errors.Is(err, ErrUnknownUser):
				t.Errorf("lookupUser(%s) = %v, want ErrUnknownUser", tc.user, err)
			case tc.wantGroups != nil && err != nil:
				t.Errorf("lookupUser(%s): %v", tc.user, err)
			case tc.wantGroups != nil:
				if diff := cmp.Diff(tc.wantGroups, a.Groups); diff != "" {
					t.Errorf("groups of %s (-want +got):\n%s", tc.user, diff)
				}
			}
			warned := logs.logged("user file partly ignored")
			switch {
			case tc.warnFile == "" && len(warned) != 0:
				t.Errorf("logged %q, want nothing", warned)
			case tc.warnFile != "":
				want := append([]string{"user file partly ignored", "file=" + filepath.Join(dir, tc.warnFile) + " "}, tc.wantLog...)
				if len(warned) != 1 || len(logs.logged(want...)) != 1 {
					t.Errorf("logged %q, want one line with %q", warned, want)
				}
			}
			if l := logs.logged(secret); len(l) != 0 {
				t.Errorf("the content of a skipped line was logged: %.200q", l)
			}
		})
	}
}

// TestLoginShell: an empty shell field means /bin/sh (passwd(5)); any other
// is used as is, since lookupUser refuses accounts whose shell is not an
// executable file (TestDisabledAccounts).
func TestLoginShell(t *testing.T) {
	for _, tc := range []struct{ shell, want string }{
		{"/bin/sh", "/bin/sh"},
		{"/bin/ash", "/bin/ash"},
		{"", "/bin/sh"},
	} {
		if got := shellOf(tc.shell); got != tc.want {
			t.Errorf("shellOf(%q) = %q, want %q", tc.shell, got, tc.want)
		}
	}
}

// FuzzUserFiles reads passwd, group and shadow data as the server does
// (hand-edited files on a device): no entry may hold a field separator, an
// entry written back in passwd(5) form reads the same, and a group or
// shadow answer comes from a line of the file.
func FuzzUserFiles(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/ash\n# c\n\ndaemon:*:1:1:daemon:/usr/sbin:/bin/false\nbroken:x:zz:0::/:/bin/sh\n", "root")
	f.Add("wheel:x:10:alice,bob\nusers:x:100: alice \nbad:x:zz:alice\n", "alice")
	f.Add("root:!$6$x:19000:0:99999:7:::\nalice:*:1:::::20000:\n", "alice")
	f.Add(" nobody:!:65534:65534::/: /bin/sh \r\n", "nobody")
	f.Fuzz(func(t *testing.T, data, name string) {
		entries, _, err := parsePasswd(strings.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		var again strings.Builder
		for _, e := range entries {
			if e.Name == "" || strings.ContainsAny(e.Name+e.Home+e.Shell, ":\n") {
				t.Fatalf("parsePasswd(%q) gave %+v", data, e)
			}
			pw := "x"
			if e.Locked {
				pw = "!"
			}
			fmt.Fprintf(&again, "%s:%s:%d:%d::%s:%s\n", e.Name, pw, e.UID, e.GID, e.Home, e.Shell)
		}
		back, _, err := parsePasswd(strings.NewReader(again.String()))
		if err != nil || !reflect.DeepEqual(back, entries) {
			t.Fatalf("parsePasswd(%q) = %+v; written back as %q it reads %+v, %v", data, entries, again.String(), back, err)
		}
		gids, _, err := parseGroups(strings.NewReader(data), name)
		if err != nil {
			t.Fatal(err)
		}
		if len(gids) > strings.Count(data, "\n")+1 || len(gids) > 0 && strings.TrimSpace(name) != name {
			t.Fatalf("parseGroups(%q, %q) = %v", data, name, gids)
		}
		shadow, _, err := parseShadow(strings.NewReader(data), func(n string) bool { return n == name })
		if err != nil {
			t.Fatal(err)
		}
		e, found := shadow[name]
		if len(shadow) > 1 {
			t.Fatalf("parseShadow(%q) for %q only gave %v", data, name, shadow)
		}
		if found && !strings.Contains(data, name+":") {
			t.Fatalf("parseShadow(%q, %q) found %+v without a line for the user", data, name, e)
		}
		if !found && (e.Locked || e.ExpireDay != 0) || e.ExpireDay < -1 {
			t.Fatalf("parseShadow(%q, %q) = %+v, %v", data, name, e, found)
		}
	})
}

// TestUserName: a program that names the user the server logs in as itself
// (the lab) reads the passwd file as the server does: lines trimmed of
// spaces, comments and lines without 7 fields, a name or a numeric gid
// skipped, the first line with the uid counts.
func TestUserName(t *testing.T) {
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
		uid  uint32
		want string
		err  error
	}{
		{1000, "alice", nil},
		{1001, "bob", nil}, // the last line, without a newline
		{1002, "", ErrUnknownUser},
	} {
		if got, err := UserName(path, tc.uid); got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("UserName(%d) = %q, %v; want %q, %v", tc.uid, got, err, tc.want, tc.err)
		}
	}
}
