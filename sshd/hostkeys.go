package sshd

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// HostKeyFile is the name of the ed25519 host key inside Server.DataDir. The
// public half is written next to it with a ".pub" suffix: next to the file
// that holds the key, so at a symbolic link's target (keyToMake) rather than
// at the link's name.
const HostKeyFile = "ssh_host_ed25519_key"

// ErrHostKey is wrapped by every error about a host key file that exists but
// cannot be used: its mode is too open, it is not a regular file, it is too
// large, it does not parse as a private key, the key in DataDir is not
// ed25519, or the server may not read it. Such a file is never replaced (a
// new key would make every client that knows the old one refuse the device),
// so starting again cannot help: the key file needs an operator, and a
// caller should stop rather than be restarted. A missing HostKeyFiles entry
// given by a relative path wraps it too (and fs.ErrNotExist): the server
// never makes those files, and such a path is most likely read from another
// working directory than meant, which no restart mends. Errors that may
// pass by themselves do not wrap it: a HostKeyFiles entry by an absolute
// path that is not there (yet: on storage mounted later in boot, such as
// /persist), checked after the others, I/O errors while reading, and every
// failure to create the key in DataDir (a read-only file system, a full
// disk), except a file system that does not keep file modes (vfat mounted
// with the defaults), on which a private key would be readable by everyone.
var ErrHostKey error = &errorString{"sshd: unusable host key"}

// maxHostKeyFile bounds what is read of a host key file. An OpenSSH private
// key of the largest RSA size OpenSSH makes (16384 bits) is about 12 KiB.
const maxHostKeyFile = 64 << 10

// hostSigners loads the server's host keys: the ed25519 key in dataDir
// (created on first use) and then each extra file, one of each type
// (onePerType: an extra ed25519 key is presented instead of dataDir's).
// The extra files that cannot sign are left out and named in notServed
// (leaveOut, in start.go: this file's code runs at every start). log (nil:
// none) gets mendAfterCrash's warning.
func hostSigners(dataDir string, extra []string, log *slog.Logger) (out []gossh.Signer, notServed []string, err error) {
	if dataDir != "" {
		s, err := loadOrCreateHostKey(dataDir, log)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, s)
	}
	more, err := readExtraKeys(extra)
	if err != nil {
		return nil, nil, err
	}
	more, notServed = leaveOut(more, extra, len(out) > 0)
	out = onePerType(append(out, more...))
	if len(out) == 0 {
		return nil, nil, errors.New("sshd: no host key: set DataDir or HostKeyFiles")
	}
	return out, notServed, nil
}

// CheckHostKeys checks, without making or changing anything, the host keys the
// server would load: the ed25519 key in dataDir when it exists (a missing one is
// made at start, where keyToMake says), and every extra file, which must exist.
// It is what a configuration check runs before the server starts; its errors
// are the ones the server would give. notServed says which extra files the
// server leaves out, and why (RSA keys under 1024 bits, which cannot sign).
func CheckHostKeys(dataDir string, extra []string) (notServed []string, err error) {
	if dataDir != "" {
		p := filepath.Join(dataDir, HostKeyFile)
		_, err := readDataDirKey(p)
		if errors.Is(err, fs.ErrNotExist) {
			_, err = keyToMake(p)
		}
		if err != nil {
			return nil, err
		}
	}
	keys, err := readExtraKeys(extra)
	_, notServed = leaveOut(keys, extra, true)
	for i := range notServed {
		notServed[i] += ": " + smallRSANote
	}
	return notServed, err
}

// readExtraKeys reads the HostKeyFiles, which must exist. One by an absolute
// path that does not is said once the others have been read: their errors
// need an operator, it may only need a mount (see ErrHostKey).
func readExtraKeys(extra []string) ([]gossh.Signer, error) {
	var out []gossh.Signer
	var missing error
	for _, p := range extra {
		s, err := readHostKey(p)
		switch {
		case errors.Is(err, fs.ErrNotExist) && filepath.IsAbs(p):
			if missing == nil {
				missing = err
			}
			continue
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%w: %w (an extra host key file is never made: copy it in place)", ErrHostKey, err)
		case err != nil:
			return nil, err
		}
		out = append(out, s)
	}
	if missing != nil {
		return nil, missing
	}
	return out, nil
}

