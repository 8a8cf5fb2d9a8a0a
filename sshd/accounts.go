package sshd

// The login accounts of the passwd, group and shadow files, which the server
// also reads when it starts (CheckLogins). The file's name puts it first in the
// package: go build compiles a package's files in name order, the linker lays
// out their code in that order, and the kernel maps a binary's code in 64 KiB
// windows around each page that runs (docs/size.md, "Memory on the QEMU
// boards"). As users.go, last in the package, this start-time code was alone in
// a window of session code, which an idle agent then held: 8,140-8,144 kB idle
// on the mipsel board, against 8,072 kB with the file first.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrUnknownUser is returned for a login name that may not log in: not in
// the passwd file, or (when the server is not root) not the server's own user.
var ErrUnknownUser error = &errorString{"sshd: unknown user"}

// ErrUserNotAllowed is returned for a user of the passwd file whose account
// is disabled: locked or expired in the shadow file, or with a login shell
// that does not exist or is not executable. As with OpenSSH built without
// PAM (auth.c, allowed_user), every authentication method is refused.
var ErrUserNotAllowed error = &errorString{"sshd: user not allowed"}

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
	_     [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Name  string
	UID   uint32
	GID   uint32
	Home  string
	Shell string
	// Locked: the passwd file's own password field starts with "!", which
	// counts only when the shadow file has no entry for the user (devices
	// without shadow passwords lock accounts so).
	Locked bool
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
		out = append(out, passwdEntry{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: f[5], Shell: f[6],
			Locked: strings.HasPrefix(f[1], "!")})
	})
	return out, sk, err
}

// eachGroup calls fn with the name, id and member list of each group(5) line,
// skipping lines as parsePasswd does.
func eachGroup(r io.Reader, fn func(name string, gid uint32, members string)) (userFileSkips, error) {
	return eachUserLine(r, func(line string) {
		if line == "" || strings.HasPrefix(line, "#") {
			return
		}
		f := strings.Split(line, ":")
		if len(f) != 4 {
			return
		}
		if gid, err := strconv.ParseUint(f[2], 10, 32); err == nil {
			fn(f[0], uint32(gid), f[3])
		}
	})
}

// parseGroups returns the ids of the groups in group(5) data that list name as
// a member.
func parseGroups(r io.Reader, name string) ([]uint32, userFileSkips, error) {
	var out []uint32
	sk, err := eachGroup(r, func(_ string, gid uint32, members string) {
		for _, m := range strings.Split(members, ",") {
			if strings.TrimSpace(m) == name {
				out = append(out, gid)
				return
			}
		}
	})
	return out, sk, err
}

