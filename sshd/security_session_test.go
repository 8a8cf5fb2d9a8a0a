package sshd

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// procStat returns the process group and session ids of pid from
// /proc/pid/stat (fields 5 and 6; the command name before them may hold
// spaces, so fields are counted after its closing parenthesis).
func procStat(t *testing.T, pid string) (pgrp, sid string) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 4 {
		t.Fatalf("/proc/%s/stat = %q", pid, b)
	}
	return f[2], f[3]
}

// otherUser is a login user whose sessions do not run as root: alice when
// the tests run as root, else the test user "root" (the tests' own uid).
func otherUser() string {
	if os.Geteuid() == 0 {
		return "alice"
	}
	return "root"
}

// TestSessionWithoutPTYLeadsOwnSession: a command without a pty, and an
// external sftp-server, run as the leaders of new sessions, not in the
// server's session, whose controlling terminal they would share (OpenSSH's
// do_exec_no_pty calls setsid). TestNoControllingTerminalFromServer shows
// what that prevents.
func TestSessionWithoutPTYLeadsOwnSession(t *testing.T) {
	_, serverSID := procStat(t, strconv.Itoa(os.Getpid()))
	// check looks at the pid, process group and session a program reported.
	// The shell that runs a command is the leader of both; a program it
	// starts (the shell does not always exec the last command) is in them.
	check := func(t *testing.T, out string, leader bool) {
		t.Helper()
		f := strings.Fields(out)
		if len(f) != 3 {
			t.Fatalf("output %q, want pid, process group and session", out)
		}
		pid, pgrp, sid := f[0], f[1], f[2]
		if sid == serverSID {
			t.Errorf("program %s runs in the server's session %s", pid, sid)
		}
		if pgrp != sid || leader && sid != pid {
			t.Errorf("program %s: process group %s, session %s; want a new session led by the session's program", pid, pgrp, sid)
		}
	}
	const report = `set -- $(cat /proc/$$/stat); echo $$ $5 $6`
	t.Run("command", func(t *testing.T) {
		e := newEnv(t, nil)
		out, errOut, code := run(t, e.login(otherUser()), report+`; true 3<>/dev/tty || :`, "")
		if code != 0 {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		check(t, out, true)
		if !strings.Contains(errOut, "No such device or address") {
			t.Errorf("opening /dev/tty: stderr %q, want ENXIO (no controlling terminal)", errOut)
		}
	})
	t.Run("sftp-server", func(t *testing.T) {
		needRoot(t) // another user's SFTP is the external server
		dir := t.TempDir()
		fake := filepath.Join(dir, "sftp-server")
		if err := os.WriteFile(fake, []byte("#!/bin/sh\n"+report+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, func(_ *testEnv, s *Server) { s.sftpServerPaths = []string{fake} })
		s := openRaw(t, e.login("alice"))
		if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"})); !ok || err != nil {
			t.Fatalf("subsystem sftp = %v, %v", ok, err)
		}
		out, err := io.ReadAll(s.ch)
		if err != nil {
			t.Fatal(err)
		}
		if st := s.wait(t); st != "exit-status 0" {
			t.Errorf("fake sftp-server ended with %s, want exit-status 0", st)
		}
		check(t, string(out), false)
	})
}

// TestNoControllingTerminalFromServer runs the server in a subprocess whose
// controlling terminal is a pty, as an agent started by hand or from an
// inittab line on a serial console: a session's command must not be able to
// open that terminal (and push input into it with TIOCSTI).
func TestNoControllingTerminalFromServer(t *testing.T) {
	if inChild() {
		serveOnTerminal(t)
		return
	}
	ptmx, tty, err := openPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close() // only after the subprocess ended: closing hangs it up
	defer tty.Close()
	out := runChild(t, &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}, tty)
	if !strings.Contains(out, cttyChecked) {
		t.Fatalf("the subprocess checked nothing:\n%s", out)
	}
}

const cttyChecked = "checked: the session could not open the server's terminal"

// serveOnTerminal is the subprocess of TestNoControllingTerminalFromServer.
func serveOnTerminal(t *testing.T) {
	f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("the server has no controlling terminal to protect: %v", err)
	}
	f.Close()
	e := newEnv(t, nil)
	c := e.login(otherUser())
	out, errOut, _ := run(t, c, `if true 3<>/dev/tty; then echo OPENED; fi`, "")
	if strings.Contains(out, "OPENED") {
		t.Fatalf("a session's command opened the server's controlling terminal (stderr %q)", errOut)
	}
	if !strings.Contains(errOut, "No such device or address") {
		t.Fatalf("opening /dev/tty: stderr %q, want ENXIO (no controlling terminal)", errOut)
	}
	t.Log(cttyChecked)
}

// TestPTYOwnership: a session's terminal belongs to the login user with
// group tty and mode 0620 when the group file has a tty group, else with
// the user's own group and mode 0600; never group-writable by the user's
// primary group (everyone in it could type into the session). The group is
// the first line named exactly tty, as getgrnam(3) answers: not a later one,
// nor a group whose name starts so. Without a group file, as without a tty
// group.
func TestPTYOwnership(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name  string
		group string // "": no group file
		want  string
	}{
		{"tty group", "root:x:0:\ntty:x:5:\nalice:x:1000:\n", "1000 5 620"},
		{"no tty group", "root:x:0:\nalice:x:1000:\n", "1000 1000 600"},
		{"first tty group", "root:x:0:\nttyusb:x:20:\ntty:x:5:\ntty:x:0:\nalice:x:1000:\n", "1000 5 620"},
		{"no group file", "", "1000 1000 600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(e *testEnv, s *Server) {
				s.GroupFile = filepath.Join(e.dir, "group-pty")
				if tc.group != "" {
					writeFile(t, s.GroupFile, tc.group)
				}
			})
			s, err := e.login("alice").NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.RequestPty("xterm", 24, 80, nil); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var out []byte
			go func() {
				defer close(done)
				out, err = s.Output(`stat -c '%u %g %a' "$(tty)"`)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("stat on the pty hung")
			}
			if err != nil {
				t.Fatalf("stat: %v (%q)", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("pty owner, group and mode = %q, want %q", got, tc.want)
			}
		})
	}
}
