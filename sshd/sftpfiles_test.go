package sshd

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// asNonRoot runs the rest of test t as uid and gid 65534 (nobody), in a child
// of the test binary when the tests run as root (as in CI): a file's mode
// binds only a user that is not root. The child's temporary directories are
// under one the parent makes writable for all. It reports whether to go on
// (false in the parent, once the child passed).
func asNonRoot(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return true
	}
	if !inChild() {
		dir := t.TempDir()
		chmodWalkUp(t, dir)
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		t.Setenv("TMPDIR", dir)
		runChild(t, nil, nil)
		return false
	}
	// The binary, in go test's 0700 directory, is run as root and drops it:
	// Go sets the ids of every thread.
	if err := syscall.Setgroups(nil); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setgid(65534); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setuid(65534); err != nil {
		t.Fatal(err)
	}
	return true
}

// A file read-only for the agent's user, in a handle opened for writing, is
// written through it, as sftp-server writes through the descriptor it opened:
// the copy sftp's cp makes of a read-only file (created with its mode 0444,
// then filled with copy-data), a file created 0444 to append to, and one made
// 0444 by FSETSTAT after it was opened. Opened again by its path for writing,
// such a file was refused (EACCES): cp left an empty copy and said
// "Permission denied", and the WRITEs to append failed.
func TestSFTPWriteReadOnlyForTheUser(t *testing.T) {
	if !asNonRoot(t) {
		return
	}
	const read, write, appnd, creat, trunc = 0x01, 0x02, 0x04, 0x08, 0x10
	const perms = 0x04 // SSH_FILEXFER_ATTR_PERMISSIONS
	dir := t.TempDir()
	for name, data := range map[string]string{"cert.pem": "0123456789", "f1": "f1:"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "cert.pem"), 0o444)
	l := newSFTPLive(t, dir)
	var id uint32
	do := func(typ byte, body ...any) []byte {
		t.Helper()
		id++
		l.send(t, sftpPacket(typ, append([]any{id}, body...)...))
		return l.recv(t)
	}
	open := func(name string, pflags uint32, attrs ...any) string {
		t.Helper()
		if len(attrs) == 0 {
			attrs = []any{uint32(0)}
		}
		r := do(sftpOpen, append([]any{name, pflags}, attrs...)...)
		if r[0] != sftpHandle {
			t.Fatalf("OPEN %s: %x", name, r)
		}
		return string(r[9:])
	}
	ok := func(what string, r []byte) {
		t.Helper()
		if r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) != sftpOK {
			t.Errorf("%s: %q, want OK", what, r)
		}
	}
	src := open("cert.pem", read)
	dst := open("cert.bak", write|creat|trunc, uint32(perms), uint32(0o444))
	ok("copy-data to a copy created 0444", do(sftpExt, copyDataExt, src, uint64(0), uint64(0), dst, uint64(0)))
	ok("copy-data at an offset", do(sftpExt, copyDataExt, src, uint64(8), uint64(0), dst, uint64(12)))
	log := open("log", write|creat|appnd, uint32(perms), uint32(0o444))
	ok("WRITE to append to a file created 0444", do(sftpWrite, log, uint64(0), "a,"))
	ok("copy-data to append", do(sftpExt, copyDataExt, src, uint64(0), uint64(3), log, uint64(0)))
	ok("WRITE to append again", do(sftpWrite, log, uint64(0), "b"))
	f1 := open("f1", write|appnd)
	ok("FSETSTAT 0444", do(10, f1, uint32(perms), uint32(0o444)))
	ok("WRITE to append after FSETSTAT 0444", do(sftpWrite, f1, uint64(0), "tail"))
	// A handle whose file was replaced under its name since, by one the user
	// may not write, is refused as any replaced file is: through the held
	// descriptor the data would go to the renamed file.
	refused := func(what string, r []byte) {
		t.Helper()
		if r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) == sftpOK {
			t.Errorf("%s: %q, want it refused", what, r)
		}
	}
	moved := open("moved", write|creat)
	movedLog := open("moved.log", write|creat|appnd)
	for _, name := range []string{"moved", "moved.log"} {
		p := filepath.Join(dir, name)
		if err := os.Rename(p, p+".old"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("new"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	refused("copy-data to a file replaced by a read-only one", do(sftpExt, copyDataExt, src, uint64(0), uint64(0), moved, uint64(0)))
	refused("WRITE to append to a file replaced by a read-only one", do(sftpWrite, movedLog, uint64(0), "x"))
	for name, want := range map[string]string{"cert.bak": "0123456789\x00\x0089", "log": "a,012b", "f1": "f1:tail",
		"moved.old": "", "moved": "new", "moved.log.old": "", "moved.log": "new"} {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if st, _ := os.Stat(p); string(got) != want || st == nil || st.Mode().Perm()&0o222 != 0 && !strings.HasSuffix(name, ".old") {
			t.Errorf("%s = %q (%v), want %q, read-only", name, got, err, want)
		}
	}
}

// Writing through a descriptor held on a read-only file (see heldForWriting)
// leaves that descriptor's offset and flags as they were: another handle, or
// another part of the agent, may use them.
func TestSFTPHeldDescriptorUnchanged(t *testing.T) {
	if !asNonRoot(t) {
		return
	}
	dir := t.TempDir()
	front := newSFTPFront(bytes.NewReader(nil), io.Discard, dir, nil, nil)
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	os.WriteFile(src, []byte("source"), 0o644)
	// Before the one to write through, one not open for writing and one
	// open to append, which would write elsewhere than asked.
	var fds []*os.File
	for _, flag := range []int{os.O_RDONLY | os.O_CREATE, os.O_WRONLY | os.O_APPEND, os.O_RDWR} { // the last as pkg/sftp opens it
		f, err := os.OpenFile(dst, flag, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fds = append(fds, f)
	}
	held := fds[2]
	held.WriteString("012345")
	os.Chmod(dst, 0o444)
	for h, f := range map[string]openFile{"1": {path: src, flags: sftpFlagRead}, "2": {path: dst, flags: sftpFlagWrite}, "3": {path: dst, flags: sftpFlagWrite | sftpFlagAppend}} {
		front.openingID, front.opening = 1, f
		front.opened(1, h)
	}
	if _, err := held.Seek(2, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := front.copyData(copyDataRequest{From: "1", To: "2", ToOff: 4}); err != nil {
		t.Errorf("copy-data: %v", err)
	}
	if err := front.appendTo("3", []byte("+")); err != nil {
		t.Errorf("append: %v", err)
	}
	if err := front.copyData(copyDataRequest{From: "1", To: "3", Length: 2}); err != nil {
		t.Errorf("copy-data to append: %v", err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "0123source+so" {
		t.Errorf("the file is %q, want %q", got, "0123source+so")
	}
	if off, _ := held.Seek(0, io.SeekCurrent); off != 2 {
		t.Errorf("the held descriptor's offset moved from 2 to %d", off)
	}
	if fl, _, _ := syscall.Syscall(syscall.SYS_FCNTL, held.Fd(), syscall.F_GETFL, 0); fl&syscall.O_APPEND != 0 {
		t.Errorf("the held descriptor's flags %#x now append", fl)
	}
}

// TestSFTPFailedWriteFailsItsClose: one WRITE of an upload that fails among
// others that succeed makes the file's CLOSE fail, so that a client that, as
// OpenSSH's sftp does, looks only at its last WRITE and its CLOSE reports the
// upload failed instead of exiting 0 with a hole in the file. The failing
// WRITE (an offset past any file's size) is sent with the CLOSE behind it, as
// a pipelining client sends them, before its reply is read; a file whose
// writes all succeeded closes as before; so does one written by appends
// served by the front (its failed append is an EBADF: opened without WRITE).
func TestSFTPFailedWriteFailsItsClose(t *testing.T) {
	l := newSFTPLive(t, t.TempDir())
	status := func(what string, id uint32) (uint32, string) { t.Helper(); return l.status(t, what, id) }

	h := l.open(t, "holed", writeCreat)
	l.send(t, sftpWritePacket(2, h, 0, "first"), sftpWritePacket(3, h, 1<<63, "lost"), sftpWritePacket(4, h, 9, "last"), sftpPacket(sftpClose, uint32(5), h))
	for id := uint32(2); id <= 4; id++ {
		code, _ := status("WRITE", id)
		if (code == sftpOK) != (id != 3) {
			t.Fatalf("WRITE %d: code %d", id, code)
		}
	}
	if code, msg := status("CLOSE", 5); code != sftpFailure || msg != string(errWriteFailed) {
		t.Errorf("CLOSE of a file with a failed WRITE: code %d %q, want %d %q", code, msg, sftpFailure, errWriteFailed)
	}

	h = l.open(t, "whole", writeCreat)
	l.send(t, sftpWritePacket(6, h, 0, "all of it"), sftpPacket(sftpClose, uint32(7), h))
	if code, _ := status("WRITE", 6); code != sftpOK {
		t.Fatalf("WRITE: code %d", code)
	}
	if code, msg := status("CLOSE", 7); code != sftpOK {
		t.Errorf("CLOSE of a file written whole: code %d %q", code, msg)
	}

	h = l.open(t, "appended", sftpFlagRead|sftpFlagAppend|sftpFlagCreat)
	l.send(t, sftpWritePacket(8, h, 0, "x"), sftpPacket(sftpClose, uint32(9), h))
	if code, _ := status("append", 8); code == sftpOK {
		t.Fatal("an append to a file opened without WRITE succeeded")
	}
	if code, msg := status("CLOSE", 9); code != sftpFailure || msg != string(errWriteFailed) {
		t.Errorf("CLOSE of a file with a failed append: code %d %q", code, msg)
	}
}

// status reads the next reply, which must be the STATUS of request id, and
// returns its code and message.
func (l *sftpLive) status(t *testing.T, what string, id uint32) (uint32, string) {
	t.Helper()
	r := l.recv(t)
	if r[0] != sftpStatus || binary.BigEndian.Uint32(r[1:]) != id {
		t.Fatalf("%s: not the STATUS of request %d: %x", what, id, r)
	}
	var st struct {
		Code uint32
		Msg  string
		Rest []byte `ssh:"rest"`
	}
	if err := gossh.Unmarshal(r[5:], &st); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return st.Code, st.Msg
}

// sftpWritePacket is a WRITE of data at off to the file of handle h.
func sftpWritePacket(id uint32, h string, off uint64, data string) []byte {
	return sftpPacket(sftpWrite, id, h, binary.BigEndian.AppendUint64(nil, off), data)
}

const writeCreat = sftpFlagWrite | sftpFlagCreat

// A client that uses its request ids again (phpseclib sends most requests as
// id 1, its WRITEs as 0, 1, 2…): once a file's failed WRITE has failed its
// CLOSE, a later request with that id is answered as pkg/sftp answers it, and
// a READ at the end of a file, with the id of its last successful WRITE, does
// not fail the file's CLOSE.
func TestSFTPFailedWriteIDsReused(t *testing.T) {
	l := newSFTPLive(t, t.TempDir())
	h := l.open(t, "holed", writeCreat)
	l.send(t, sftpWritePacket(0, h, 0, "x"), sftpWritePacket(1, h, 1<<63, "y"), sftpPacket(sftpClose, uint32(1), h))
	l.status(t, "WRITE", 0)
	l.status(t, "WRITE", 1)
	if code, _ := l.status(t, "CLOSE", 1); code == sftpOK {
		t.Fatal("the CLOSE of a file with a failed WRITE succeeded")
	}
	h = l.open(t, "whole", writeCreat|sftpFlagRead)
	l.send(t, sftpWritePacket(0, h, 0, "ab"), sftpWritePacket(1, h, 2, "cd"))
	for id := range uint32(2) {
		if code, msg := l.status(t, "WRITE", id); code != sftpOK {
			t.Errorf("WRITE %d after the failed upload: %d %q", id, code, msg)
		}
	}
	l.send(t, sftpPacket(sftpRead, uint32(1), h, binary.BigEndian.AppendUint64(nil, 100), uint32(10)))
	if code, _ := l.status(t, "READ at the end", 1); code != sftpEOF {
		t.Fatalf("READ past the end: code %d, want EOF", code)
	}
	l.send(t, sftpPacket(sftpClose, uint32(1), h))
	if code, msg := l.status(t, "CLOSE", 1); code != sftpOK {
		t.Errorf("CLOSE of a file whose WRITEs all succeeded: %d %q", code, msg)
	}
}

// Two OPENs in flight at once, sent before either is answered (as a
// pipelining client sends them): each handle is noted with its own file's
// path and flags, the second OPEN's being noted only once the first is
// answered (see opened). Noted with the other's, or none, copy-data from the
// file opened to read to the one opened to append was refused (no READ
// flag, or a name not known), or read or wrote the wrong file, and the WRITE
// to append went at the client's offset.
func TestSFTPTwoOpensInFlight(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "src"), "source")
	writeFile(t, filepath.Join(dir, "log"), "log:")
	l := newSFTPLive(t, dir)
	l.send(t,
		sftpPacket(sftpOpen, uint32(2), "src", uint32(sftpFlagRead), uint32(0)),
		sftpPacket(sftpOpen, uint32(3), "log", uint32(sftpFlagWrite|sftpFlagAppend), uint32(0)),
	)
	handle := func(id uint32) string {
		t.Helper()
		r := l.recv(t)
		var h struct {
			ID uint32
			H  string
		}
		if r[0] != sftpHandle || gossh.Unmarshal(r[1:], &h) != nil || h.ID != id {
			t.Fatalf("reply %x, want the HANDLE of OPEN %d", r, id)
		}
		return h.H
	}
	src, log := handle(2), handle(3)
	l.send(t,
		sftpPacket(sftpExt, uint32(4), copyDataExt, src, uint64(0), uint64(0), log, uint64(0)),
		sftpWritePacket(5, log, 0, "!"),
		sftpPacket(sftpExt, uint32(6), copyDataExt, log, uint64(0), uint64(0), src, uint64(0)),
	)
	for _, want := range [][2]uint32{{4, sftpOK}, {5, sftpOK}, {6, sftpNoSuchFile}} {
		if code, msg := l.status(t, "reply", want[0]); code != want[1] {
			t.Errorf("request %d: code %d %q, want %d", want[0], code, msg, want[1])
		}
	}
	for name, want := range map[string]string{"src": "source", "log": "log:source!"} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); string(got) != want {
			t.Errorf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
}

// copy-data to a file read-only for the agent's user, written through the
// descriptor held on it (see heldForWriting and pwriter), puts a copy longer
// than one of io.Copy's 32 KiB writes at the offset asked, each write after
// the one before: a copy to offset 0 of a file with data in it overwrites
// that data, and is whole.
func TestSFTPCopyDataHeldAtOffset(t *testing.T) {
	if !asNonRoot(t) {
		return
	}
	const perms = 0x04 // SSH_FILEXFER_ATTR_PERMISSIONS
	dir := t.TempDir()
	data := make([]byte, 100<<10)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "src"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	l := newSFTPLive(t, dir)
	src := l.open(t, "src", sftpFlagRead)
	l.send(t, sftpPacket(sftpOpen, uint32(2), "copy", uint32(sftpFlagWrite|sftpFlagCreat|sftpFlagTrunc), uint32(perms), uint32(0o444)))
	r := l.recv(t)
	if r[0] != sftpHandle {
		t.Fatalf("OPEN copy: %x", r)
	}
	dst := string(r[9:])
	l.send(t, sftpWritePacket(3, dst, 0, "old data"),
		sftpPacket(sftpExt, uint32(4), copyDataExt, src, uint64(0), uint64(0), dst, uint64(0)))
	for id := uint32(3); id <= 4; id++ {
		if code, msg := l.status(t, "reply", id); code != sftpOK {
			t.Fatalf("request %d: code %d %q", id, code, msg)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "copy"))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("the copy: %d bytes starting %q (%v), want the source's %d bytes", len(got), got[:min(len(got), 8)], err, len(data))
	}
}

// A handle of a file that is not a regular one (/dev/null here) is noted with
// no name and no flags: copy-data from it is refused, as reopen would open
// whatever the device is again (/dev/zero would be copied until the disk is
// full), and it is not counted among the files open for writing, which a
// session that ends with some says is a transfer cut short.
func TestSFTPNonRegularFileNotNoted(t *testing.T) {
	dir := t.TempDir()
	l := newSFTPLive(t, dir)
	null := l.open(t, "/dev/null", sftpFlagRead|sftpFlagWrite)
	f := l.open(t, "f", sftpFlagWrite|sftpFlagCreat)
	l.open(t, "f", sftpFlagRead)
	l.send(t, sftpPacket(sftpExt, uint32(2), copyDataExt, null, uint64(0), uint64(0), f, uint64(0)))
	if code, msg := l.status(t, "copy-data from /dev/null", 2); code != sftpFailure || msg != string(errNameUnknown) {
		t.Errorf("copy-data from /dev/null: code %d %q, want %d %q", code, msg, sftpFailure, errNameUnknown)
	}
	if n := l.front.openForWriting(); n != 1 {
		t.Errorf("%d files open for writing, want 1 (f opened to write; not /dev/null, nor f opened to read)", n)
	}
}

// copy-data between two handles of one file (opened twice, once to read and
// once to write) is refused as copy-data within one handle is: from a range
// into one after it, a copy to the end of the file could read what it had
// just written, and go on until the disk is full. The copy here is bounded,
// so that a server that serves it writes only 4 bytes.
func TestSFTPCopyDataWithinOneFileByTwoHandles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), "0123")
	l := newSFTPLive(t, dir)
	r := l.open(t, "f", sftpFlagRead)
	w := l.open(t, "f", sftpFlagWrite)
	l.send(t, sftpPacket(sftpExt, uint32(2), copyDataExt, r, uint64(0), uint64(4), w, uint64(4)))
	if code, msg := l.status(t, "copy-data", 2); code != sftpFailure {
		t.Errorf("copy-data from one handle of f to another: code %d %q, want %d", code, msg, sftpFailure)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "f")); string(got) != "0123" {
		t.Errorf("f = %q, want it unchanged", got)
	}
}