// logSkips logs what a read of path, the file fi, left out: the number of
// over-long lines and of the first, never their content. It warns once per
// version of the file (warnLog).
func (s *Server) logSkips(path string, fi os.FileInfo, sk userFileSkips) {
	if sk.long == 0 && !sk.truncated {
		return
	}
	s.warnLog(path, fi, nil)("user file partly ignored", "file", path,
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

// shadowPath is the shadow file: "shadow" next to the passwd file, so
// /etc/shadow unless PasswdFile is set (only tests and labs set it; they
// then control the shadow file too and never read the real one).
func (s *Server) shadowPath() string {
	if s.PasswdFile != "" {
		return filepath.Join(filepath.Dir(s.PasswdFile), "shadow")
	}
	return "/etc/shadow"
}

func (s *Server) euid() int {
	if s.geteuid != nil {
		return s.geteuid()
	}
	return os.Geteuid()
}

// readPasswd reads the passwd file.
func (s *Server) readPasswd() ([]passwdEntry, error) {
	f, fi, err := openRegular(s.passwdPath())
	if err != nil {
		return nil, wrapErr("reading users", err)
	}
	defer f.Close()
	entries, sk, err := parsePasswd(f)
	s.logSkips(s.passwdPath(), fi, sk)
	if err != nil {
		return nil, wrapErr("reading "+s.passwdPath(), err)
	}
	return entries, nil
}

// UserName is the name of user uid in the passwd file path as the server
// reads that file: the first entry with that uid, or ErrUnknownUser. It is
// for a program that must name the user the server logs in as itself (the
// lab's ssh line), not through NSS or $USER, which may give a name the
// server does not know.
func UserName(path string, uid uint32) (string, error) {
	f, _, err := openRegular(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	entries, _, err := parsePasswd(f)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.UID == uid {
			return e.Name, nil
		}
	}
	return "", ErrUnknownUser
}

// lookupUser returns the account name logs in as, or an error wrapping
// ErrUnknownUser or ErrUserNotAllowed. As root any user in the passwd file
// may log in; otherwise only the user whose uid is the server's effective
// uid. Either way, disabled accounts are refused (checkAccount).
func (s *Server) lookupUser(name string) (*account, error) {
	entries, err := s.readPasswd()
	if err != nil {
		return nil, err
	}
	e := findEntry(entries, name)
	if e == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownUser, name)
	}
	euid := s.euid()
	if euid != 0 && int(e.UID) != euid {
		return nil, fmt.Errorf("%w %q: the server runs as uid %d and can only log in its own user", ErrUnknownUser, name, euid)
	}
	if err := s.checkAccount(e, s.readShadow(func(n string) bool { return n == name })); err != nil {
		return nil, err
	}
	a := &account{Name: e.Name, UID: e.UID, GID: e.GID, Home: e.Home, Shell: e.Shell}
	s.fillGroups(a)
	return a, nil
}

// fillGroups sets a.Groups: a.GID, then the groups the group file lists a.Name
// in (none if it cannot be read). (Set in a, not returned: a slice grown
// here and returned would cost a runtime.moveSliceNoScan in the binary.)
func (s *Server) fillGroups(a *account) {
	a.Groups = []uint32{a.GID}
	if g, fi, err := openRegular(s.groupPath()); err == nil {
		extra, sk, err := parseGroups(g, a.Name)
		g.Close()
		s.logSkips(s.groupPath(), fi, sk)
		if err == nil {
			for _, id := range extra {
				if id != a.GID {
					a.Groups = append(a.Groups, id)
				}
			}
		}
	}
}

// homeOf returns the home directory of user in the passwd file, whether or
// not user may log in, as the shell's ~user expands.
func (s *Server) homeOf(user string) (string, bool) {
	entries, _ := s.readPasswd()
	if e := findEntry(entries, user); e != nil {
		return e.Home, true
	}
	return "", false
}

