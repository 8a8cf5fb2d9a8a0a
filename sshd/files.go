package sshd

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// errNotRegular is wrapped by openRegular's error for a path that is not a
// regular file.
var errNotRegular error = &errorString{"not a regular file"}

// openRegular opens a file the server reads at start or at login (host keys,
// authorized_keys, trusted CA keys, passwd, group) and returns it only if it
// is a regular file; anything else is an error wrapping errNotRegular, before
// a byte is read (returned with the file's FileInfo).
//
// A FIFO would block open(2) until some writer appears, possibly forever,
// taking a thread with it at every login; a device could be read without end
// or have side effects when opened. So the path is first stat'ed, which
// refuses those without opening them, then opened with O_NONBLOCK (a FIFO's
// open returns at once; for a regular file the flag changes nothing) and
// O_NOCTTY, and what was opened is checked again with fstat, so swapping the
// file in between gains nothing. Symbolic links are followed, as OpenSSH
// does for these files; what they point to is checked (and, for
// authorized_keys, the directories above the path by safePath). The file is
// opened with O_CLOEXEC, so no session's program inherits it.
func openRegular(path string) (*os.File, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if err := checkRegular(path, fi); err != nil {
		return nil, fi, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	if fi, err = f.Stat(); err == nil {
		err = checkRegular(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, fi, err
	}
	return f, fi, nil
}

func checkRegular(path string, fi os.FileInfo) error {
	if fi.Mode().IsRegular() {
		return nil
	}
	return &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w but a %s", errNotRegular, fileKind(fi.Mode()))}
}

// fileKind names the type of a file that is not a regular one, for logs.
// m comes from stat(2) or fstat(2), so it is never a symbolic link.
func fileKind(m os.FileMode) string {
	switch t := m.Type(); t {
	case fs.ModeNamedPipe:
		return "named pipe"
	case fs.ModeDir:
		return "directory"
	case fs.ModeSocket:
		return "socket"
	case fs.ModeDevice | fs.ModeCharDevice:
		return "character device"
	case fs.ModeDevice:
		return "block device"
	default:
		return "file of type " + t.String()
	}
}

// errTooLarge is wrapped by readAllLimit's error for a file larger than its
// limit.
var errTooLarge error = &errorString{"file too large"}

// readAllLimit reads f to its end, or fails with an error wrapping
// errTooLarge once more than limit bytes come.
func readAllLimit(f *os.File, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
	}
	return data, nil
}

// realPath is OpenSSH's sftp_realpath: p, absolute or relative to the
// directory cwd (taken as getcwd(3) has it: its real path), with every
// symbolic link resolved and "." and ".." taken against the real path before
// them, as the kernel takes them, not lexically. Each name but
// the last must exist, and the kernel's lstat(2) of the names after it finds
// a directory there (ENOTDIR); a last one that does not exist is named as it
// is (sftp's put -r and scp -r then make it). A trailing "/" makes the name
// before it not the last, which must then exist, but may be a file. As there,
// at most 33 links are followed, and a path of PATH_MAX bytes or more, sent
// or resolved, is ENAMETOOLONG. link, unless nil, is called with each
// symbolic link before it is followed (its real path and lstat(2)), and with
// each directory a ".." leaves (its real path, with a "/" after it, and a nil
// st); an error it returns is realPath's: safeWalk checks who could change
// the link, userSteers who could change where the path leads.
// It is here, not with the SFTP code, because safeWalk runs it at every start
// (CheckLogins), and the start's code sorts first (start.go).
func realPath(cwd, p string, link func(name string, st *syscall.Stat_t) error) (string, error) {
	resolved, left := cwd, p
	if rest, ok := strings.CutPrefix(p, "/"); ok {
		resolved, left = "/", rest
	} else if r, err := realPath("/", cwd, nil); err != nil {
		return "", err
	} else {
		resolved = r
	}
	if len(left) >= sftpPathMax || len(resolved) >= sftpPathMax {
		return "", syscall.ENAMETOOLONG
	}
	links := 0
	for left != "" {
		name, rest, more := strings.Cut(left, "/")
		left = rest
		if !strings.HasSuffix(resolved, "/") {
			if resolved += "/"; len(resolved) >= sftpPathMax {
				return "", syscall.ENAMETOOLONG
			}
		}
		switch name {
		case "", ".":
			continue
		case "..":
			if link != nil {
				if err := link(resolved, nil); err != nil {
					return "", err
				}
			}
			resolved = parentDir(resolved)
			continue
		}
		if resolved += name; len(resolved) >= sftpPathMax {
			return "", syscall.ENAMETOOLONG
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(resolved, &st); err != nil {
			if err == syscall.ENOENT && !more {
				return resolved, nil
			}
			return "", err
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			continue
		}
		if links++; links > 33 { // SYMLOOP_MAX (32) + 1
			return "", syscall.ELOOP
		}
		if link != nil {
			if err := link(resolved, &st); err != nil {
				return "", err
			}
		}
		target, err := os.Readlink(resolved)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			resolved = "/"
		} else {
			resolved = parentDir(resolved)
		}
		if more {
			if target = strings.TrimSuffix(target, "/") + "/" + left; len(target) >= sftpPathMax {
				return "", syscall.ENAMETOOLONG
			}
		}
		left = target
	}
	if len(resolved) > 1 {
		resolved = strings.TrimSuffix(resolved, "/")
	}
	return resolved, nil
}

// parentDir drops the last name of the real path p, "/" excepted: "/a/b"
// and "/a/b/" are "/a/".
func parentDir(p string) string {
	if len(p) <= 1 {
		return p
	}
	return p[:strings.LastIndexByte(p[:len(p)-1], '/')+1]
}

// userSteers reports whether the user uid could change which file path
// leads to: whether, as realPath resolves it, a name is looked up in a
// directory the user owns, or in one that group or others may write (the
// user's group or not) unless it is sticky (/tmp) and the entry there is not
// the user's. It looks at the directories above the real path, above each
// symbolic link followed and above each directory a ".." leaves, up to /:
// each directory a name is looked up in is one of them. A path it cannot
// resolve, or a directory it cannot stat, counts as the user's, and a last
// name that is not there as the user's entry.
//
// The user cannot race the answer: the way to the first directory the user
// could change is not the user's to change, so a path that leads through one
// does whatever the user does, and one that leads through none stays so.
func userSteers(path string, uid uint32) bool {
	cwd := "/" // not filepath.Abs, which takes a ".." away with the name before it
	if !strings.HasPrefix(path, "/") {
		var err error
		if cwd, err = os.Getwd(); err != nil {
			return true
		}
	}
	steers := false
	// up looks at the directories above name, whose lstat(2) is st.
	up := func(name string, st *syscall.Stat_t) {
		for name != "/" && !steers {
			dir := filepath.Dir(name)
			var dst syscall.Stat_t
			if syscall.Stat(dir, &dst) != nil {
				steers = true
				return
			}
			steers = dst.Uid == uid || dst.Mode&0o022 != 0 && (dst.Mode&syscall.S_ISVTX == 0 || st.Uid == uid)
			name, st = dir, &dst
		}
	}
	real, err := realPath(cwd, path, func(name string, st *syscall.Stat_t) error {
		if st == nil { // a directory ".." leaves
			name = filepath.Clean(name)
			st = new(syscall.Stat_t)
			if syscall.Stat(name, st) != nil {
				steers = true
				return nil
			}
		}
		up(name, st)
		return nil
	})
	if err != nil {
		return true
	}
	var st syscall.Stat_t
	if syscall.Lstat(real, &st) != nil {
		st.Uid = uid
	}
	up(real, &st)
	return steers
}
