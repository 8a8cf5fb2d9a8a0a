//go:build linux

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

	"github.com/porthole-iot/porthole/sshd"
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
	_, err := walkDataDir(dir)
	return err
}

// makeDataDir makes the data directory, mode 0700, if it does not exist, once
// checkDataDir's rules pass. It is made where the path resolves: a data_dir that
// is a link to a directory not made yet (ln -s /overlay/porthole
// /var/lib/porthole) has its target made, as mkdir(2) does not follow a link.
func makeDataDir(dir string) error {
	missing, err := walkDataDir(dir)
	if err != nil || missing == "" {
		return err
	}
	if err := mkdir(missing, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return wrapErr("data_dir", err)
	}
	// Walked again: in a sticky directory (/tmp) another user may have made
	// the directory, or a link, since the walk (mkdir's EEXIST), or removed it
	// again. Once this walk passes, only root or the agent's user can change
	// what the path names.
	if missing, err = walkDataDir(dir); err == nil && missing != "" {
		err = errors.New("data_dir: " + missing + " was removed as it was made")
	}
	return err
}

var mkdir = os.Mkdir // for tests: another user's mkdir in between

// walkDataDir is checkDataDir. When the data directory does not exist yet, it
// returns the path it is to be made at, the resolution's end.
func walkDataDir(dir string) (missing string, err error) {
	euid := os.Geteuid()
	tunnels := filepath.Join(dir, "tunnels")
	if fi, err := os.Lstat(tunnels); err == nil {
		// A link is refused, not followed: its target's path would need the
		// walk below too, and the state moves elsewhere with one link
		// already, data_dir itself, checked all the way.
		if fi.Mode()&fs.ModeSymlink != 0 {
			return "", errors.New("data_dir: " + tunnels + " is a symbolic link; it must be a directory (to keep the state elsewhere, make data_dir itself the link)")
		}
		if err := safeDir(tunnels, fi, euid, false); err != nil {
			return "", err
		}
	}
	abs := dir
	if !filepath.IsAbs(dir) {
		wd, err := os.Getwd()
		if err != nil {
			return "", wrapErr("data_dir", err)
		}
		abs = wd + "/" + dir // not filepath.Join, which would clean "..": see above
	}
	cur, todo, links := "/", components(abs), 0
	fi, err := os.Lstat(cur)
	for err == nil && len(todo) > 0 {
		if err = safeDir(cur, fi, euid, true); err != nil {
			return "", err
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
			return next, nil // the data directory itself, made later; cur is checked
		case errors.Is(nerr, fs.ErrNotExist):
			// What to make for data_dir to be made: the path as far as it is
			// resolved, without its last name.
			above := filepath.Join(append([]string{next}, todo[:len(todo)-1]...)...)
			return "", &missingAboveError{dir: dir, missing: next, above: above}
		case nerr != nil:
			err = nerr // said below
			continue
		case nfi.Mode()&fs.ModeSymlink != 0:
			if links++; links > 40 {
				return "", errors.New("data_dir: " + dir + ": too many levels of symbolic links")
			}
			if uid, foreign := foreignOwner(nfi, euid); foreign {
				return "", fmt.Errorf("data_dir: the link %s belongs to uid %d, not to root or the agent's user (uid %d)", next, uid, euid)
			}
			var target string
			if target, err = os.Readlink(next); err != nil {
				continue // said below
			}
			if filepath.IsAbs(target) {
				cur = "/"
				fi, err = os.Lstat(cur) // an error is said below
			}
			todo = append(components(target), todo...)
			continue
		}
		cur, fi = next, nfi
	}
	if err != nil {
		return "", wrapErr("data_dir", err)
	}
	// Where the resolution ends is the data directory.
	if err := safeDir(cur, fi, euid, false); err != nil {
		return "", err
	}
	// One the agent's user may not open (root's, 0700, made by an installer
	// run as root) failed at the lock, a runtime error (exit 2) that init
	// systems restart for ever, and check-config named the host key in it.
	// access(2) takes the real uid, which is the agent's: it is not setuid.
	if syscall.Access(cur, 5 /* R_OK|X_OK */) == syscall.EACCES {
		uid, _ := foreignOwner(fi, euid)
		if int(uid) == euid {
			// Its own, with the owner's r or x taken away (chmod 0, a
			// restore that lost the modes): chown would change nothing.
			return "", fmt.Errorf("data_dir: %s has mode %s, which does not let its owner, the agent's user (uid %d), open it: chmod 700 %[1]s",
				cur, sshd.OctalMode(fi.Mode()), euid)
		}
		return "", fmt.Errorf("data_dir: %s belongs to uid %d (mode %s) and the agent runs as uid %d, which may not open it: chown -R %[4]d %[1]s, or run the agent as uid %[2]d",
			cur, uid, sshd.OctalMode(fi.Mode()), euid)
	}
	return "", nil
}

