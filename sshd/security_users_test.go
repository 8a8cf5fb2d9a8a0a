package sshd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// shadowToday is the day (since 1970-01-01) the account tests run on.
const shadowToday = 20000

func shadowClock() time.Time { return time.Unix(shadowToday*24*60*60+12*60*60, 0) }

// TestDisabledAccounts: as OpenSSH without PAM, an account is refused when
// its shadow password field starts with "!" (locked), its shadow expiry day
// is past, or its login shell is not an executable file; "*" and empty
// password fields are not locks (key logins of root:* must work), an empty
// shell field means /bin/sh, and without a shadow file only the shell counts.
// Any execute bit makes a shell executable, the owner's, the group's or
// others' alone too, as in OpenSSH's allowed_user (auth.c:
// S_IXOTH|S_IXUSR|S_IXGRP). A shell that stat(2) cannot reach (a path through
// a file: ENOTDIR) does not exist, and one that is not a regular file (a
// directory, a FIFO with execute bits) is refused.
// shadow(5) gives a line 9 fields, the last reserved; a line without it keeps
// its expiry date, as glibc's parser (getspnam, hence OpenSSH) reads it.
func TestDisabledAccounts(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "notexec")
	writeFile(t, notExec, "#!/bin/sh\n")
	ownerExec, groupExec, othersExec := filepath.Join(dir, "ownerexec"), filepath.Join(dir, "groupexec"), filepath.Join(dir, "othersexec")
	for path, mode := range map[string]os.FileMode{ownerExec: 0o100, groupExec: 0o010, othersExec: 0o001} {
		writeFile(t, path, "#!/bin/sh\n")
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fifo, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	users := []struct {
		name, shell, shadow string
		why                 string // "": may log in; else part of the refusal
	}{
		{name: "star", shadow: "*:19000:0:99999:7:::"},
		{name: "empty", shadow: ":19000:0:99999:7:::"},
		{name: "hashed", shadow: "$6$salt$hash:19000:0:99999:7:::"},
		{name: "nolock", shadow: "$6$salt$ha!sh:19000:0:99999:7:::"},
		{name: "locked", shadow: "!$6$salt$hash:19000:0:99999:7:::", why: "account is locked"},
		{name: "bang", shadow: "!:19000::::::", why: "account is locked"},
		{name: "bangstar", shadow: "!*:19000::::::", why: "account is locked"},
		{name: "short", shadow: "!", why: "account is locked"},
		{name: "expired", shadow: fmt.Sprintf("*:19000:0:99999:7::%d:", shadowToday-1), why: "account has expired"},
		{name: "epoch", shadow: "*:19000:0:99999:7::0:", why: "account has expired"},
		{name: "noreserved", shadow: fmt.Sprintf("*:19000:0:99999:7::%d", shadowToday-1), why: "account has expired"},
		{name: "lastday", shadow: fmt.Sprintf("*:19000:0:99999:7::%d:", shadowToday)},
		{name: "later", shadow: fmt.Sprintf("*:19000:0:99999:7::%d:", shadowToday+1)},
		{name: "noexpiry", shadow: "*:19000:0:99999:7:::"},
		{name: "badexpiry", shadow: "*:19000:0:99999:7::soon:"},
		{name: "notinshadow"},
		{name: "emptyshell", shell: "-"},
		{name: "noshell", shell: "/bin/does-not-exist", shadow: "*:19000::::::", why: "shell /bin/does-not-exist does not exist"},
		{name: "notexec", shell: notExec, why: "shell " + notExec + " is not executable"},
		{name: "ownerexec", shell: ownerExec},
		{name: "groupexec", shell: groupExec},
		{name: "othersexec", shell: othersExec},
		{name: "dirshell", shell: dir, why: "shell " + dir + " is not a regular file"},
		{name: "fifoshell", shell: fifo, why: "shell " + fifo + " is not a regular file"},
		{name: "throughfile", shell: notExec + "/sh", why: "shell " + notExec + "/sh does not exist"},
	}
	var passwd, shadow strings.Builder
	for i, u := range users {
		shell := u.shell
		switch shell {
		case "":
			shell = "/bin/sh"
		case "-":
			shell = ""
		}
		fmt.Fprintf(&passwd, "%s:x:%d:%d::/:%s\n", u.name, 100+i, 100+i, shell)
		if u.shadow != "" {
			fmt.Fprintf(&shadow, "%s:%s\n", u.name, u.shadow)
		}
	}
	writeFile(t, filepath.Join(dir, "passwd"), passwd.String())
	writeFile(t, filepath.Join(dir, "group"), "")
	newServer := func(t *testing.T) (*Server, *testLogWriter) {
		logger, logs := newTestLogger(t)
		return &Server{PasswdFile: filepath.Join(dir, "passwd"), GroupFile: filepath.Join(dir, "group"),
			Logger: logger, geteuid: func() int { return 0 }, now: shadowClock}, logs
	}

	t.Run("shadow file", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "shadow"), "# comment\n\n"+shadow.String())
		defer os.Remove(filepath.Join(dir, "shadow"))
		s, _ := newServer(t)
		for _, u := range users {
			a, err := s.lookupUser(u.name)
			switch {
			case u.why == "" && err != nil:
				t.Errorf("lookupUser(%s): %v", u.name, err)
			case u.why != "" && (!errors.Is(err, ErrUserNotAllowed) || !strings.Contains(err.Error(), u.why)):
				t.Errorf("lookupUser(%s) = %v, want ErrUserNotAllowed with %q", u.name, err, u.why)
			case u.name == "emptyshell":
				if got := shellOf(a.Shell); got != "/bin/sh" {
					t.Errorf("loginShell of an empty shell field = %q, want /bin/sh", got)
				}
			}
		}
	})
	// Without a shadow file (many devices), or with one that is not a
	// regular file (not even opened), only the shell is checked.
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (opened func() bool)
	}{
		{"no shadow file", func(*testing.T) func() bool { return nil }},
		{"shadow FIFO", func(t *testing.T) func() bool {
			t.Cleanup(func() { os.Remove(filepath.Join(dir, "shadow")) })
			return mkfifo(t, filepath.Join(dir, "shadow"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opened := tc.setup(t)
			s, logs := newServer(t)
			for _, u := range users {
				_, err := s.lookupUser(u.name)
				switch shellBad := strings.HasPrefix(u.why, "shell "); {
				case shellBad && !errors.Is(err, ErrUserNotAllowed):
					t.Errorf("lookupUser(%s) = %v, want ErrUserNotAllowed (%s)", u.name, err, u.why)
				case !shellBad && err != nil:
					t.Errorf("lookupUser(%s): %v", u.name, err)
				}
			}
			if opened != nil {
				if opened() {
					t.Error("the shadow FIFO was opened")
				}
				if len(logs.logged("shadow file ignored", "named pipe")) == 0 {
					t.Error("the shadow FIFO was not logged")
				}
			}
		})
	}
}

// TestDisabledAccountLogin: a disabled account is refused for every
// authentication method, with a log line that says why, and the client sees
// an ordinary authentication failure. The shadow file is read at each login.
func TestDisabledAccountLogin(t *testing.T) {
	const password = "correct horse"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.PasswordHashes = map[string]string{"root": string(hash), "bob": string(hash)}
		s.now = shadowClock
	})
	shadow := filepath.Join(e.dir, "shadow") // next to the test passwd file
	methods := []struct {
		name string
		auth gossh.AuthMethod
	}{
		{"publickey", gossh.PublicKeys(e.key)},
		{"password", gossh.Password(password)},
	}
	refused := func(t *testing.T, user, why string) {
		t.Helper()
		for _, m := range methods {
			before := len(e.logs.logged("login refused", "user="+user, "method="+m.name, why))
			if err := e.checkRefused(user, m.auth); err != nil {
				t.Errorf("%s login: %v (%s)", m.name, err, why)
				continue
			}
			// A refused public key is reported when the connection ends.
			got := func() int { return len(e.logs.logged("login refused", "user="+user, "method="+m.name, why)) }
			deadline := time.Now().Add(5 * time.Second)
			for got() < before+1 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if got() != before+1 {
				t.Errorf("%s login as %s: %d log lines saying %q, want 1", m.name, user, got()-before, why)
			}
		}
	}
	allowed := func(t *testing.T, user string) {
		t.Helper()
		for _, m := range methods {
			c, err := e.dial(user, m.auth)
			if err != nil {
				t.Errorf("%s login as %s: %v", m.name, user, err)
				continue
			}
			c.Close()
		}
	}

	t.Run("locked", func(t *testing.T) {
		writeFile(t, shadow, "root:!$6$salt$hash:19000:0:99999:7:::\n")
		refused(t, "root", "account is locked")
	})
	t.Run("expired", func(t *testing.T) {
		writeFile(t, shadow, fmt.Sprintf("root:*:19000:0:99999:7::%d:\n", shadowToday-1))
		refused(t, "root", "account has expired")
	})
	t.Run("no password", func(t *testing.T) {
		// Debian's root:*: no password in shadow, but keys (and this
		// server's own PasswordHashes) still work.
		writeFile(t, shadow, "root:*:19000:0:99999:7:::\n")
		allowed(t, "root")
	})
	t.Run("shell does not exist", func(t *testing.T) {
		needRoot(t) // bob is not the server's own user
		os.Remove(shadow)
		refused(t, "bob", "shell /bin/nonexistent-shell does not exist")
	})
}

// Without a shadow entry, a "!" in the passwd file's own password field locks
// the account (BusyBox systems without shadow passwords); with one, the shadow
// entry decides.
func TestPasswdFileLock(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "passwd"), "plain:x:100:100::/:/bin/sh\nbanged:!x:101:101::/:/bin/sh\nshadowed:!x:102:102::/:/bin/sh\n")
	writeFile(t, filepath.Join(dir, "group"), "")
	writeFile(t, filepath.Join(dir, "shadow"), "shadowed:*:19000::::::\n")
	logger, _ := newTestLogger(t)
	s := &Server{PasswdFile: filepath.Join(dir, "passwd"), GroupFile: filepath.Join(dir, "group"),
		Logger: logger, geteuid: func() int { return 0 }, now: shadowClock}
	for name, locked := range map[string]bool{"plain": false, "banged": true, "shadowed": false} {
		_, err := s.lookupUser(name)
		if got := errors.Is(err, ErrUserNotAllowed); got != locked {
			t.Errorf("lookupUser(%s) = %v, want refused %v", name, err, locked)
		}
	}
}
