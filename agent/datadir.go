package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// checkDataDir refuses a data directory that another local user could change:
// it holds the SSH host key and the live tunnels' tokens, so whoever can replace
// them chooses the device's SSH identity or plants tunnels. The directory and
// each directory above it must belong to root or to the agent's user, and must not
// be writable by group or others; a directory above with the sticky bit (/tmp) is
// allowed, since others cannot rename what is in it. A data directory that does
// not exist yet is fine: the agent makes it, mode 0700. The same holds for its
// tunnels directory, whose files the agent dials at start.
//
// Symbolic links are followed the way the kernel resolves the path, and every
// directory that resolution passes through is checked: the one holding each link
// (whoever can change it can point the link elsewhere) and every directory above
// the link's target. A link must itself belong to root or the agent's user (in a
// sticky directory its owner may replace it). ".." is taken as the kernel takes
// it, from where the resolution has got to, not by cleaning the path's text. So
// once the check passes, only root or the agent's user can change what the path
// names.
func checkDataDir(dir string) error {
	euid := os.Geteuid()
	tunnels := filepath.Join(dir, "tunnels")
	if fi, err := os.Lstat(tunnels); err == nil {
		if err := safeDir(tunnels, fi, euid, false); err != nil {
			return err
		}
	}
	abs := dir
	if !filepath.IsAbs(dir) {
		wd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("data_dir: %w", err)
		}
		abs = wd + "/" + dir // not filepath.Join, which would clean "..": see above
	}
	cur, todo, links := "/", components(abs), 0
	fi, err := os.Lstat(cur)
	for err == nil && len(todo) > 0 {
		if err = safeDir(cur, fi, euid, true); err != nil {
			return err
		}
		name := todo[0]
		todo = todo[1:]
		if name == ".." {
			cur = filepath.Dir(cur) // cur holds no links, so its parent is the real one, checked already
			fi, err = os.Lstat(cur)
			continue
		}
		next := filepath.Join(cur, name)
		nfi, nerr := os.Lstat(next)
		switch {
		case errors.Is(nerr, fs.ErrNotExist) && len(todo) == 0:
			return nil // the data directory itself, made later; cur is checked
		case nerr != nil:
			return fmt.Errorf("data_dir: %w", nerr)
		case nfi.Mode()&fs.ModeSymlink != 0:
			if links++; links > 40 {
				return fmt.Errorf("data_dir: %s: too many levels of symbolic links", dir)
			}
			if st, ok := nfi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != euid {
				return fmt.Errorf("data_dir: the link %s belongs to uid %d, not to root or the agent's user (uid %d)", next, st.Uid, euid)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return fmt.Errorf("data_dir: %w", err)
			}
			if filepath.IsAbs(target) {
				cur = "/"
				fi, err = os.Lstat(cur)
				if err != nil {
					return fmt.Errorf("data_dir: %w", err)
				}
			}
			todo = append(components(target), todo...)
			continue
		}
		cur, fi = next, nfi
	}
	if err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	return safeDir(cur, fi, euid, false) // where the resolution ends is the data directory
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

// safeDir applies checkDataDir's rules to directory p; stickyOK allows a sticky
// directory that others can write (one above the data directory).
func safeDir(p string, fi fs.FileInfo, euid int, stickyOK bool) error {
	if !fi.IsDir() {
		return fmt.Errorf("data_dir: %s is not a directory", p)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && st.Uid != 0 && int(st.Uid) != euid {
		return fmt.Errorf("data_dir: %s belongs to uid %d, not to root or the agent's user (uid %d)", p, st.Uid, euid)
	}
	sticky := stickyOK && fi.Mode()&fs.ModeSticky != 0
	if fi.Mode().Perm()&0o022 != 0 && !sticky {
		return fmt.Errorf("data_dir: %s is writable by group or others (mode %04o); the host key and tunnel tokens need a directory only root can change (chmod go-w)", p, fi.Mode().Perm())
	}
	return nil
}

// lockWait is how long a starting agent waits for another to leave the data
// directory: a restart can start the new agent while the old one is still
// ending its sessions (it exits within 5 s).
const lockWait = 10 * time.Second

// lockDataDir takes the agent's lock on dir, which it makes if missing (mode
// 0700). Two agents on one data directory take the MQTT session from each other
// and dial each other's saved tunnels, each cutting the other's off. The lock is
// flock(2) on the directory itself, so it leaves no file behind (a read-only or
// full data directory fails where the agent writes, naming that file) and ends
// with the process. It holds until the returned file is closed.
func lockDataDir(dir string, wait time.Duration) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	_, err = retryFlock(context.Background(), wait, func() (*os.File, error) {
		return f, syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	})
	switch {
	case err == nil:
		return f, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		f.Close()
		return nil, Usagef("data_dir %s is in use by another porthole agent (still after %v); one agent per data directory", dir, wait)
	default:
		f.Close()
		return nil, fmt.Errorf("data_dir: lock %s: %w", dir, err)
	}
}

// retryFlock calls try, which takes a flock without waiting, until it gives
// something other than EWOULDBLOCK, wait has passed, or ctx ends.
func retryFlock(ctx context.Context, wait time.Duration, try func() (*os.File, error)) (*os.File, error) {
	deadline := time.Now().Add(wait)
	for {
		f, err := try()
		if !errors.Is(err, syscall.EWOULDBLOCK) || !time.Now().Before(deadline) {
			return f, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