// missingAboveError is a data directory below a directory that does not exist:
// the agent makes data_dir itself, not what it is on, which is often storage
// mounted later in boot. It is a runtime failure (exit 2, which init systems
// restart), not a configuration error, and a warning of check-config.
type missingAboveError struct {
	_       [0]func() // not comparable: no equality function in the binary (docs/size.md)
	dir     string    // data_dir
	missing string    // the first directory on the way that does not exist
	above   string    // the directory data_dir is to be made in, as far as it is resolved
}

func (e *missingAboveError) Error() string {
	return "data_dir: " + e.missing + " does not exist: the agent makes only data_dir (" + e.dir + "), not the directories above it; " +
		"if they are on storage mounted later in boot, the agent will exit (2) at start until they are there, for its init system to start it again; " +
		"otherwise make them (mkdir -p -m 700 " + e.above + ")"
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

// foreignOwner reports the owner of fi when it is neither root nor euid (the
// agent's user): someone else who could change the file or directory.
func foreignOwner(fi fs.FileInfo, euid int) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, st.Uid != 0 && int(st.Uid) != euid
}

// safeDir applies checkDataDir's rules to directory p; stickyOK allows a sticky
// directory that others can write (one above the data directory).
func safeDir(p string, fi fs.FileInfo, euid int, stickyOK bool) error {
	if !fi.IsDir() {
		return errors.New("data_dir: " + p + " is not a directory")
	}
	if uid, foreign := foreignOwner(fi, euid); foreign {
		return fmt.Errorf("data_dir: %s belongs to uid %d, not to root or the agent's user (uid %d)", p, uid, euid)
	}
	sticky := fi.Mode()&fs.ModeSticky != 0
	switch {
	case fi.Mode().Perm()&0o022 == 0 || stickyOK && sticky:
		return nil
	case sticky:
		// A shared directory such as /tmp or /dev/shm: chmod go-w would break
		// every other program that writes there.
		return errors.New("data_dir: " + p + " is writable by group or others (mode " + sshd.OctalMode(fi.Mode()) + ": a shared directory, as /tmp is); the host key and tunnel tokens need a directory of their own that only root or the agent's user can change (e.g. /var/lib/porthole)")
	}
	return errors.New("data_dir: " + p + " is writable by group or others (mode " + sshd.OctalMode(fi.Mode()) + "); the host key and tunnel tokens need a directory only root or the agent's user can change (chmod go-w " + p + ")")
}

