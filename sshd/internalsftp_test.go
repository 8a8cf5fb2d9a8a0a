package sshd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"
)

// subsystemSFTP starts the sftp subsystem on a new session of c and returns
// a client on it, or the refusal.
func subsystemSFTP(t *testing.T, c *gossh.Client) (*rawSession, *sftp.Client, error) {
	t.Helper()
	s := openRaw(t, c)
	if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"})); err != nil {
		t.Fatal(err)
	} else if !ok {
		return s, nil, errors.New("subsystem request refused")
	}
	cl, err := sftp.NewClientPipe(s.ch, halfCloser{s.ch})
	return s, cl, err
}

// TestForcedInternalSFTP: command="internal-sftp" limits a key to sftp. As in
// OpenSSH (session.c, SUBSYSTEM_INT_SFTP_ERROR), a shell or a command under
// it gets "This service allows sftp connections only." and exit status 1;
// serving SFTP packets on an interactive session left "ssh host" waiting on a
// terminal that answered nothing. The word may be followed by options after
// a space or a tab (IS_INTERNAL_SFTP); a longer word is a program.
func TestForcedInternalSFTP(t *testing.T) {
	const refusal = "This service allows sftp connections only."
	for _, forced := range []string{"internal-sftp", "internal-sftp\t-e", "internal-sftp -f AUTH -l INFO"} {
		e := newEnv(t, nil)
		e.writeAuthorizedKeys("root", authorizedLine(`command="`+forced+`"`, e.key.PublicKey()))
		c := e.login("root")
		s, cl, err := subsystemSFTP(t, c)
		if err != nil {
			t.Fatalf("%q: sftp: %v", forced, err)
		}
		if _, err := cl.Getwd(); err != nil {
			t.Errorf("%q: sftp: %v", forced, err)
		}
		cl.Close()
		s.wait(t)

		if out, errOut, code := run(t, c, "ls", ""); code != 1 || out != refusal+"\n" || errOut != "" {
			t.Errorf("%q: exec: %q, %q, exit %d; want %q on stdout and exit 1", forced, out, errOut, code, refusal)
		}
		sess := openSession(t, c)
		if err := sess.RequestPty("xterm", 24, 80, nil); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		sess.Stdout = &out
		if err := sess.Shell(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- sess.Wait() }()
		select {
		case err := <-done:
			var ee *gossh.ExitError
			if !errors.As(err, &ee) || ee.ExitStatus() != 1 || out.String() != refusal+"\r\n" {
				t.Errorf("%q: shell with a pty: %q, %v; want %q and exit 1", forced, out.String(), err, refusal)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q: shell with a pty: no end after 5 s", forced)
		}
	}

	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine(`command="internal-sftpx; echo ran"`, e.key.PublicKey()))
	if out, _, _ := run(t, e.login("root"), "ls", ""); !strings.Contains(out, "ran") {
		t.Errorf("command=\"internal-sftpx; ...\" is a command, not internal-sftp: %q", out)
	}
}