// onePerType keeps the last key of each type: a server presents one key of
// each type, and x/crypto's AddHostKey replaces a key of the type it already
// has. Done here, so that PublicKeys (porthole keygen, the start's "host key"
// lines) names the keys clients are shown.
func onePerType(keys []gossh.Signer) []gossh.Signer {
	var out []gossh.Signer
next:
	for i, k := range keys {
		for _, later := range keys[i+1:] {
			if later.PublicKey().Type() == k.PublicKey().Type() {
				continue next
			}
		}
		out = append(out, k)
	}
	return out
}

// readDataDirKey reads the server's own key, which must be ed25519. A file that
// does not parse is kept rather than replaced (see ErrHostKey); the error says how
// to get a new one.
func readDataDirKey(path string) (gossh.Signer, error) {
	s, err := readHostKey(path)
	if errors.Is(err, errParse) {
		return nil, fmt.Errorf("%w (the file is kept; remove it to make a new key)", err)
	}
	if err != nil {
		return nil, err
	}
	if t := s.PublicKey().Type(); t != gossh.KeyAlgoED25519 {
		return nil, fmt.Errorf("%w %s: type %s, want %s", ErrHostKey, path, t, gossh.KeyAlgoED25519)
	}
	return s, nil
}

// errParse marks a host key file that is not a private key x/crypto/ssh reads.
var errParse error = &errorString{"not a private key"}

