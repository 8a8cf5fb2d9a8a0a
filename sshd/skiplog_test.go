package sshd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// TestSkippedLineWarnedOnce: an authorized_keys line the server skips (a
// typo in an option) is read at every login, once per key the client offers
// and again to check the signature. It is warned about once, at the first
// read, and logged at debug at the others, as long as the file is the same.
func TestSkippedLineWarnedOnce(t *testing.T) {
	e := newEnv(t, nil)
	other := newSigner(t)
	e.writeAuthorizedKeys("root", authorizedLine("no-pty,bogus-option", other.PublicKey())+
		authorizedLine("", e.key.PublicKey()))
	for range 5 {
		c, err := e.dial("root", gossh.PublicKeys(other, e.key))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if w := e.logs.logged("level=WARN", "line skipped"); len(w) != 1 {
		t.Errorf("5 logins warned %d times about the skipped line, want once: %q", len(w), w)
	}
	if d := e.logs.logged("level=DEBUG", "authorized keys line skipped"); len(d) < 5 {
		t.Errorf("the skipped line was logged at debug %d times in 5 logins, want at least 5", len(d))
	}
}

// TestSkippedLineWarnedOnceForOfferedKeys: a client that may not log in and
// offers key after key does not make a warning of each.
func TestSkippedLineWarnedOnceForOfferedKeys(t *testing.T) {
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine("bogus-option", e.key.PublicKey()))
	var keys []gossh.Signer
	for range 6 {
		keys = append(keys, newSigner(t))
	}
	for range 3 {
		e.refuse("root", gossh.PublicKeys(keys...))
	}
	if w := e.logs.logged("level=WARN", "line skipped"); len(w) != 1 {
		t.Errorf("3 refused connections of 6 keys each warned %d times about the skipped line, want once: %q", len(w), w)
	}
}

