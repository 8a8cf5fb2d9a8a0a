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
		if c, err := e.dial("root", gossh.PublicKeys(keys...)); err == nil {
			c.Close()
			t.Fatal("logged in with keys in no file")
		}
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
