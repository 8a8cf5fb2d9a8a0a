package sshd

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The files pkg/sftp holds open, for the requests served here that act on
// them: fsync@openssh.com and copy-data. pkg/sftp keeps its descriptors to
// itself, so the front notes the path, the open flags and, just after pkg/sftp
// opened it, the device and inode of each file, and opens it again by that
// path when a request needs it, only if it is still the same file.

// SSH_FXF_* flags of an OPEN used here.
const (
	sftpFlagRead   = 0x01 // SSH_FXF_READ
	sftpFlagWrite  = 0x02 // SSH_FXF_WRITE
	sftpFlagAppend = 0x04 // SSH_FXF_APPEND
	sftpFlagCreat  = 0x08 // SSH_FXF_CREAT
	sftpFlagTrunc  = 0x10 // SSH_FXF_TRUNC
	sftpFlagExcl   = 0x20 // SSH_FXF_EXCL
)

// openFile is what is known of a file pkg/sftp holds open: the path it was
// opened by, its OPEN's flags and that file's device and inode just after;
// path is "" when they are not known or it is not a regular file.
type openFile struct {
	_        [0]func() // not comparable: no equality function in the binary (docs/size.md)
	path     string
	flags    uint32
	dev, ino uint64
	// failed: a WRITE to it failed, so its CLOSE fails too (see writeStatus).
	failed bool
}

// is reports whether st is of f's file.
func (f *openFile) is(st *syscall.Stat_t) bool {
	return uint64(st.Dev) == f.dev && uint64(st.Ino) == f.ino
}

// sftpFailureMsg is an error answered as SSH_FX_FAILURE with its text.
type sftpFailureMsg string

func (m sftpFailureMsg) Error() string { return string(m) }

// errFileMoved refuses a request on a file that no longer has the name it was
// opened by: another file may have it now.
const errFileMoved = sftpFailureMsg("the file was renamed, removed or replaced since it was opened")

// errNameUnknown refuses a request on a file whose path or kind is not
// known: not a regular file, or gone before its OPEN was answered.
const errNameUnknown = sftpFailureMsg("the file's name is not known, or it is not a regular file")

// errTerminal refuses an OPEN of a terminal. pkg/sftp opens files without
// O_NOCTTY, in the agent's process: run by an init system, the agent leads
// its session and has no controlling terminal, so a terminal that none has
// (a serial line, /dev/ttyUSB0) would become its own, and a ^C or ^Z on that
// line would stop it. sftp-server opens it in a session of its own.
const errTerminal = sftpFailureMsg("a terminal is not opened over SFTP here (it would become the agent's controlling terminal): use a shell")

// isTerminal reports whether path names a terminal: a character device of
// the tty class, as sysfs tells. One sysfs does not list (the pseudo
// terminals of /dev/pts, or no sysfs) counts as one, unless it is one of
// the memory devices (/dev/null, /dev/zero, /dev/urandom: major 1).
func isTerminal(path string) bool {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return false
	}
	major, minor := unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))
	class, err := os.Readlink("/sys/dev/char/" + strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10) + "/subsystem")
	if err != nil {
		return major != 1
	}
	return filepath.Base(class) == "tty"
}

