package sshd

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deepFile makes, under dir, directories nested deep enough that a file in
// the deepest has a path of n bytes (each name at most NAME_MAX), writes
// data to it and returns its path.
func deepFile(t *testing.T, dir string, n int, data string) string {
	t.Helper()
	p := dir
	for left := n - len(dir) - len("/file"); left > 0; {
		k := min(255, left-1)
		if left-1-k == 1 {
			k-- // no name of 0 bytes next
		}
		p += "/" + strings.Repeat("d", k)
		left -= k + 1
	}
	p += "/file"
	if len(p) != n {
		t.Fatalf("deepFile: a path of %d bytes, want %d", len(p), n)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, data)
	return p
}

// A file opened to append by a path of up to PATH_MAX takes its WRITEs at its
// end, as one by a short path does (TestSFTPAppendWritesAtTheEnd). The front
// looked at each request through a 4096-byte buffer, so an OPEN whose path
// filled it (4080 bytes and more) went to pkg/sftp without its path and
// flags noted, and pkg/sftp wrote curl --append's data at offset 0, over
// the file's start, and answered OK.
func TestSFTPAppendLongPath(t *testing.T) {
	for _, n := range []int{4000, 4080, 4095} { // 4095: the longest path the kernel takes
		dir := t.TempDir()
		p := deepFile(t, dir, n, "HELLO")
		l := newSFTPLive(t, dir)
		h := l.open(t, p, 0x06) // WRITE|APPEND
		l.send(t, sftpPacket(6, uint32(2), h, uint32(0), uint32(0), "XY"))
		l.send(t, sftpPacket(4, uint32(3), h))
		for id := uint32(2); id <= 3; id++ {
			if r := l.recv(t); r[0] != sftpStatus || binary.BigEndian.Uint32(r[1:]) != id || binary.BigEndian.Uint32(r[5:]) != sftpOK {
				t.Fatalf("path of %d bytes: reply %x, want OK for %d", n, r, id)
			}
		}
		if b, _ := os.ReadFile(p); string(b) != "HELLOXY" {
			t.Errorf("path of %d bytes: after a WRITE at offset 0 to a file opened to append: %q, want %q", n, b, "HELLOXY")
		}
	}
}

// An OPEN of a terminal by a path of up to PATH_MAX is refused, as one by a
// short path is (TestSFTPOpenTerminalRefused): the front did not see a path
// that filled its 4096-byte buffer, so any terminal could be opened in the
// agent's process by padding its name ("/dev/" + "./"×2040 + "ptmx"). A
// path longer than the kernel takes, which the front does not read whole
// before deciding, is refused as too long, with no path in the reply.
func TestSFTPOpenTerminalLongPath(t *testing.T) {
	_, name := unusedTerminal(t)
	padded := func(n int) string { // name, n bytes long
		dir, base := filepath.Split(name)
		return dir + strings.Repeat("./", (n-len(name))/2) + strings.Repeat("/", (n-len(name))%2) + base
	}
	l := newSFTPLive(t, t.TempDir())
	for _, n := range []int{4000, 4090, 4095} {
		p := padded(n)
		l.send(t, sftpPacket(sftpOpen, uint32(n), p, uint32(sftpFlagRead|sftpFlagWrite), uint32(0)))
		if r := l.recv(t); r[0] != sftpStatus || !strings.Contains(string(r), "a terminal is not opened") {
			t.Errorf("OPEN of %s by a path of %d bytes: %q, want the terminal refused", name, len(p), r)
		}
	}
	// The path and the start of its extended attributes fit in the buffer,
	// not the flags and attributes a SETSTAT's path is followed by; then
	// not even the path.
	for _, n := range []int{sftpPathMax + 1, 3 * sftpPathMax} {
		p := padded(n)
		l.send(t, sftpPacket(sftpOpen, uint32(n), p, uint32(sftpFlagRead),
			uint32(0x80000000), uint32(1), "x", strings.Repeat("x", 200))) // EXTENDED
		r := l.recv(t)
		if r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) != sftpBadMessage || strings.Contains(string(r), "/dev/") {
			t.Errorf("OPEN of %s by a path of %d bytes: %q, want BAD_MESSAGE (file name too long) without the path", name, len(p), r)
		}
	}
}

// A request whose handle, extension name or path does not fit in the front's
// buffer is refused by the front, as none given out, none known or too long,
// as sftp-server answers them (a SETSTAT is served, as there), and the
// session goes on.
func TestSFTPTooLongToInspectRefused(t *testing.T) {
	long := strings.Repeat("h", sftpPeekSize)
	l := newSFTPLive(t, t.TempDir())
	for _, tc := range []struct {
		name string
		req  []byte
		code uint32
	}{
		{"WRITE", sftpPacket(sftpWrite, uint32(1), long, uint32(0), uint32(0), "x"), sftpFailure},
		{"FSTAT", sftpPacket(sftpFstat, uint32(1), long), sftpFailure},
		{"FSETSTAT", sftpPacket(sftpFsetstat, uint32(1), long, uint32(0)), sftpFailure},
		{"CLOSE", sftpPacket(sftpClose, uint32(1), long), sftpFailure},
		{"EXTENDED", sftpPacket(sftpExt, uint32(1), long), sftpOpUnsupported},
		{"SETSTAT", sftpPacket(sftpSetstat, uint32(1), "/"+long, uint32(4), uint32(0o644)), sftpBadMessage}, // PERMISSIONS
		{"SETSTAT of nothing", sftpPacket(sftpSetstat, uint32(1), "/"+long, uint32(0)), sftpOK},             // as sftp-server: no call made
		{"READLINK", sftpPacket(sftpReadlink, uint32(1), "/"+long), sftpBadMessage},
		{"OPEN", sftpPacket(sftpOpen, uint32(1), "/"+long, uint32(sftpFlagRead), uint32(0)), sftpBadMessage},
	} {
		l.send(t, tc.req)
		if r := l.recv(t); r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) != tc.code || len(r) > 100 {
			t.Errorf("%s of %d bytes: %q, want status %d from the front", tc.name, len(tc.req), r, tc.code)
		}
	}
	l.send(t, sftpPacket(sftpRealpath, uint32(2), "."))
	if r := l.recv(t); r[0] != sftpName {
		t.Errorf("REALPATH after: %x", r)
	}
}