// dataDirWarning says when the agent will not be able to make or write its
// data directory: the directory above a missing one, or the existing one, is
// read-only or on /proc or /sys. It is a warning, not an error: storage is
// often mounted late in boot (an overlay, /data on flash), after check-config
// may have run, and an agent that finds it missing exits 2, which its init
// system restarts until it is there. An existing, read-only data directory that
// holds the host key still serves: tunnels are then not kept across restarts.
// One in RAM is warned about too (tmpfs, or an overlay whose writable layer is
// tmpfs: overlayInRAM), and an existing, writable one on a file system that
// does not keep file modes (lostMode).
func dataDirWarning(dir string) string {
	toMake, err := walkDataDir(dir)
	var missing *missingAboveError
	if errors.As(err, &missing) {
		return missing.Error()
	} else if err != nil {
		return "" // checkDataDir reports it
	}
	target, made := dir, toMake == ""
	if !made {
		target = filepath.Dir(toMake) // through a link, the target's directory
	}
	why := ""
	var st syscall.Statfs_t
	statErr := syscall.Statfs(target, &st)
	if statErr == nil && (st.Type == procMagic || st.Type == sysfsMagic) {
		why = "it is on a kernel file system such as /proc or /sys, not storage"
	} else if err := syscall.Access(target, 2 /* W_OK */); err != nil {
		why = "it is not writable: " + err.Error()
	}
	switch {
	case why == "" && statErr == nil && (inRAM(&st) || uint32(st.Type) == overlayMagic && overlayInRAM(target)):
		// OpenWrt's /var is /tmp: the example's /var/lib/porthole is in RAM there.
		return "data_dir: " + dir + " is in RAM (tmpfs, or an overlay on tmpfs): the SSH host key made there changes at every boot (operators' ssh then warns of a changed host key) and live tunnels do not survive a reboot; put data_dir on flash, e.g. /etc/porthole/state"
	case why == "" && made && statErr == nil && mayLoseModes(&st):
		if m := lostMode(dir); m != 0 {
			return modesWarning(dir, m)
		}
		return ""
	case why == "":
		return ""
	case !made:
		return "data_dir: " + dir + " does not exist and cannot be made in " + target + " (" + why + "): the agent will exit (2) at start until it can be, e.g. once that storage is mounted"
	}
	key := filepath.Join(dir, sshd.HostKeyFile)
	if _, err := os.Stat(key); err != nil {
		// A key linked to storage that holds no key yet is made there
		// (sshd's keyToMake), if that storage can be written; checkHostKeys
		// says what else is wrong with the link, storage not mounted yet
		// among it.
		to, err := os.Readlink(key)
		if err == nil {
			if !filepath.IsAbs(to) {
				to = filepath.Join(dir, to)
			}
			if aerr := syscall.Access(filepath.Dir(to), 2 /* W_OK */); aerr != nil && !errors.Is(aerr, fs.ErrNotExist) {
				why, err = key+" is a link to "+to+", whose directory is not writable: "+aerr.Error(), aerr
			}
		}
		if err != nil {
			return "data_dir: " + dir + " holds no SSH host key and one cannot be made there (" + why + "): the agent will exit (2) at start"
		}
	}
	return "data_dir: " + dir + " is not writable (" + why + "): live tunnels cannot be saved, so a restart ends them"
}

// inRAM reports whether st is of a file system in RAM.
func inRAM(st *syscall.Statfs_t) bool {
	t := uint32(st.Type) // int32 on 32-bit Linux
	return t == tmpfsMagic || t == ramfsMagic
}

// overlayInRAM reports whether directory p is on an overlay whose writable
// layer is in RAM (Raspberry Pi OS's overlay file system, Ubuntu's
// overlayroot=tmpfs, OpenWrt's tmpfs overlay when rootfs_data is unusable): a
// reboot loses what is written there, as on tmpfs. The mount is found in
// /proc/self/mountinfo by p's device number (an overlay's own for a
// directory), which needs no path resolution (links, bind mounts; and no code
// of filepath's laid out before agent/tunnel's start-up code: docs/size.md).
// Its upperdir is looked up here, so one mounted before a pivot_root may name
// nothing now, and then nothing is said.
func overlayInRAM(p string) bool {
	var ps syscall.Stat_t
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil || syscall.Stat(p, &ps) != nil {
		return false
	}
	// Linux's encoding of dev_t: major bits 8-19 and 32-43, minor 0-7 and 20-31.
	dev := uint64(ps.Dev)
	id := fmt.Sprintf("%d:%d", dev>>8&0xfff|dev>>32&^0xfff, dev&0xff|dev>>12&^0xff)
	upper := ""
	for _, line := range strings.Split(string(b), "\n") {
		// 36 35 0:98 / /mnt rw,relatime shared:1 - overlay overlay rw,lowerdir=…,upperdir=…,workdir=…
		pre, post, _ := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || f[2] != id || g[0] != "overlay" {
			continue
		}
		for _, o := range strings.Split(g[2], ",") { // a comma in a path is \054
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				upper = unescapeMountinfo(v)
			}
		}
	}
	var st syscall.Statfs_t
	return upper != "" && syscall.Statfs(upper, &st) == nil && inRAM(&st)
}

