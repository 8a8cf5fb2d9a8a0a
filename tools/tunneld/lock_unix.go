//go:build unix

package tunneld

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
func LockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory %s: %w", dir, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("locking data directory %s: %w", dir, err)
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
// directory (symbolic links resolved) and every directory above it must belong
// to root or to tunneld's user and must not be writable by group or others; a
// directory above with the sticky bit (/tmp) is allowed, since others cannot
// rename what is in it. It is checked before anything is made: of a directory
// not there yet, what exists above it. It returns the path with its links
// resolved, which tunneld then uses: a link checked once and followed at each
// save could be pointed elsewhere in between by whoever may change it.
func checkDataDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("data directory %s: %w", dir, err)
	}
	real, rest, above := abs, "", false
	for {
		r, err := filepath.EvalSymlinks(real)
		if err == nil {
			real = r
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || real == filepath.Dir(real) {
			return "", fmt.Errorf("data directory %s: %w", dir, err)
		}
		real, rest, above = filepath.Dir(real), filepath.Join(filepath.Base(real), rest), true
	}
	resolved := filepath.Join(real, rest)
	euid := os.Geteuid()
	for p := real; ; p, above = filepath.Dir(p), true {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("data directory %s: %w", dir, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		switch {
		case !fi.IsDir():
			return "", fmt.Errorf("data directory %s: %s is not a directory", dir, p)
		case ok && st.Uid != 0 && int(st.Uid) != euid:
			return "", fmt.Errorf("data directory %s: %s belongs to uid %d, not to root or this user (uid %d): "+
				"the state file holds every tunnel's tokens", dir, p, st.Uid, euid)
		case fi.Mode().Perm()&0o022 != 0 && !(above && fi.Mode()&fs.ModeSticky != 0):
			return "", fmt.Errorf("data directory %s: %s is writable by group or others (mode %04o): "+
				"the state file holds every tunnel's tokens; choose a directory only root or this user can change", dir, p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return resolved, nil
		}
	}
}