// opened counts the file of handle h open, pkg/sftp's answer to request id,
// and notes which file it is if that OPEN is the one noted in s.opening.
func (s *sftpFront) opened(id uint32, h string) {
	s.mu.Lock()
	f := s.opening
	if s.openingID != id {
		f.path = ""
	}
	s.mu.Unlock()
	var st syscall.Stat_t
	if f.path != "" && syscall.Stat(f.path, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG {
		f.dev, f.ino = uint64(st.Dev), uint64(st.Ino)
	} else {
		f = openFile{}
	}
	s.mu.Lock()
	s.files[h] = &f
	s.opening.path = "" // at once: openForWriting counts the file as one or the other
	s.mu.Unlock()
}

// openForWriting counts the regular files pkg/sftp holds open for writing,
// and the OPEN for writing whose reply has not gone out: pkg/sftp has opened
// (and perhaps truncated) its file, and writes the HANDLE after Serve returns.
func (s *sftpFront) openForWriting() (n int) {
	s.mu.Lock()
	for _, f := range s.files {
		if f.flags&sftpFlagWrite != 0 {
			n++
		}
	}
	if s.opening.path != "" && s.opening.flags&sftpFlagWrite != 0 {
		n++
	}
	s.mu.Unlock()
	return n
}

// file returns what is known of the file of handle h, if it is one pkg/sftp
// holds open.
func (s *sftpFront) file(h string) (f openFile, ok bool) {
	s.mu.Lock()
	if p := s.files[h]; p != nil {
		f, ok = *p, true
	}
	s.mu.Unlock()
	return f, ok
}

// reopen opens f again, by the path it was opened by, with mode (O_RDONLY
// or O_WRONLY), if that is still the same file.
func reopen(f openFile, mode int) (*os.File, error) {
	if f.path == "" {
		return nil, errNameUnknown
	}
	// O_NONBLOCK: were a FIFO put at the path, open(2) would wait for its
	// other end. Only a regular file is kept, which it does not change.
	fd, err := syscall.Open(f.path, mode|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ENOENT) {
		return nil, errFileMoved
	} else if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || !f.is(&st) {
		syscall.Close(fd)
		return nil, errFileMoved
	}
	return os.NewFile(uintptr(fd), f.path), nil
}

// heldForWriting is what copy-data and appending WRITEs write through where
// the file f cannot be opened again for writing as the agent's user (err
// EACCES or EPERM from reopen): one read-only for that user, created so by
// the handle's OPEN (sftp's cp creates the copy of a read-only file so) or
// made so since, is still written through the handle, as sftp-server writes
// through the descriptor it opened. It returns a dup(2) of a descriptor this
// process holds on f open for writing (pkg/sftp's), from those
// /proc/self/fd lists, or err if there is none. Any will do: in-process SFTP
// serves only the agent's own user, and the handle was opened for writing.
// The dup is checked, not the number: another session may close that
// descriptor, and its number be given to another file, meanwhile. The dup
// shares its offset and flags with that descriptor, which are not to be
// changed: it is written with pwrite(2) only (WriteAt), and one open to
// append, which pwrite(2) would append to, is not taken.
func heldForWriting(f *openFile, err error) (*os.File, error) {
	if e, _ := err.(syscall.Errno); e != syscall.EACCES && e != syscall.EPERM {
		return nil, err
	}
	// As reopen: a file replaced since under the handle's name (by one the
	// user may not write, which is why the open was refused) is refused.
	var st syscall.Stat_t
	if syscall.Stat(f.path, &st) != nil {
		return nil, err
	} else if !f.is(&st) {
		return nil, errFileMoved
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, e := range fds {
		n, _ := strconv.Atoi(e.Name())
		fd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(n), syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			continue
		}
		fl, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		if errno == 0 && fl&syscall.O_ACCMODE != syscall.O_RDONLY && fl&syscall.O_APPEND == 0 &&
			syscall.Fstat(int(fd), &st) == nil && f.is(&st) {
			return os.NewFile(fd, f.path), nil
		}
		syscall.Close(int(fd))
	}
	return nil, err
}

// The seams through which fsync flushes, for tests.
var (
	fsyncFile = (*os.File).Sync
	syncAll   = syscall.Sync
)

// fsync answers fsync@openssh.com for handle h, as sftp-server does: an
// unknown handle, or a directory's, is "no such file". The file,
// opened again, is flushed with fsync(2), which flushes the file (not only
// what one descriptor wrote) and reports a failed write-back. If it cannot be
// (renamed or replaced since, not a regular file, not readable by the
// agent), sync(2) flushes every file system, this file among them, but
// reports no error. Every request before this one has been answered, so the
// writes of an upload are all in.
func (s *sftpFront) fsync(h string) error {
	of, ok := s.file(h) // not a directory's: those are s.dirs
	if !ok {
		return syscall.EBADF
	}
	f, err := reopen(of, syscall.O_RDONLY)
	if err != nil {
		syncAll()
		return nil
	}
	defer f.Close()
	return fsyncFile(f)
}

// copyDataRequest is copy-data's body after its name.
type copyDataRequest struct {
	From            string
	FromOff, Length uint64 // Length 0: to the end of the file
	To              string
	ToOff           uint64
	Rest            []byte `ssh:"rest"` // ignored, as sftp-server ignores it
}

// copyData answers copy-data: Length bytes of the file of handle From (all
// from FromOff to its end if Length is 0) are written to the file of handle
// To at ToOff, or at its end if it was opened to append, as sftp-server
// does. From must have been opened to read and To to write; they must be two
// files. Both are opened again (see reopen); a handle whose file was renamed
// or replaced since is refused, since copying whatever now has its name would
// read or overwrite the wrong file. One the agent's user may not open for
// writing (the copy of a read-only file, which sftp's cp creates with its
// mode 0444) is written through the handle's own descriptor (see
// heldForWriting). A copy that fails midway (a full disk) leaves what it
// wrote, and says why.
func (s *sftpFront) copyData(r copyDataRequest) error {
	if s.dirs[r.From] != nil || s.dirs[r.To] != nil {
		return syscall.EISDIR
	}
	from, okFrom := s.file(r.From)
	to, okTo := s.file(r.To)
	switch {
	case !okFrom || !okTo:
		return syscall.EBADF
	case from.path == "" || to.path == "":
		return errNameUnknown
	case from.flags&sftpFlagRead == 0 || to.flags&sftpFlagWrite == 0:
		return syscall.EBADF // as read(2) or write(2) would say
	case r.From == r.To || from.dev == to.dev && from.ino == to.ino:
		return sftpFailureMsg("copy-data within one file")
	}
	if r.FromOff > math.MaxInt64 || r.ToOff > math.MaxInt64 {
		return syscall.EINVAL
	}
	src, err := reopen(from, syscall.O_RDONLY)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := reopen(to, syscall.O_WRONLY)
	held := err != nil
	if held {
		dst, err = heldForWriting(&to, err)
	}
	if err != nil {
		return err
	}
	defer dst.Close()
	// lseek(2) on the descriptors: io.Copy moves on from there (with
	// copy_file_range(2) where the kernel has it). One held (see
	// heldForWriting) is written at the offset with pwrite(2) instead.
	if _, err := syscall.Seek(int(src.Fd()), int64(r.FromOff), io.SeekStart); err != nil {
		return err
	}
	var in io.Reader = src
	if r.Length > 0 && r.Length <= math.MaxInt64 {
		in = io.LimitReader(src, int64(r.Length))
	}
	off := int64(r.ToOff)
	if to.flags&sftpFlagAppend != 0 {
		off = -1
	}
	var out io.Writer = dst
	if held {
		out = &pwriter{f: dst, off: off}
	} else if off < 0 {
		_, err = syscall.Seek(int(dst.Fd()), 0, io.SeekEnd)
	} else {
		_, err = syscall.Seek(int(dst.Fd()), off, io.SeekStart)
	}
	if err == nil {
		_, err = io.Copy(out, in)
	}
	return err
}

// pwriter writes to f, a descriptor held (see heldForWriting), with
// pwrite(2) from offset off on, or at the end of the file as fstat(2) tells
// it before each write if off is -1: neither moves f's offset nor changes
// its flags. Unlike O_APPEND, a write at the end is not atomic against
// another process's appends to the file.
type pwriter struct {
	_   [0]func() // not comparable: no equality function in the binary (docs/size.md)
	f   *os.File
	off int64
}

func (w *pwriter) Write(p []byte) (int, error) {
	off := w.off
	if off < 0 {
		st, err := w.f.Stat()
		if err != nil {
			return 0, err
		}
		off = st.Size()
	}
	n, err := w.f.WriteAt(p, off)
	if w.off >= 0 {
		w.off += int64(n)
	}
	return n, err
}

// appendTo answers a WRITE to the file of handle h, opened with
// SSH_FXF_APPEND: data goes at the end of the file, whatever the request's
// offset, as sftp-server opens such a file O_APPEND; curl --append (libssh2)
// writes from offset 0 and counts on it. pkg/sftp ignores the flag (it writes
// with pwrite(2)), so the file, opened again (see reopen), is appended to
// here. Where it cannot be opened again for writing, the data goes at the
// size fstat(2) tells, with pwrite(2) on the descriptor held (see
// heldForWriting): unlike O_APPEND, that is not atomic against another
// process's appends.
func (s *sftpFront) appendTo(h string, data []byte) error {
	of, _ := s.file(h)
	if of.flags&sftpFlagWrite == 0 {
		return syscall.EBADF // as write(2) would say
	}
	f, err := reopen(of, syscall.O_WRONLY|syscall.O_APPEND)
	if err == nil {
		_, err = f.Write(data)
	} else if f, err = heldForWriting(&of, err); err != nil {
		return err
	} else {
		_, err = (&pwriter{f: f, off: -1}).Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// errWriteFailed answers the CLOSE of a file a WRITE to which failed, were
// the close itself to succeed.
const errWriteFailed = sftpFailureMsg("a write to this file failed: it may be incomplete")

// writeFailed notes that a WRITE to the file of handle h failed. OpenSSH's
// sftp client (and scp's SFTP mode) counts an upload failed only if its last
// WRITE or its CLOSE fails: one failed WRITE among others that succeed (a
// disk full for a moment, a flash page's error) left a hole in the file, and
// the client said nothing and exited 0. Its CLOSE answered with a failure, it
// says "close remote: Failure" and exits 1, as do other clients that check it.
// A client that wrote the part again after the failure gets the failure too:
// the front does not follow what was written where.
func (s *sftpFront) writeFailed(h string) {
	s.mu.Lock()
	if f := s.files[h]; f != nil {
		f.failed = true
	}
	s.mu.Unlock()
}

// writeStatus returns the STATUS reply b of pkg/sftp's, noting the failure of
// the WRITE handed on last (see writeFailed) and answering a CLOSE of a file
// with a failed WRITE with errWriteFailed where the close succeeded.
func (s *sftpFront) writeStatus(b []byte) []byte {
	id, ok := binary.BigEndian.Uint32(b[5:]), binary.BigEndian.Uint32(b[9:]) == sftpOK
	s.mu.Lock()
	// Each is for its request's reply alone: a client may use an id again
	// (phpseclib sends most requests as id 1).
	if id == s.writeID {
		if f := s.files[s.writeH]; f != nil && !ok {
			f.failed = true
		}
		s.writeH = ""
	}
	fail := ok && s.failClose && id == s.failCloseID
	if id == s.failCloseID {
		s.failClose = false
	}
	if id == s.openingID {
		s.opening.path = "" // the OPEN failed: no file is open
	}
	s.mu.Unlock()
	if fail {
		b = sftpStatusPacket(id, errWriteFailed)
	}
	return b
}
