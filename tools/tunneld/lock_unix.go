//go:build unix

package tunneld

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// LockDir takes an exclusive, non-blocking flock(2) on the directory dir, creating
// it if needed (mode 0700); while another holds it, the error wraps
// ErrDataDirInUse. New takes it on Config.DataDir, so that two servers never share
// one state file: each rewrites tunnels.json from its own memory, and the last
// writer would silently drop the other's tunnels, whose tokens were already handed
// out. (The lab takes it on its state directory.) The lock lasts until the returned
// file is closed, or the process ends; the file is close-on-exec, so children do
// not inherit it.
//
// The directory opened must belong to root or to this user and must not be
// writable by group or others (checkDataDir's rules), checked on the open file:
// MkdirAll takes a directory as it finds it, and in a sticky directory such as
// /tmp another user can make dir between a check of the path and the MkdirAll.
func LockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory %s: %w", dir, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("locking data directory %s: %w", dir, err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkDir(dir, dir, fi, os.Geteuid(), false)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, fmt.Errorf("locking data directory %s: %w", dir, ErrDataDirInUse)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking data directory %s: %w", dir, err)
	}
	return f, nil
}

// checkDataDir refuses a data directory that another local user could change,
// as the agent refuses its own: tunnels.json holds every tunnel's tokens and the
// notifications still to send, so whoever can replace it plants tunnels whose
// source tokens they know, announced to devices at the next start. The
// directory and every directory its path passes through must belong to root or
// to tunneld's user and must not be writable by group or others; a directory
// above with the sticky bit (/tmp) is allowed, since others cannot rename what
// is in it. Symbolic links are followed as the kernel follows them, and each
// must itself belong to root or tunneld's user: whoever owns one chooses where
// the state goes. It is checked before anything is made: of a directory not
// there yet, what exists above it (checkLocked checks again once it is made).
// It returns the path with its links resolved, which tunneld then uses: a link
// checked once and followed at each save could be pointed elsewhere in between
// by whoever may change it.
func checkDataDir(dir string) (string, error) {
	abs := dir
	if !filepath.IsAbs(dir) {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("data directory %s: %w", dir, err)
		}
		abs = wd + "/" + dir // not filepath.Join, which would clean ".." across a link
	}
	euid := os.Geteuid()
	cur, todo, links := "/", components(abs), 0
	for len(todo) > 0 {
		if err := safeDir(dir, cur, euid, true); err != nil {
			return "", err
		}
		name := todo[0]
		todo = todo[1:]
		if name == ".." {
			cur = filepath.Dir(cur) // cur holds no links: its parent is the real one, checked already
			continue
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return filepath.Join(append([]string{next}, todo...)...), nil // made by LockDir
		case err != nil:
			return "", fmt.Errorf("data directory %s: %w", dir, err)
		case fi.Mode()&fs.ModeSymlink == 0:
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("data directory %s: too many levels of symbolic links", dir)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != euid {
			return "", fmt.Errorf("data directory %s: the link %s belongs to uid %d, not to root or this user (uid %d): "+
				"whoever owns it chooses where the state file, which holds every tunnel's tokens, is kept", dir, next, st.Uid, euid)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", fmt.Errorf("data directory %s: %w", dir, err)
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		todo = append(components(target), todo...)
	}
	if err := safeDir(dir, cur, euid, false); err != nil {
		return "", err
	}
	return cur, nil
}

// checkLocked checks the path of the data directory dir again once LockDir
// has made it, opened it as f (checking what it opened) and locked it:
// checkDataDir ran before, and in a sticky directory such as /tmp another user
// may make a directory on the way to dir, or put a link in its place, between
// the two. Checked again now that all of it exists, the path must pass and
// still name f: from then on, only root or tunneld's user can change what it
// names.
func checkLocked(f *os.File, dir string) error {
	real, err := checkDataDir(dir)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	if pfi, err := os.Lstat(real); real != dir || err != nil || !os.SameFile(fi, pfi) {
		return fmt.Errorf("data directory %s was replaced while tunneld made it (by another user, in a shared directory?); "+
			"the state file holds every tunnel's tokens: start again, or choose a directory only root or this user can change", dir)
	}
	return nil
}

// safeDir applies checkDataDir's rules to directory p, on the way to the data
// directory dir; above allows a sticky directory that others can write.
func safeDir(dir, p string, euid int, above bool) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	return checkDir(dir, p, fi, euid, above)
}

// checkDir is safeDir on what fi describes.
func checkDir(dir, p string, fi fs.FileInfo, euid int, above bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("data directory %s: %s is not a directory", dir, p)
	case ok && st.Uid != 0 && int(st.Uid) != euid:
		return fmt.Errorf("data directory %s: %s belongs to uid %d (mode %s), not to root or this user (uid %d): "+
			"the state file holds every tunnel's tokens", dir, p, st.Uid, octal(fi.Mode()), euid)
	case fi.Mode().Perm()&0o022 != 0 && !(above && fi.Mode()&fs.ModeSticky != 0):
		return fmt.Errorf("data directory %s: %s is writable by group or others (mode %s): "+
			"the state file holds every tunnel's tokens; choose a directory only root or this user can change", dir, p, octal(fi.Mode()))
	}
	return nil
}

// octal is m's permission bits in octal as chmod takes them, with the sticky
// bit (/tmp is 1777).
func octal(m fs.FileMode) string {
	o := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		o |= 0o1000
	}
	return fmt.Sprintf("%04o", o)
}

// components splits a path into its names, without empty ones and ".".
func components(p string) []string {
	var names []string
	for _, n := range strings.Split(p, "/") {
		if n != "" && n != "." {
			names = append(names, n)
		}
	}
	return names
}