// TestForcedInternalSFTPReadOnly: command="internal-sftp -R" is the usual
// read-only sftp key. Files and directories can be listed and read; every
// request that would change one is refused with "permission denied", as
// sftp-server -R refuses it, an OPEN that would create or truncate without
// asking to write among them. Options that would restrict the session
// otherwise (-d, -u, -P, -p) are not supported: the request is refused rather
// than served without them.
func TestForcedInternalSFTPReadOnly(t *testing.T) {
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine(`command="internal-sftp -R"`, e.key.PublicKey()))
	home := e.home("root")
	writeFile(t, filepath.Join(home, "f"), "data")
	if err := os.Mkdir(filepath.Join(home, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, cl, err := subsystemSFTP(t, e.login("root"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.wait(t)
	defer cl.Close()
	if f, err := cl.Open("f"); err != nil {
		t.Errorf("read-only: Open: %v", err)
	} else if b, err := io.ReadAll(f); err != nil || string(b) != "data" {
		t.Errorf("read-only: read %q, %v", b, err)
	}
	if fis, err := cl.ReadDir("."); err != nil || len(fis) < 2 {
		t.Errorf("read-only: ReadDir: %d entries, %v", len(fis), err)
	}
	if _, err := cl.Stat("d"); err != nil {
		t.Errorf("read-only: Stat: %v", err)
	}
	for what, try := range map[string]func() error{
		"create":           func() error { _, err := cl.Create("new"); return err },
		"open to write":    func() error { _, err := cl.OpenFile("f", os.O_WRONLY); return err },
		"open to append":   func() error { _, err := cl.OpenFile("f", os.O_WRONLY|os.O_APPEND); return err },
		"create read-only": func() error { _, err := cl.OpenFile("new", os.O_RDONLY|os.O_CREATE); return err },
		"truncate on open": func() error { _, err := cl.OpenFile("f", os.O_RDONLY|os.O_TRUNC); return err },
		"mkdir":            func() error { return cl.Mkdir("new") },
		"remove":           func() error { return cl.Remove("f") },
		"rmdir":            func() error { return cl.RemoveDirectory("d") },
		"rename":           func() error { return cl.Rename("f", "g") },
		"posix-rename":     func() error { return cl.PosixRename("f", "g") },
		"hardlink":         func() error { return cl.Link("f", "g") },
		"symlink":          func() error { return cl.Symlink("f", "g") },
		"chmod":            func() error { return cl.Chmod("f", 0o777) },
		"truncate":         func() error { return cl.Truncate("f", 0) },
		"chtimes":          func() error { return cl.Chtimes("f", time.Unix(1, 0), time.Unix(1, 0)) },
	} {
		if err := try(); !errors.Is(err, os.ErrPermission) {
			t.Errorf("read-only: %s: %v, want permission denied", what, err)
		}
	}
	if f, err := cl.Open("f"); err == nil {
		if _, err := f.Write([]byte("x")); err == nil {
			t.Error("read-only: WRITE to a handle opened to read succeeded")
		}
		f.Close()
	}
	if b, err := os.ReadFile(filepath.Join(home, "f")); err != nil || string(b) != "data" {
		t.Errorf("read-only: f is now %q, %v", b, err)
	}
	if names, _ := os.ReadDir(home); len(names) != 3 { // .ssh, d, f
		t.Errorf("read-only: the home holds %d entries, want the 3 it had", len(names))
	}

	for _, forced := range []string{"internal-sftp -d /tmp", "internal-sftp -u 000", "internal-sftp -P remove", "internal-sftp -p open", "internal-sftp -R extra", "internal-sftp -l"} {
		e := newEnv(t, nil)
		e.writeAuthorizedKeys("root", authorizedLine(`command="`+forced+`"`, e.key.PublicKey()))
		if s, _, err := subsystemSFTP(t, e.login("root")); err == nil {
			t.Errorf("%q: sftp served", forced)
			s.ch.Close()
		}
	}
}

// TestForcedCommandForSubsystem: with a forced command, a subsystem request
// sets SSH_ORIGINAL_COMMAND to what the subsystem would have run, as OpenSSH
// passes its Subsystem command and dropbear its sftp-server's path, so that a
// wrapper (case "$SSH_ORIGINAL_COMMAND" in *sftp-server*) exec ...) can run it;
// "internal-sftp" when the device has no sftp-server. A subsystem the server
// does not have is refused before the forced command, as sshd refuses it.
func TestForcedCommandForSubsystem(t *testing.T) {
	for _, withBinary := range []bool{true, false} {
		var bin string
		e := newEnv(t, func(e *testEnv, s *Server) {
			s.sftpServerPaths = []string{}
			if withBinary {
				bin = filepath.Join(e.dir, "sftp-server")
				writeFile(t, bin, "#!/bin/sh\n")
				os.Chmod(bin, 0o755)
				s.sftpServerPaths = []string{bin}
			}
		})
		e.writeAuthorizedKeys("root", authorizedLine(`command="printf %s \"$SSH_ORIGINAL_COMMAND\""`, e.key.PublicKey()))
		c := e.login("root")
		s := openRaw(t, c)
		if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"})); !ok || err != nil {
			t.Fatalf("subsystem sftp = %v, %v", ok, err)
		}
		out, _ := io.ReadAll(s.ch)
		want := "internal-sftp"
		if withBinary {
			want = bin
		}
		if string(out) != want {
			t.Errorf("SSH_ORIGINAL_COMMAND for subsystem sftp = %q, want %q", out, want)
		}
		s = openRaw(t, c)
		if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"netconf"})); ok || err != nil {
			t.Errorf("subsystem netconf under a forced command = %v, %v; want refused", ok, err)
		}
	}
}

