package sshd

// The file's name sorts after limits.go on purpose, as serverconn.go's: its
// code runs only at a login, never when the server starts, and is laid out
// after the server's start-time code (docs/size.md).

import (
	"os"
	"syscall"
)

// fileStamp tells versions of a file apart: its device and inode, size, and
// modification and status change times (nanoseconds), as fstat(2) saw them.
// The inode and ctime catch what size and mtime miss: an editor that writes a
// new file and renames it, cp -p or rsync -t keeping the old mtime.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

// stampOf is fi's stamp; the zero stamp for a nil fi (no file).
func stampOf(fi os.FileInfo) fileStamp {
	if fi == nil {
		return fileStamp{}
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino, st.ctime = uint64(sys.Dev), uint64(sys.Ino), sys.Ctim.Nano()
	}
	return st
}

// warnedRead is what Server.warned keeps of the last warning about a file:
// the version of the file (zero when there was none) and the error warned
// about ("" for skipped lines).
type warnedRead struct {
	_   [0]func() // not comparable: no equality function in the binary (docs/size.md)
	st  fileStamp
	err string
}

// maxWarnedFiles bounds Server.warned. The files it holds are few (passwd,
// group, shadow, the trusted CA keys files, the users' authorized_keys), so
// it is reached only with many users' files broken; it is then emptied, and
// those files are warned about once more.
const maxWarnedFiles = 64

// warnLog returns the function that logs what a read of a file at login found
// wrong: lines skipped from the file fi (err nil), or err, why the file was
// not read (fi is then the file that was not used, or nil). It is Warn at the
// first read that finds this, and Debug at later reads that find the same in
// the same version of the file; a new version or another error (its text names
// the file, and for an unsafe path the directory and its mode) is warned about
// again. key names the file: its path, and for authorized_keys the user's name
// too (whether the file is used depends on the user). The files are read at
// every login attempt, the authorized_keys files once per key a client offers,
// so one broken file would otherwise be warned about several times a login
// and for every client that tries one, filling a router's small log.
func (s *Server) warnLog(key string, fi os.FileInfo, err error) func(msg string, args ...any) {
	w := warnedRead{st: stampOf(fi)}
	if err != nil {
		w.err = err.Error()
	}
	s.warnedMu.Lock()
	defer s.warnedMu.Unlock()
	if old, ok := s.warned[key]; ok && old.st == w.st && old.err == w.err {
		return s.log().Debug
	}
	if s.warned == nil || len(s.warned) >= maxWarnedFiles {
		s.warned = make(map[string]warnedRead)
	}
	s.warned[key] = w
	return s.log().Warn
}

// readClean forgets what was warned about the file key names, whose read
// found nothing wrong, so that a problem that comes back is warned about
// again (a home directory made group-writable anew).
func (s *Server) readClean(key string) {
	s.warnedMu.Lock()
	delete(s.warned, key)
	s.warnedMu.Unlock()
}