// TestChangedFileWarnedAgain: a new version of a file with skipped lines is
// warned about again, once: authorized_keys, trusted user CA keys and passwd.
func TestChangedFileWarnedAgain(t *testing.T) {
	ca := newSigner(t)
	caFile := ""
	tooLong := "#" + strings.Repeat("x", maxUserLine) + "\n"
	e := newEnv(t, func(e *testEnv, s *Server) {
		caFile = filepath.Join(e.dir, "user_ca.pub")
		writeFile(t, caFile, authorizedLine("no-pty", newSigner(t).PublicKey())+authorizedLine("", ca.PublicKey()))
		s.TrustedUserCAKeysFiles = []string{caFile}
		appendFile(t, s.PasswdFile, tooLong)
	})
	cert := newCert(t, ca, newSigner(t), nil)
	login := func() {
		t.Helper()
		for _, auth := range []gossh.AuthMethod{gossh.PublicKeys(e.key), gossh.PublicKeys(cert)} {
			c, err := e.dial("root", auth)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	warned := func(msg string, want int) {
		t.Helper()
		if w := e.logs.logged("level=WARN", msg); len(w) != want {
			t.Errorf("%d warnings %q, want %d: %q", len(w), msg, want, w)
		}
	}
	e.writeAuthorizedKeys("root", authorizedLine("bogus-option", newSigner(t).PublicKey())+authorizedLine("", e.key.PublicKey()))
	login()
	login()
	warned("authorized keys line skipped", 1)
	warned("trusted user CA keys line skipped", 1)
	warned("user file partly ignored", 1)

	// Each file changes (its size too, so the change shows on a file system
	// whose times are coarse).
	e.writeAuthorizedKeys("root", authorizedLine("other-option", newSigner(t).PublicKey())+authorizedLine("", e.key.PublicKey()))
	appendFile(t, caFile, authorizedLine("restrict", newSigner(t).PublicKey()))
	appendFile(t, e.srv.PasswdFile, tooLong)
	login()
	login()
	warned("authorized keys line skipped", 2)
	warned("trusted user CA keys line skipped", 1+2) // the new version's two lines
	warned("user file partly ignored", 2)
}

func appendFile(t testing.TB, path, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.WriteString(data)
		if err2 := f.Close(); err == nil {
			err = err2
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// warnings counts the WARN lines with msg in e's log.
func (e *testEnv) warnings(msg string) int { return len(e.logs.logged("level=WARN", msg)) }

// tryKeys makes 3 connections as user, each offering keys one by one, and
// fails the test unless the server refuses each.
func (e *testEnv) tryKeys(user string, keys ...gossh.Signer) {
	e.t.Helper()
	for range 3 {
		e.refuse(user, gossh.PublicKeys(keys...))
	}
}

// TestIgnoredKeysFileWarnedOnce: an authorized_keys file ignored because the
// home directory above it is group-writable is read, and found so, at every
// key a client offers. It is warned about once while it stays so; a change
// (another mode) is warned about again, as is the same mode once it has been
// fixed in between.
func TestIgnoredKeysFileWarnedOnce(t *testing.T) {
	e := newEnv(t, nil)
	home := e.home("root")
	var keys []gossh.Signer
	for range 6 {
		keys = append(keys, newSigner(t))
	}
	keys = append(keys, e.key)
	chmod := func(mode os.FileMode) {
		t.Helper()
		if err := os.Chmod(home, mode); err != nil {
			t.Fatal(err)
		}
	}
	want := func(n int) {
		t.Helper()
		if got := e.warnings("authorized keys file ignored"); got != n {
			t.Fatalf("%d warnings that authorized_keys is ignored, want %d: %q", got, n, e.logs.logged("file ignored"))
		}
	}
	chmod(0o775)
	e.tryKeys("root", keys...)
	want(1)
	if d := e.logs.logged("level=DEBUG", "authorized keys file ignored"); len(d) == 0 {
		t.Error("the later reads were not logged at debug")
	}
	chmod(0o757)
	e.tryKeys("root", keys...)
	want(2)
	chmod(0o755)
	e.login("root")
	chmod(0o757)
	e.tryKeys("root", keys...)
	want(3)
}

// TestCAKeysFileErrorWarnedOnce: a trusted user CA keys file that cannot be
// read is found so at every certificate a client offers. It is warned about
// once while the error stays the same, again when it comes back after a read
// that worked, and again when it changes.
func TestCAKeysFileErrorWarnedOnce(t *testing.T) {
	ca := newSigner(t)
	var caFile string
	e := newEnv(t, func(e *testEnv, s *Server) {
		caFile = filepath.Join(e.dir, "ca", "user_ca.pub")
		s.TrustedUserCAKeysFiles = []string{caFile}
	})
	var certs []gossh.Signer
	for range 4 {
		certs = append(certs, newCert(t, newSigner(t), newSigner(t), nil))
	}
	want := func(n int) {
		t.Helper()
		if got := e.warnings("reading trusted user CA keys"); got != n {
			t.Fatalf("%d warnings about reading the CA keys file, want %d: %q", got, n, e.logs.logged("trusted user CA keys"))
		}
	}
	e.tryKeys("root", certs...) // no such file
	want(1)

	if err := os.Mkdir(filepath.Join(e.dir, "ca"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
	c, err := e.dial("root", gossh.PublicKeys(newCert(t, ca, newSigner(t), nil)))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	os.Remove(caFile) // no such file, again
	e.tryKeys("root", certs...)
	want(2)

	os.Remove(filepath.Join(e.dir, "ca"))
	writeFile(t, filepath.Join(e.dir, "ca"), "") // not a directory
	e.tryKeys("root", certs...)
	want(3)
}

// TestShadowFileIgnoredWarnedOnce: a shadow file that is not a regular file
// is found so at every login and every key offered. It is warned about once
// while it stays the same file, and again when it is another.
func TestShadowFileIgnoredWarnedOnce(t *testing.T) {
	e := newEnv(t, nil)
	shadow := e.srv.shadowPath()
	want := func(n int) {
		t.Helper()
		if got := e.warnings("shadow file ignored"); got != n {
			t.Fatalf("%d warnings that the shadow file is ignored, want %d: %q", got, n, e.logs.logged("shadow"))
		}
	}
	mkfifo(t, shadow)
	for range 3 {
		e.login("root").Close()
	}
	e.tryKeys("root", newSigner(t), newSigner(t), newSigner(t))
	want(1)

	writeFile(t, shadow+".new", "root:*:19000:0:99999:7:::\n")
	if err := os.Rename(shadow+".new", shadow); err != nil {
		t.Fatal(err)
	}
	e.login("root").Close()
	mkfifo(t, shadow) // a FIFO again: another file, the same error
	e.login("root").Close()
	e.login("root").Close()
	want(2)

	os.Remove(shadow)
	if err := os.Mkdir(shadow, 0o755); err != nil {
		t.Fatal(err)
	}
	e.login("root").Close()
	e.login("root").Close()
	want(3)
}