// loadOrCreateHostKey reads dir/HostKeyFile, or makes it if it does not exist.
func loadOrCreateHostKey(dir string, log *slog.Logger) (gossh.Signer, error) {
	path := filepath.Join(dir, HostKeyFile)
	s, err := readDataDirKey(path)
	if err == nil {
		mendAfterCrash(path, s, log)
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, wrapErr("creating host key directory "+dir, err)
	}
	if path, err = keyToMake(path); err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, wrapErr("generating host key", err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "porthole host key")
	if err != nil {
		return nil, wrapErr("encoding host key", err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, wrapErr("encoding host key", err)
	}
	// Made once: another process (porthole keygen during the agent's first
	// start) may be making one at the same time. The first key in place wins
	// and the others use it, so that every process serves and prints the key
	// on disk.
	if err := writeFileAtomic(path, pem.EncodeToMemory(block), 0o600, false); errors.Is(err, fs.ErrExist) {
		return readDataDirKey(path)
	} else if err != nil {
		return nil, wrapErr("writing host key "+path, err)
	}
	// The key is in place and served from now on: a .pub that cannot be
	// written (a full disk) fails no start, as the next start would read the
	// key and go on anyway; it is said, and the next start writes it
	// (mendAfterCrash).
	pub := gossh.MarshalAuthorizedKey(signer.PublicKey())
	if err := writeFileAtomic(path+".pub", pub, 0o644, true); err != nil && log != nil {
		log.Warn("cannot write the host key's .pub; the key is served, and the next start tries again", "file", path+".pub", "error", err)
	}
	return signer, nil
}

// keyToMake returns where the missing key at path is made: path itself, or,
// when path is a symbolic link to nothing, the link's target. A firmware with a
// read-only root file system links the key to writable storage
// (ssh_host_ed25519_key -> /data/keys/host) and expects the first boot to make
// it there, as ssh-keygen -f path would (open(2) with O_CREAT follows the
// link); link(2), which puts the key in place once (writeFileAtomic), does
// not, and failed with "file exists" at every start. The target is made only
// in a directory that it and every directory above it belong to root or to
// the server's user and that group and others cannot write (safeWalk; above
// it, a sticky directory such as /tmp may be, as above data_dir): whoever
// could write there would choose the device's host key. Such a target, a link
// to a link to nothing, and a relative target with ".." (which the kernel
// resolves from the link's real directory, not from path's text) are errors
// wrapping ErrHostKey. A target whose directory does not exist yet (storage
// mounted later in boot) is one that may pass, wrapping fs.ErrNotExist.
// mendAfterCrash asks it too, for a key that is there: what it would not make
// there, it does not mend there either.
func keyToMake(path string) (string, error) {
	target, err := os.Readlink(path)
	if err != nil {
		return path, nil // not a link (or missing): made at path
	}
	at := target
	if !filepath.IsAbs(at) {
		at = filepath.Join(filepath.Dir(path), at)
	}
	dir := filepath.Dir(at)
	fi, err := os.Stat(dir)
	lfi, lerr := os.Lstat(at)
	switch {
	case at != target && strings.Contains("/"+target+"/", "/../"):
		err = errors.New("give the link an absolute target")
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("host key %s is a symbolic link to %s, which is made once its directory is there (storage mounted later?): %w", path, target, err)
	case err != nil:
	case lerr == nil && lfi.Mode()&fs.ModeSymlink != 0:
		// Not one made since by another process (keygen at the first
		// start), which the link in writeFileAtomic finds.
		err = errors.New("it is a link to nothing")
	case fi.Mode().Perm()&0o022 != 0:
		// Even sticky (/tmp): another user could make the key's name first.
		err = errors.New("bad modes of " + dir + ": " + OctalMode(fi.Mode()) + " is group or world writable")
	default:
		err = safeWalk(fi, dir, uint32(os.Geteuid()), "/", true)
	}
	if err != nil {
		return "", fmt.Errorf("%w %s: a symbolic link to %s, which does not exist and is not made there: %v", ErrHostKey, path, target, err)
	}
	return at, nil
}

// tmpMaxAge is how old a temporary file of writeFileAtomic must be before
// mendAfterCrash takes it as left by a crash, not as one another process (porthole
// keygen) is writing now. One dated more than that in the future is a crash's
// too: written before the clock went back (a router without an RTC starts at
// 1970 or its last saved time until NTP answers), it would never grow old.
const tmpMaxAge = time.Minute

// mendAfterCrash finishes what a crash (a power cut) while the key at path was
// made may have left undone: the .pub not written yet, or still the one of a
// key removed before (a regular file naming another key: rewritten, with a
// warning), temporary files (private keys) not removed. A key that is a link
// (keyToMake) is mended at its target, where it was made: the .pub there, and
// the temporary files there as well as in data_dir; nothing is written at the
// link's name, where a regular .pub would be one more file to keep in step
// with the key (an operator may link it to the target's .pub, as the key).
// Best effort: on a read-only data directory nothing changes, and a .pub that
// cannot be written otherwise (a full disk) is a warning, the start goes on.
func mendAfterCrash(path string, s gossh.Signer, log *slog.Logger) {
	removeCrashTemporaries(path)
	// Only where keyToMake would make the key (a directory no one else may
	// write, no link to a link): elsewhere the files are no one's the server
	// may judge.
	at, err := keyToMake(path)
	if err != nil {
		return
	}
	if at != path {
		removeCrashTemporaries(at)
	}
	pub := gossh.MarshalAuthorizedKey(s.PublicKey())
	fi, err := os.Lstat(at + ".pub")
	if err == nil && fi.Mode().IsRegular() {
		var got []byte
		f, _, err := openRegular(at + ".pub")
		if err == nil {
			got, err = readAllLimit(f, maxHostKeyFile)
			f.Close()
		}
		// "ssh-ed25519 BASE64", then a comment or the end.
		k := pub[:len(pub)-1]
		stale := err == nil && !(bytes.HasPrefix(got, k) && (len(got) == len(k) || got[len(k)] <= ' '))
		if stale {
			err = writeFileAtomic(at+".pub", pub, 0o644, true)
			if log != nil && err == nil {
				log.Warn("the host key's .pub names another key than the one served: rewritten", "file", at+".pub")
			} else if log != nil {
				// An operator who takes the key from the .pub pins the wrong one.
				log.Warn("the host key's .pub names another key than the one served, and cannot be rewritten: do not take the key from it", "file", at+".pub", "error", err)
			}
		}
		return
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return // a link (an operator's, kept), or not a file the server may judge
	}
	// Missing: written, and said if it cannot be (a full disk), but for a
	// read-only data directory, which may hold a key and no .pub by design.
	if err = writeFileAtomic(at+".pub", pub, 0o644, true); err != nil && !errors.Is(err, syscall.EROFS) && log != nil {
		log.Warn("the host key's .pub is missing and cannot be written", "file", at+".pub", "error", err)
	}
}

// removeCrashTemporaries removes the temporary files writeFileAtomic left
// beside path and path.pub, those old enough (tmpMaxAge) to be a crash's.
// Only regular files: a link with such a name is not followed nor removed.
func removeCrashTemporaries(path string) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "."+base+".tmp-") && !strings.HasPrefix(name, "."+base+".pub.tmp-") || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil && (time.Since(fi.ModTime()) > tmpMaxAge || time.Until(fi.ModTime()) > tmpMaxAge) {
			os.Remove(filepath.Join(dir, name))
		}
	}
}

