package sshd

import (
	"fmt"
	"io"
	"io/fs"
	"os"
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
