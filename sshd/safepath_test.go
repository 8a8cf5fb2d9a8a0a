package sshd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// TestKeysFileThroughSymlinks: a trusted user CA keys file or an
// authorized_keys file is read through symbolic links, so safeWalk checks
// where they lead, as sshd's StrictModes does (auth_secure_path, on the real
// path), and the directories holding each link. A CA keys file linked into a
// directory anyone may write logged in as root: whoever wrote there chose the
// CA.
func TestKeysFileThroughSymlinks(t *testing.T) {
	ca := newSigner(t)
	cert := newCert(t, ca, newSigner(t), nil)
	var caFile string
	e := newEnv(t, func(e *testEnv, s *Server) {
		caFile = filepath.Join(e.dir, "etc", "porthole", "user_ca.pub")
		s.TrustedUserCAKeysFiles = []string{caFile}
	})
	mkdir := func(dir string, mode os.FileMode) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	symlink := func(target, link string) {
		t.Helper()
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	safe := mkdir(filepath.Join(e.dir, "safe"), 0o755)
	open := mkdir(filepath.Join(e.dir, "open"), 0o777) // not sticky: anyone may replace its entries
	sticky := mkdir(filepath.Join(e.dir, "sticky"), 0o777|os.ModeSticky)
	openSub := mkdir(filepath.Join(open, "sub"), 0o755)
	for _, f := range []string{filepath.Join(safe, "ca.pub"), filepath.Join(open, "ca.pub"), filepath.Join(openSub, "user_ca.pub")} {
		writeFile(t, f, authorizedLine("", ca.PublicKey()))
	}

	for _, tc := range []struct {
		name  string
		setup func(etc string) // makes etc/porthole/user_ca.pub
		root  bool             // needs root (Lchown)
		want  string           // in the log line of the file ignored; "": the login works
	}{
		{name: "link to a file in a safe directory", setup: func(etc string) {
			symlink(filepath.Join(safe, "ca.pub"), filepath.Join(mkdir(filepath.Join(etc, "porthole"), 0o755), "user_ca.pub"))
		}},
		{name: "link into a world-writable directory", setup: func(etc string) {
			symlink(filepath.Join(open, "ca.pub"), filepath.Join(mkdir(filepath.Join(etc, "porthole"), 0o755), "user_ca.pub"))
		}, want: "linked to " + filepath.Join(open, "ca.pub") + ": bad modes of " + open + ": 0777 is group or world writable"},
		{name: "relative link into a world-writable directory", setup: func(etc string) {
			symlink("../../open/ca.pub", filepath.Join(mkdir(filepath.Join(etc, "porthole"), 0o755), "user_ca.pub"))
		}, want: "bad modes of " + open + ": 0777"},
		{name: "through a link in a world-writable directory", setup: func(etc string) {
			os.Remove(filepath.Join(open, "link"))
			symlink(filepath.Join(safe, "ca.pub"), filepath.Join(open, "link"))
			symlink(filepath.Join(open, "link"), filepath.Join(mkdir(filepath.Join(etc, "porthole"), 0o755), "user_ca.pub"))
		}, want: "linked through " + filepath.Join(open, "link") + ": bad modes of " + open + ": 0777"},
		{name: "directory linked into a world-writable one", setup: func(etc string) {
			symlink(openSub, filepath.Join(mkdir(etc, 0o755), "porthole"))
		}, want: "linked to " + filepath.Join(openSub, "user_ca.pub") + ": bad modes of " + open + ": 0777"},
		{name: "through a link of root's in a sticky directory", setup: func(etc string) {
			os.Remove(filepath.Join(sticky, "link"))
			symlink(filepath.Join(safe, "ca.pub"), filepath.Join(sticky, "link"))
			symlink(filepath.Join(sticky, "link"), filepath.Join(mkdir(filepath.Join(etc, "porthole"), 0o755), "user_ca.pub"))
		}},
		{name: "through another user's link in a sticky directory", root: true, setup: func(etc string) {
			link := filepath.Join(sticky, "link")
			os.Remove(link)
			symlink(filepath.Join(safe, "ca.pub"), link)
			if err := os.Lchown(link, 1000, 1000); err != nil {
				t.Fatal(err)
			}
			symlink(link, filepath.Join(mkdir(filepath.Join(etc, "porthole"), 0o755), "user_ca.pub"))
		}, want: "bad ownership of symbolic link " + filepath.Join(sticky, "link") + ": uid 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				needRoot(t)
			}
			etc := filepath.Join(e.dir, "etc")
			if err := os.RemoveAll(etc); err != nil {
				t.Fatal(err)
			}
			tc.setup(etc)
			c, err := e.dial("root", gossh.PublicKeys(cert))
			if err == nil {
				c.Close()
			}
			if (err == nil) != (tc.want == "") {
				t.Fatalf("login with a certificate of the CA: %v, want ok=%v", err, tc.want == "")
			}
			if tc.want == "" {
				return
			}
			if l := e.logs.logged("trusted user CA keys file ignored", "path="+caFile, tc.want); len(l) == 0 {
				t.Errorf("no log line says %q of %s", tc.want, caFile)
			}
			if p, _ := e.srv.CheckLogins(); !strings.Contains(fmt.Sprint(p), tc.want) {
				t.Errorf("CheckLogins = %v, want %q", p, tc.want)
			}
		})
	}

	t.Run("authorized_keys", func(t *testing.T) {
		home := e.home("root")
		ak := filepath.Join(home, ".ssh", "authorized_keys")
		keys := mkdir(filepath.Join(home, "keys"), 0o755)
		openKeys := mkdir(filepath.Join(home, "open"), 0o777)
		for _, dir := range []string{keys, openKeys} {
			writeFile(t, filepath.Join(dir, "ak"), authorizedLine("", e.key.PublicKey()))
		}
		for _, tc := range []struct {
			target, want string
		}{
			{target: filepath.Join(keys, "ak")},
			{target: filepath.Join(openKeys, "ak"), want: "linked to " + filepath.Join(openKeys, "ak") + ": bad modes of " + openKeys + ": 0777"},
		} {
			os.Remove(ak)
			symlink(tc.target, ak)
			c, err := e.dial("root", gossh.PublicKeys(e.key))
			if err == nil {
				c.Close()
			}
			if (err == nil) != (tc.want == "") {
				t.Errorf("login with authorized_keys a link to %s: %v, want ok=%v", tc.target, err, tc.want == "")
			}
			if tc.want != "" && len(e.logs.logged("authorized keys file ignored", "path="+ak, tc.want)) == 0 {
				t.Errorf("no log line says %q of %s", tc.want, ak)
			}
		}
	})
}