// TestSignalToSubsystemRefused: OpenSSH's session_signal_req refuses a signal
// to a subsystem's session as to a forced command's.
func TestSignalToSubsystemRefused(t *testing.T) {
	needRoot(t)
	e := newEnv(t, func(e *testEnv, s *Server) {
		bin := filepath.Join(e.dir, "sftp-server")
		writeFile(t, bin, "#!/bin/sh\nexec sleep 30\n")
		os.Chmod(bin, 0o755)
		s.sftpServerPaths = []string{bin}
	})
	c := e.login("alice") // not the server's user: the device's sftp-server runs, as alice
	s := openRaw(t, c)
	if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"})); !ok || err != nil {
		t.Fatalf("subsystem sftp = %v, %v", ok, err)
	}
	if ok, err := s.ch.SendRequest("signal", true, gossh.Marshal(struct{ Name string }{"TERM"})); err != nil || ok {
		t.Errorf("signal TERM to the sftp subsystem = %v, %v; want refused", ok, err)
	}
}

// TestShellNotExecutableForUser: a login shell the user may not run (mode
// 0700, root's). As OpenSSH's child, the session says only "<shell>:
// Permission denied" and exits 1: the home directory, which the user may
// enter, is not to blame (the child's error does not say which failed).
func TestShellNotExecutableForUser(t *testing.T) {
	needRoot(t)
	var shell string
	e := newEnv(t, func(e *testEnv, s *Server) {
		shell = filepath.Join(e.dir, "rootonly-sh")
		b, err := os.ReadFile("/bin/sh")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(shell, b, 0o700); err != nil {
			t.Fatal(err)
		}
		passwd, _ := os.ReadFile(s.PasswdFile)
		writeFile(t, s.PasswdFile, strings.Replace(string(passwd), "alice:/bin/sh", "alice:"+shell, 1))
	})
	_, errOut, code := run(t, e.login("alice"), "pwd", "")
	if code != 1 || errOut != shell+": Permission denied\n" {
		t.Errorf("a shell alice may not run: stderr %q, exit %d; want only %q and exit 1", errOut, code, shell+": Permission denied")
	}
}

// FuzzInternalSFTP: a forced command is parsed as OpenSSH's internal-sftp only
// when it is that word alone or followed by a blank, and its options are
// accepted only when they are -R, -e, -f VALUE and -l VALUE: -d, -u, -P and -p,
// which restrict what the key may do, are never taken and ignored. -R is never
// read where the command does not hold it.
func FuzzInternalSFTP(f *testing.F) {
	for _, c := range []string{"internal-sftp", "internal-sftp -R", "internal-sftp\t-eR -f AUTH -lINFO", "internal-sftp -d /srv",
		"internal-sftp -f -d", "internal-sftp -l", "internal-sftpx", "internal-sftp -- x", "internal-sftp -Rp open"} {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		args, ok := internalSFTP(cmd)
		if !ok {
			if strings.HasPrefix(cmd, "internal-sftp") && (len(cmd) == len("internal-sftp") || cmd[13] == ' ' || cmd[13] == '\t') {
				t.Fatalf("%q not taken as internal-sftp", cmd)
			}
			return
		}
		opt, err := parseInternalSFTP(args)
		if err != nil {
			return
		}
		if opt.readOnly && !strings.Contains(cmd, "R") {
			t.Fatalf("%q read as -R", cmd)
		}
		for i := 0; i < len(args); i++ {
			a := args[i]
			if len(a) < 2 || a[0] != '-' {
				t.Fatalf("%q: argument %q accepted", cmd, a)
			}
			for j := 1; j < len(a); j++ {
				if !strings.ContainsRune("Refl", rune(a[j])) {
					t.Fatalf("%q: option -%c accepted", cmd, a[j])
				}
				if a[j] == 'f' || a[j] == 'l' {
					if j+1 == len(a) {
						i++ // the next word is its value
					}
					break
				}
			}
		}
	})
}