// readHostKey parses a private key file in any format x/crypto/ssh reads
// (OpenSSH, PEM PKCS#1/PKCS#8/SEC1). A missing file yields an error wrapping
// fs.ErrNotExist; a file that is there but unusable, one wrapping
// ErrHostKey, except for errors that may pass (see ErrHostKey).
func readHostKey(path string) (gossh.Signer, error) {
	f, fi, err := openRegular(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || !needsOperator(err) {
			return nil, wrapErr("reading host key "+path, err)
		}
		return nil, fmt.Errorf("%w %s: %v", ErrHostKey, path, err)
	}
	defer f.Close()
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w %s: permissions %#o are too open, want 0600", ErrHostKey, path, perm)
	}
	data, err := readAllLimit(f, maxHostKeyFile)
	if err != nil {
		if !needsOperator(err) {
			return nil, wrapErr("reading host key "+path, err)
		}
		return nil, fmt.Errorf("%w %s: %v", ErrHostKey, path, err)
	}
	s, err := gossh.ParsePrivateKey(data)
	if err != nil {
		// The parse error text never contains key material. x/crypto says
		// only "no key found" for a Dropbear key (a firmware moving from
		// Dropbear that keeps its host key); another error (a passphrase)
		// is not about the format.
		hint := ""
		if err.Error() == "ssh: no key found" {
			hint = " (OpenSSH or PEM keys are read; convert a Dropbear key with dropbearconvert dropbear openssh IN OUT)"
			// A Dropbear key is binary: an empty file, or a PEM one with
			// no key found in it, is one a copy or a power cut left
			// unfinished, or damaged.
			if len(data) == 0 || bytes.Contains(data, []byte("-----BEGIN ")) {
				hint = " (the file is empty, cut short or damaged)"
			}
		}
		return nil, fmt.Errorf("%w %s: %w: %v%s", ErrHostKey, path, errParse, err, hint)
	}
	return s, nil
}

// needsOperator reports whether err, from opening or reading a host key
// file, says something about the file or its path that stays so until
// someone changes it. Other errors (EIO, ENOMEM, EMFILE, EINTR, …) may pass;
// in doubt an error is taken as one that may pass, since a caller stops for
// good on ErrHostKey.
func needsOperator(err error) bool {
	if errors.Is(err, errNotRegular) || errors.Is(err, errTooLarge) || errors.Is(err, fs.ErrPermission) {
		return true
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.ELOOP, syscall.ENOTDIR, syscall.EISDIR, syscall.ENAMETOOLONG, syscall.ENXIO, syscall.ENODEV:
		return true
	}
	return false
}

// writeFileAtomic writes data to path so that a crash leaves either the old
// file or the new one: a temporary file in the same directory, fsync, rename,
// fsync of the directory. With replace false the file is linked into place
// instead, and an error wrapping fs.ErrExist leaves a path that is there
// already as it is (on a file system without hard links it is renamed). A
// private perm (no group or other bits) that the file system does not keep is
// an error wrapping ErrHostKey, and nothing is written.
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil || !replace {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	// vfat and exfat take a chmod they cannot represent and change nothing:
	// mounted with the defaults, every file is 0755. A private key kept there
	// would be readable by every local user, and readHostKey would refuse it at
	// the next start, after it was served and printed.
	if fi, serr := f.Stat(); serr == nil && perm&0o077 == 0 && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: the file system of %s does not keep file modes (a file made %#o is %#o: vfat?): mount it with fmask=0077,dmask=0077, or keep the host key on another file system",
			ErrHostKey, dir, perm, fi.Mode().Perm())
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp, path)
	} else if err = os.Link(tmp, path); errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EOPNOTSUPP) {
		err = os.Rename(tmp, path) // no hard links (vfat)
	}
	if err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