// TestSafeWalkSameFile: the file read must be the one at the path's real
// path when it is checked; one that a link no longer leads to is refused.
func TestSafeWalkSameFile(t *testing.T) {
	dir := t.TempDir()
	chmodWalkUp(t, dir)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, a, "a")
	writeFile(t, b, "bb")
	fi, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := safeCAPath(fi, a); err != nil {
		t.Fatalf("safeCAPath(a's, a) = %v", err)
	}
	if err := safeCAPath(fi, b); err == nil || !strings.Contains(err.Error(), b+" changed while it was checked") {
		t.Errorf("safeCAPath(a's, b) = %v, want changed while it was checked", err)
	}
	// Overlayfs before Linux 4.19: the opened file is its layer's own, with
	// another device and inode than stat through the overlay gives, and the
	// same size, mode and time. Such a file is the one at the path.
	layer := filepath.Join(t.TempDir(), "a")
	writeFile(t, layer, "a")
	os.Chmod(layer, fi.Mode().Perm())
	if err := os.Chtimes(layer, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	lfi, err := os.Stat(layer)
	if err != nil {
		t.Fatal(err)
	}
	if err := safeCAPath(lfi, a); err != nil {
		t.Errorf("safeCAPath(a's layer file, a) = %v, want nil (overlayfs before 4.19)", err)
	}
}

// TestUserSteers: userSteers, which decides whether an authorized_keys file
// is opened as its user (loadKeysFile), finds each directory in which the
// path's resolution looks up a name that the user could change: one the
// user owns, one anyone may write, a sticky one (/tmp) where the entry is
// the user's or not there, also above a link followed or a directory a ".."
// leaves. uid 4242 owns nothing here unless a case gives it something.
func TestUserSteers(t *testing.T) {
	const uid = 4242
	dir := t.TempDir()
	mkdir := func(rel string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(target, rel string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(dir, rel)); err != nil {
			t.Fatal(err)
		}
	}
	mkdir("a", 0o755)
	mkdir("open", 0o777)
	mkdir("open/sub", 0o755)
	mkdir("sticky", 0o777|os.ModeSticky)
	mkdir("group", 0o775)
	for _, f := range []string{"a/keys", "open/keys", "sticky/keys", "group/keys"} {
		writeFile(t, filepath.Join(dir, f), "")
	}
	symlink(filepath.Join(dir, "a/keys"), "a/link")
	symlink(filepath.Join(dir, "a/keys"), "open/link")
	symlink(filepath.Join(dir, "open/link"), "a/via-open")
	symlink("../open/sub/../../a/keys", "a/rel-via-open")
	symlink("loop", "a/loop")

	for _, tc := range []struct {
		name, path string
		root       bool // needs root (chown)
		want       bool
	}{
		{name: "file in a directory of others", path: "a/keys"},
		{name: "missing file in a directory of others", path: "a/none"},
		{name: "link in a directory of others", path: "a/link"},
		{name: "file in a directory anyone may write", path: "open/keys", want: true},
		{name: "file in a directory a group may write", path: "group/keys", want: true},
		{name: "others' file in a sticky directory", path: "sticky/keys"},
		{name: "missing file in a sticky directory", path: "sticky/none", want: true},
		{name: "through a link in a directory anyone may write", path: "a/via-open", want: true},
		{name: "through a directory anyone may write, out by ..", path: "open/sub/../../a/keys", want: true},
		{name: "link through such a directory, out by ..", path: "a/rel-via-open", want: true},
		{name: "a loop", path: "a/loop", want: true},
		{name: "file in a directory of the user's", path: "mine/keys", root: true, want: true},
		{name: "the user's file in a sticky directory", path: "sticky/users", root: true, want: true},
		{name: "the user's link in a sticky directory", path: "sticky/users-link", root: true, want: true},
		{name: "the user's file in a directory of others", path: "a/users", root: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				needRoot(t)
				if _, err := os.Lstat(filepath.Join(dir, "mine")); err != nil {
					mkdir("mine", 0o755)
					writeFile(t, filepath.Join(dir, "mine/keys"), "")
					writeFile(t, filepath.Join(dir, "sticky/users"), "")
					writeFile(t, filepath.Join(dir, "a/users"), "")
					symlink(filepath.Join(dir, "a/keys"), "sticky/users-link")
					for _, p := range []string{"mine", "sticky/users", "a/users", "sticky/users-link"} {
						if err := os.Lchown(filepath.Join(dir, p), uid, uid); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			// Not filepath.Join, which takes a ".." away.
			if got := userSteers(dir+"/"+tc.path, uid); got != tc.want {
				t.Errorf("userSteers(%s) = %v, want %v", tc.path, got, tc.want)
			}
		})
	}
}