// TestForcedInternalSFTPWithoutShell: a key limited to internal-sftp, for a
// user not the server's, runs the device's sftp-server as that user without
// the user's shell, as OpenSSH's internal-sftp runs none. Through the shell,
// bash read the user's ~/.bashrc (as it does for ssh's commands), which the
// key could upload over SFTP and so run commands; and an account whose shell
// is nologin had no SFTP at all. A plain key's SFTP still goes through the
// shell, as sshd runs an external sftp-server: a shell that limits the
// account (nologin, git-shell) decides.
func TestForcedInternalSFTPWithoutShell(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct{ nologin, forced bool }{{false, true}, {true, true}, {false, false}, {true, false}} {
		nologin := tc.nologin
		t.Run(fmt.Sprintf("nologin=%v,forced=%v", tc.nologin, tc.forced), func(t *testing.T) {
			var marker, bin string
			e := newEnv(t, func(e *testEnv, s *Server) {
				// alice's shell leaves a mark, then does what a shell or
				// nologin would.
				marker = filepath.Join(e.dir, "home", "alice", "shell-ran") // alice may write there
				shell := filepath.Join(e.dir, "marking-sh")
				script := "#!/bin/sh\necho ran >>" + marker + "\nexec /bin/sh \"$@\"\n"
				if nologin {
					script = "#!/bin/sh\necho ran >>" + marker + "\necho 'This account is currently not available.'\nexit 1\n"
				}
				writeFile(t, shell, script)
				os.Chmod(shell, 0o755)
				passwd, _ := os.ReadFile(s.PasswdFile)
				writeFile(t, s.PasswdFile, strings.Replace(string(passwd), "alice:/bin/sh", "alice:"+shell, 1))
				bin = filepath.Join(e.dir, "sftp-server")
				writeFile(t, bin, "#!/bin/sh\nprintf 'sftp-server as %s' \"$(id -u)\"\n")
				os.Chmod(bin, 0o755)
				s.sftpServerPaths = []string{bin}
			})
			if tc.forced {
				e.writeAuthorizedKeys("alice", authorizedLine(`command="internal-sftp"`, e.key.PublicKey()))
			}
			s := openRaw(t, e.login("alice"))
			if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"})); !ok || err != nil {
				t.Fatalf("subsystem sftp = %v, %v", ok, err)
			}
			out, _ := io.ReadAll(s.ch)
			_, shellRan := os.ReadFile(marker)
			switch {
			case tc.forced && (string(out) != "sftp-server as 1000" || shellRan == nil):
				t.Errorf("internal-sftp: wrote %q, shell ran %v; want sftp-server's output and no shell", out, shellRan == nil)
			case !tc.forced && shellRan != nil:
				// A plain key: the shell decides, as under sshd (a
				// nologin or git-shell account gets no SFTP).
				t.Errorf("subsystem sftp of a plain key: alice's shell did not run (wrote %q)", out)
			case !tc.forced && nologin && string(out) == "sftp-server as 1000":
				t.Errorf("a nologin account got SFTP with a plain key")
			}
		})
	}
}