// unescapeMountinfo undoes the octal escapes of /proc/self/mountinfo: \040 for
// a space, \011 a tab, \012 a newline, \134 a backslash, \054 a comma.
func unescapeMountinfo(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b = append(b, (s[i+1]-'0')<<6|(s[i+2]-'0')<<3|(s[i+3]-'0'))
			i += 3
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// mayLoseModes reports whether st is of a file system that may not keep file
// modes: FAT, exFAT, and FUSE (exfat-fuse, ntfs-3g, fusefat). lostMode probes
// only these: elsewhere a start, or check-config, writes nothing to flash.
func mayLoseModes(st *syscall.Statfs_t) bool {
	t := uint32(st.Type) // int32 on 32-bit Linux
	return t == msdosMagic || t == exfatMagic || t == fuseMagic
}

// lostMode makes a file mode 0600 in dir and returns the mode it has if group
// or others have bits on it, else 0; the file is removed. vfat and exfat
// mounted with the defaults take a chmod they cannot represent and change
// nothing: every file is 0755. Only a warning (modesWarning): an agent without
// SSH ran on such a data_dir before, and must not be refused now.
func lostMode(dir string) fs.FileMode {
	f, err := os.CreateTemp(dir, ".mode-probe-*")
	if err != nil {
		return 0
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if f.Chmod(0o600) != nil {
		return 0
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return 0
	}
	return fi.Mode().Perm()
}

// modesWarning is dataDirWarning's for a data_dir on which a file made 0600
// has mode m.
func modesWarning(dir string, m fs.FileMode) string {
	return fmt.Sprintf("data_dir: %s is on a file system that does not keep file modes (a file made 0600 is %#o: vfat?): the live tunnels' tokens saved there are readable by other local users, and the SSH host key cannot be made there; mount it with fmask=0077,dmask=0077, or put data_dir elsewhere", dir, m)
}

// Magic numbers of statfs(2) for the kernel's /proc and /sys, for file
// systems in RAM, for overlayfs, and for those that may not keep file modes.
const (
	procMagic    = 0x9fa0
	sysfsMagic   = 0x62656572
	tmpfsMagic   = 0x01021994
	ramfsMagic   = 0x858458f6
	overlayMagic = 0x794c7630
	msdosMagic   = 0x4d44
	exfatMagic   = 0x2011bab0
	fuseMagic    = 0x65735546
)

// lockWait is how long a starting agent waits for another to leave the data
// directory: a restart can start the new agent while the old one is still
// ending its sessions (it exits within 5 s). Longer than the init systems'
// wait before they kill an agent that does not stop (procd's term_timeout and
// the systemd unit's TimeoutStopSec, 10 s), so that one that stops slowly
// (flash I/O) is outwaited.
const lockWait = 15 * time.Second

// lockDataDir takes the agent's lock on dir, which it makes if missing (mode
// 0700). Two agents on one data directory take the MQTT session from each other
// and dial each other's saved tunnels, each cutting the other's off. The lock is
// flock(2) on the directory itself, so it leaves no file behind (a read-only or
// full data directory fails where the agent writes, naming that file) and ends
// with the process. It holds until the returned file is closed. The wait ends
// with ctx (a stop while another agent holds the lock): ctx's error.
func lockDataDir(ctx context.Context, dir string, wait time.Duration) (*os.File, error) {
	if err := makeDataDir(dir); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, wrapErr("data_dir", err)
	}
	_, err = retryFlock(ctx, wait, func() (*os.File, error) {
		return f, lockNoWait(f)
	})
	switch {
	case err == nil:
		return f, nil
	case ctx.Err() != nil:
		f.Close()
		return nil, ctx.Err()
	case errors.Is(err, errLockHeld):
		f.Close()
		// A runtime failure (exit 2, respawned), not a configuration
		// error: it is most often the agent an update or restart replaces,
		// slow to stop, and an updater that reads exit 1 as "the new
		// binary refuses the config" would roll a good update back.
		return nil, errors.New("data_dir " + dir + " is in use by another porthole agent (still after " + wait.String() + "); one agent per data directory")
	default:
		f.Close()
		return nil, wrapErr("data_dir: lock "+dir, err)
	}
}