// findEntry returns the passwd entry of name, or nil.
func findEntry(entries []passwdEntry, name string) *passwdEntry {
	for i := range entries {
		if entries[i].Name == name {
			return &entries[i]
		}
	}
	return nil
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

// shellOf is the shell a passwd shell field names: an empty one means /bin/sh
// (passwd(5)). lookupUser has refused accounts whose shell is not an
// executable file.
func shellOf(field string) string {
	if field == "" {
		return "/bin/sh"
	}
	return field
}

// checkShell refuses a login shell that is not an executable regular file,
// as OpenSSH does ("User x not allowed because shell y does not exist"):
// a missing shell is how accounts are disabled, and replacing it by /bin/sh
// (as this server once did) let such accounts log in.
func checkShell(shell string) error {
	fi, err := os.Stat(shell)
	switch {
	case err != nil:
		return errors.New("shell " + shell + " does not exist")
	case !fi.Mode().IsRegular():
		return errors.New("shell " + shell + " is not a regular file")
	case fi.Mode()&0o111 == 0:
		return errors.New("shell " + shell + " is not executable")
	}
	return nil
}

// shadowEntry is what the login checks use of a shadow(5) line.
type shadowEntry struct {
	_         [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Locked    bool      // the password field starts with "!"
	ExpireDay int64     // the account expires on this day since 1970-01-01; -1: never
}

// parseShadow returns the shadow(5) entries, in data r, of the users want
// accepts: the first line of each. Only the password field's "!" prefix
// (passwd -l, usermod -L) and the expiry date are looked at: "*" or an empty
// field only means there is no password, and key logins must keep working
// (Debian's root:*). A field that is not a number means no expiry date, as an
// empty one does.
func parseShadow(r io.Reader, want func(name string) bool) (map[string]shadowEntry, userFileSkips, error) {
	out := map[string]shadowEntry{}
	sk, err := eachUserLine(r, func(line string) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.HasPrefix(line, "#") || !want(name) {
			return
		}
		if _, seen := out[name]; seen {
			return
		}
		e := shadowEntry{Locked: strings.HasPrefix(rest, "!"), ExpireDay: -1}
		if f := strings.Split(rest, ":"); len(f) > 6 {
			if d, err := strconv.ParseInt(f[6], 10, 64); err == nil && d >= 0 {
				e.ExpireDay = d
			}
		}
		out[name] = e
	})
	return out, sk, err
}

// readShadow returns the shadow entries of the users want accepts, read in
// one pass. A shadow file that does not exist or cannot be read (many
// devices have none) means no entries; one that is not a regular file is
// ignored, with a warning once while it stays so (warnLog).
func (s *Server) readShadow(want func(name string) bool) map[string]shadowEntry {
	path := s.shadowPath()
	f, fi, err := openRegular(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission):
		return nil
	case err != nil:
		s.warnLog(path, fi, err)("shadow file ignored", "path", path, "error", err)
		return nil
	}
	defer f.Close()
	entries, sk, err := parseShadow(f, want)
	if err != nil {
		s.warnLog(path, fi, err)("reading shadow file", "path", path, "error", err)
	} else {
		s.logSkips(path, fi, sk)
	}
	return entries
}

// checkAccount refuses a disabled account with an error wrapping
// ErrUserNotAllowed that says why, like OpenSSH without PAM: a locked or
// expired shadow entry (without one, a passwd entry whose password field
// starts with "!"), or a shell that does not exist. Expiry is as in
// OpenSSH's auth_shadow_acctexpired: the day after the expiry day, by the
// server's clock (a device whose clock still says 1970 expires nothing).
//
// shadow holds the shadow entries read for e's user, if any (readShadow).
func (s *Server) checkAccount(e *passwdEntry, shadow map[string]shadowEntry) error {
	notAllowed := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrUserNotAllowed, e.Name, why)
	}
	if sh, ok := shadow[e.Name]; ok {
		if sh.Locked {
			return notAllowed("account is locked")
		}
		if today := s.clock().Unix() / (24 * 60 * 60); sh.ExpireDay >= 0 && today > sh.ExpireDay {
			return notAllowed("account has expired")
		}
	} else if e.Locked {
		return notAllowed("account is locked (in the passwd file)")
	}
	if err := checkShell(shellOf(e.Shell)); err != nil {
		return notAllowed(err.Error())
	}
	return nil
}

// groupID returns the id of the group called name in the group file.
func (s *Server) groupID(name string) (uint32, bool) {
	f, fi, err := openRegular(s.groupPath())
	if err != nil {
		return 0, false
	}
	defer f.Close()
	var (
		gid   uint32
		found bool
	)
	sk, _ := eachGroup(f, func(g string, id uint32, _ string) {
		if !found && g == name {
			gid, found = id, true
		}
	})
	s.logSkips(s.groupPath(), fi, sk)
	return gid, found
}

// workDir is where a session starts: the home directory if it exists, else /.
func workDir(a *account) string {
	if homeError(a.Home) == nil {
		return a.Home
	}
	return "/"
}

// homeError is why home is no directory to start in, as chdir(2) would say
// (ENOENT, ENOTDIR), or nil.
func homeError(home string) error {
	fi, err := os.Stat(home)
	switch {
	case err != nil:
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return errno
		}
		return err
	case !fi.IsDir():
		return syscall.ENOTDIR
	}
	return nil
}
