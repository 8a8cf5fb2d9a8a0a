package sshd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrUnknownUser is returned for a login name that may not log in: not in
// the passwd file, or (when the server is not root) not the server's own user.
var ErrUnknownUser = errors.New("sshd: unknown user")

// account is a login user as read from the passwd and group files.
type account struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups from the group file, primary first
	Home   string
	Shell  string
}

// passwdEntry is one line of /etc/passwd.
type passwdEntry struct {
	Name  string
	UID   uint32
	GID   uint32
	Home  string
	Shell string
}

// Bounds on reading the passwd and group files, which are read at every
// login.
const (
	// maxUserLine is the longest line used. A longer one is skipped and the
	// lines after it are read (bufio.Scanner's 64 KiB limit used to fail
	// every login instead). A group listing thousands of members stays
	// well under it.
	maxUserLine = 1 << 20

	// maxUserFile is how much of a file is read: 4 MiB, tens of thousands
	// of users, so that a file grown by mistake cannot take a small
	// device's memory at every login. A line that does not end within it
	// is dropped with the rest of the file.
	maxUserFile = 4 << 20
)

// userFileSkips is what reading a passwd or group file left out.
type userFileSkips struct {
	long      int  // lines longer than maxUserLine
	firstLong int  // number of the first of them
	truncated bool // the file goes on past maxUserFile
}

// eachUserLine calls fn with each line of passwd or group data, trimmed of
// surrounding white space, within the bounds above.
func eachUserLine(r io.Reader, fn func(line string)) (userFileSkips, error) {
	var sk userFileSkips
	_, truncated, err := eachLine(r, maxUserFile, maxUserLine, func(n int, line []byte, tooLong bool) {
		if !tooLong {
			fn(strings.TrimSpace(string(line)))
			return
		}
		if sk.long == 0 {
			sk.firstLong = n
		}
		sk.long++
	})
	sk.truncated = truncated
	return sk, err
}

// parsePasswd reads passwd(5) lines. Comments, blank lines, lines with the
// wrong number of fields or bad numbers, and lines over maxUserLine are
// skipped: a device's passwd is often hand-edited and one bad line must not
// lock everyone out.
func parsePasswd(r io.Reader) ([]passwdEntry, userFileSkips, error) {
	var out []passwdEntry
	sk, err := eachUserLine(r, func(line string) {
		if line == "" || strings.HasPrefix(line, "#") {
			return
		}
		f := strings.Split(line, ":")
		if len(f) != 7 || f[0] == "" {
			return
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return
		}
		out = append(out, passwdEntry{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: f[5], Shell: f[6]})
	})
	return out, sk, err
}

// parseGroups returns the ids of the groups in group(5) data that list name as
// a member, skipping lines as parsePasswd does.
func parseGroups(r io.Reader, name string) ([]uint32, userFileSkips, error) {
	var out []uint32
	sk, err := eachUserLine(r, func(line string) {
		if line == "" || strings.HasPrefix(line, "#") {
			return
		}
		f := strings.Split(line, ":")
		if len(f) != 4 {
			return
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return
		}
		for _, m := range strings.Split(f[3], ",") {
			if strings.TrimSpace(m) == name {
				out = append(out, uint32(gid))
				return
			}
		}
	})
	return out, sk, err
}

// logSkips logs, once per read of path, what was left out of it: the
// number of over-long lines and of the first, never their content.
func (s *Server) logSkips(path string, sk userFileSkips) {
	if sk.long == 0 && !sk.truncated {
		return
	}
	s.log().Warn("user file partly ignored", "file", path,
		"long_lines", sk.long, "first_long_line", sk.firstLong, "max_line_bytes", maxUserLine,
		"truncated", sk.truncated, "max_file_bytes", maxUserFile)
}

func (s *Server) passwdPath() string {
	if s.PasswdFile != "" {
		return s.PasswdFile
	}
	return "/etc/passwd"
}

func (s *Server) groupPath() string {
	if s.GroupFile != "" {
		return s.GroupFile
	}
	return "/etc/group"
}

func (s *Server) euid() int {
	if s.geteuid != nil {
		return s.geteuid()
	}
	return os.Geteuid()
}

// readPasswd reads the passwd file.
func (s *Server) readPasswd() ([]passwdEntry, error) {
	f, _, err := openRegular(s.passwdPath())
	if err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	defer f.Close()
	entries, sk, err := parsePasswd(f)
	s.logSkips(s.passwdPath(), sk)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.passwdPath(), err)
	}
	return entries, nil
}

// lookupUser returns the account name logs in as, or an error wrapping
// ErrUnknownUser. As root any user in the passwd file may log in; otherwise
// only the user whose uid is the server's effective uid.
func (s *Server) lookupUser(name string) (*account, error) {
	entries, err := s.readPasswd()
	if err != nil {
		return nil, err
	}
	var e *passwdEntry
	for i := range entries {
		if entries[i].Name == name {
			e = &entries[i]
			break
		}
	}
	if e == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownUser, name)
	}
	euid := s.euid()
	if euid != 0 && int(e.UID) != euid {
		return nil, fmt.Errorf("%w %q: the server runs as uid %d and can only log in its own user", ErrUnknownUser, name, euid)
	}
	a := &account{Name: e.Name, UID: e.UID, GID: e.GID, Home: e.Home, Shell: e.Shell, Groups: []uint32{e.GID}}
	if g, _, err := openRegular(s.groupPath()); err == nil {
		extra, sk, err := parseGroups(g, name)
		g.Close()
		s.logSkips(s.groupPath(), sk)
		if err == nil {
			for _, id := range extra {
				if id != e.GID {
					a.Groups = append(a.Groups, id)
				}
			}
		}
	}
	return a, nil
}

// credential is what a child process runs as: the account's ids when the
// server is root, nil (the server's own ids) otherwise.
func (s *Server) credential(a *account) *syscall.Credential {
	if s.euid() != 0 {
		return nil
	}
	return &syscall.Credential{Uid: a.UID, Gid: a.GID, Groups: a.Groups}
}

// sameUser reports whether in-process file services (SFTP, scp) may act for
// a: they run with the server's own privileges, so only when a is the server's
// user.
func (s *Server) sameUser(a *account) bool {
	return int(a.UID) == s.euid()
}

// loginShell returns a's shell if it is an executable file, else /bin/sh
// (many devices list /bin/bash or /bin/ash in passwd and ship only BusyBox).
func loginShell(a *account) string {
	if a.Shell != "" {
		if fi, err := os.Stat(a.Shell); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return a.Shell
		}
	}
	return "/bin/sh"
}

// workDir is where a session starts: the home directory if it exists, else /.
func workDir(a *account) string {
	if fi, err := os.Stat(a.Home); err == nil && fi.IsDir() {
		return a.Home
	}
	return "/"
}