// copy-data with a length past the largest int64 (a client's "to the end",
// as UINT64_MAX) copies to the end of the file, as with length 0: taken as
// an int64, it was negative, and the copy wrote nothing and said it succeeded.
func TestSFTPCopyDataHugeLength(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "src"), "source")
	l := newSFTPLive(t, dir)
	src := l.open(t, "src", sftpFlagRead)
	dst := l.open(t, "dst", sftpFlagWrite|sftpFlagCreat)
	l.send(t, sftpPacket(sftpExt, uint32(2), copyDataExt, src, uint64(2), uint64(math.MaxUint64), dst, uint64(0)))
	if code, msg := l.status(t, "copy-data", 2); code != sftpOK {
		t.Fatalf("copy-data of length 2^64-1: code %d %q", code, msg)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "dst")); string(got) != "urce" {
		t.Errorf("dst = %q (%v), want \"urce\"", got, err)
	}
}

// fsync@openssh.com of a file read-only for the agent's user (put -p gives
// the copy the original's mode 0444 before put -f's fsync) flushes it with
// fsync(2), which reports a failed write-back, not only with sync(2): the
// file is opened again to read, which its mode allows.
func TestSFTPFsyncReadOnlyForTheUser(t *testing.T) {
	if !asNonRoot(t) {
		return
	}
	calls := recordFsyncs(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ro.bin"), []byte("data"), 0o444); err != nil {
		t.Fatal(err)
	}
	l := newSFTPLive(t, dir)
	h := l.open(t, "ro.bin", sftpFlagRead)
	l.send(t, sftpPacket(sftpExt, uint32(2), fsyncExt, h))
	if code, msg := l.status(t, "fsync", 2); code != sftpOK {
		t.Errorf("fsync of a read-only file: code %d %q, want OK", code, msg)
	}
	calls.mu.Lock()
	defer calls.mu.Unlock()
	if len(calls.files) != 1 || !strings.HasSuffix(calls.files[0], "/ro.bin 4") || calls.syncs != 0 {
		t.Errorf("flushed: fsync %q, sync %d; want fsync of ro.bin and no sync", calls.files, calls.syncs)
	}
}
