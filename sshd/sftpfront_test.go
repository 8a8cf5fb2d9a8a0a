package sshd

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// sftpPacket frames an SFTP packet of type typ with the fields of body.
func sftpPacket(typ byte, body ...any) []byte {
	var b []byte
	for _, f := range body {
		switch v := f.(type) {
		case uint32:
			b = binary.BigEndian.AppendUint32(b, v)
		case string:
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		case uint64:
			b = binary.BigEndian.AppendUint64(b, v)
		case []byte:
			b = append(b, v...)
		default:
			panic(fmt.Sprintf("sftpPacket: a field of type %T", f))
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(1+len(b))), append([]byte{typ}, b...)...)
}

// sftpReadOnly rewrites, in a client's stream of SFTP packets, every request
// that could change the file system or block on it into a STAT of the same
// path (the same layout: id, then a string): OPEN (which also opens FIFOs),
// WRITE, SETSTAT, FSETSTAT, REMOVE, MKDIR, RMDIR, RENAME, SYMLINK, and every
// EXTENDED request but those that only read (or one whose name does not
// parse) and those that act only on open files (fsync, copy-data: with OPEN
// made a STAT no file is open). The fuzzer runs as root and paths are its to
// choose. Packets are cut where their lengths say, as the front and pkg/sftp
// cut them.
func sftpReadOnly(in []byte) []byte {
	out := bytes.Clone(in)
	for rest := out; len(rest) >= 5; {
		size := binary.BigEndian.Uint32(rest)
		typ := &rest[4]
		switch *typ {
		case 3, 6, 9, 10, 13, 14, 15, 18, 20:
			*typ = 17 // SSH_FXP_STAT
		case sftpExt:
			var req struct {
				ID   uint32
				Name string
				Rest []byte `ssh:"rest"`
			}
			end := max(5, min(uint64(len(rest)), 4+uint64(size)))
			if gossh.Unmarshal(rest[5:end], &req) != nil || !slices.Contains(sftpExtensions, req.Name) && req.Name != "statvfs@openssh.com" {
				*typ = 17
			}
		}
		if uint64(len(rest)) < 4+uint64(size) {
			break
		}
		rest = rest[4+size:]
	}
	return out
}

// FuzzSFTPFront sends a client's stream of requests (after a valid INIT) to an
// SFTP session as runSFTP wires it, the front before pkg/sftp, with requests
// that could change the file system made read-only (sftpReadOnly). The
// session must end when the stream does, and what it sends back must be whole
// packets, one after another: the front's own replies never land inside one
// of pkg/sftp's.
func FuzzSFTPFront(f *testing.F) {
	init := sftpPacket(1, uint32(3))
	f.Add(sftpPacket(200, uint32(1), limitsExt))
	f.Add(append(sftpPacket(200, uint32(1), expandPath, "."), sftpPacket(200, uint32(2), expandPath, "~root/x")...))
	f.Add(bytes.Join([][]byte{
		sftpPacket(11, uint32(1), "."), sftpPacket(12, uint32(2), "d1"), sftpPacket(12, uint32(3), "d1"),
		sftpPacket(4, uint32(4), "d1"), sftpPacket(4, uint32(5), "d1"), sftpPacket(17, uint32(6), "."),
	}, nil))
	f.Add(append(sftpPacket(16, uint32(1), "."), sftpPacket(200, uint32(2), "statvfs@openssh.com", ".")...))
	f.Add(sftpPacket(200, uint32(1), limitsExt, "trailing"))
	f.Add(bytes.Join([][]byte{
		sftpPacket(16, uint32(1), ""), sftpPacket(16, uint32(2), "/proc/self/cwd/../x/"), sftpPacket(16, uint32(3), "/.."),
		sftpPacket(200, uint32(4), expandPath, "~/a/../../b"),
	}, nil))
	f.Add(sftpPacket(200, uint32(1)))
	f.Add(sftpPacket(200, uint32(1), usersGroupsExt, "\x00\x00\x00\x00\x00\x00\x03\xe8", "\x00\x00\x00\x0a"))
	f.Add(bytes.Join([][]byte{
		sftpPacket(11, uint32(1), "."), sftpPacket(200, uint32(2), fsyncExt, "d1"), sftpPacket(200, uint32(3), fsyncExt, "1"),
		sftpPacket(200, uint32(4), copyDataExt, "d1", make([]byte, 16), "1", make([]byte, 8)),
	}, nil))
	f.Add([]byte{0, 0, 0, 3, 12, 0, 0})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 9, 4, 0, 0, 0, 1, 0, 0, 0, 9})
	f.Fuzz(func(t *testing.T, stream []byte) {
		replies := sftpReplies(t, runSFTPStream(t, append(bytes.Clone(init), sftpReadOnly(stream)...)))
		if len(replies) > 0 && replies[0][0] != sftpVersion {
			t.Fatalf("first reply is type %d, not VERSION", replies[0][0])
		}
	})
}

// FuzzSFTPWritesInChunks uploads data to a file in WRITEs of the sizes sizes
// gives, sent all at once (as OpenSSH's sftp and scp pipeline them) and read by
// the session in pieces of the sizes cuts gives, as a channel's data arrives:
// the WRITEs and the CLOSE are answered OK and the file is the data. The front peeks at
// each request in its read buffer, which the pieces leave anywhere in it (see
// TestSFTPWriteHeaderAfterBufferSlides).
func FuzzSFTPWritesInChunks(f *testing.F) {
	f.Add([]byte{200, 30, 255, 7}, []byte{17, 250, 3, 90, 1, 128}, bytes.Repeat([]byte{sftpOpen}, 20000))
	f.Add([]byte{1, 2, 3}, []byte{5}, []byte("hello, world"))
	f.Fuzz(func(t *testing.T, sizes, cuts, data []byte) {
		if len(data) == 0 || len(data) > 64<<10 || len(sizes) == 0 || len(cuts) == 0 {
			return
		}
		in := append(sftpPacket(1, uint32(3)), sftpPacket(3, uint32(1), "f", uint32(0x1a), uint32(0))...) // WRITE|CREAT|TRUNC
		var want [][2]uint32
		for off, i := 0, 0; off < len(data); i++ {
			n := min(len(data)-off, 1+int(sizes[i%len(sizes)])*40) // up to 10 KiB
			in = append(in, sftpPacket(6, uint32(2+i), "1", uint32(0), uint32(off), string(data[off:off+n]))...)
			want = append(want, [2]uint32{uint32(2 + i), sftpOK})
			off += n
		}
		// The CLOSE of a file whose WRITEs all succeeded succeeds (see
		// writeFailed).
		in = append(in, sftpPacket(4, uint32(2+len(want)), "1")...)
		want = append(want, [2]uint32{uint32(2 + len(want)), sftpOK})
		dir := t.TempDir()
		replies := sftpReplies(t, runSFTPReader(t, dir, &piecesReader{b: in, cuts: cuts}))
		if len(replies) < 2 || replies[1][0] != sftpHandle || string(replies[1][9:]) != "1" {
			t.Fatalf("OPEN: %x, want handle 1", replies[1:min(2, len(replies))])
		}
		// The last replies may still be on their way out when the session has
		// ended with the stream (see runSFTPStream); the writes are all done.
		sftpStatuses(t, replies[2:], want[:len(replies)-2]...)
		if fi, err := os.Stat(filepath.Join(dir, "f")); err != nil || fi.Size() != int64(len(data)) {
			t.Fatalf("the file: %v, want the %d bytes written", fileSize(fi, err), len(data))
		}
		if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the file differs from what was written (%v)", err)
		}
	})
}

// piecesReader reads b in pieces of 1 to 2041 bytes, their sizes taken in turn
// from cuts.
type piecesReader struct {
	b    []byte
	cuts []byte
	i    int
}

func (r *piecesReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 1+int(r.cuts[r.i%len(r.cuts)])*8)], r.b)
	r.i++
	r.b = r.b[n:]
	return n, nil
}

// sftpReplies cuts what a session sent back into its packets (the type first,
// the length left off), failing t if one is torn or shorter than a type and
// an id (or VERSION's version).
func sftpReplies(t testing.TB, out []byte) [][]byte {
	t.Helper()
	var replies [][]byte
	for n := 0; len(out) > 0; n++ {
		if len(out) < 4 {
			t.Fatalf("reply %d: %d bytes, not a whole length", n, len(out))
		}
		size := binary.BigEndian.Uint32(out)
		if size < 5 || uint64(size) > uint64(len(out)-4) {
			t.Fatalf("reply %d: length %d with %d bytes left", n, size, len(out)-4)
		}
		replies = append(replies, out[4:4+size])
		out = out[4+size:]
	}
	return replies
}

// sftpStatuses checks that replies are SSH_FXP_STATUS replies with the ids and
// codes of want (request id to code), in order.
func sftpStatuses(t *testing.T, replies [][]byte, want ...[2]uint32) {
	t.Helper()
	if len(replies) != len(want) {
		t.Fatalf("%d replies, want %d: %x", len(replies), len(want), replies)
	}
	for i, w := range want {
		var got struct{ ID, Code uint32 }
		if len(replies[i]) < 9 || replies[i][0] != sftpStatus || gossh.Unmarshal(replies[i][1:9], &got) != nil || got.ID != w[0] || got.Code != w[1] {
			t.Errorf("reply %x, want status %d for %d", replies[i], w[1], w[0])
		}
	}
}

// runSFTPStream serves the client's stream in as runSFTP does, the front
// before pkg/sftp, in a new directory, and returns what the session has sent
// back once it has ended with the stream. (pkg/sftp's Serve returns once its
// workers have, while its last replies may still be on their way out: out is
// locked, and a reply is one Write, so what it holds is whole packets.)
func runSFTPStream(t *testing.T, in []byte) []byte {
	return runSFTPStreamIn(t, t.TempDir(), in)
}

// runSFTPStreamIn is runSFTPStream with dir as the working directory.
func runSFTPStreamIn(t *testing.T, dir string, in []byte) []byte {
	return runSFTPReader(t, dir, bytes.NewReader(in))
}

// runSFTPReader is runSFTPStreamIn with the client's stream read from in.
func runSFTPReader(t *testing.T, dir string, in io.Reader) []byte {
	out := &lockedBuffer{}
	front := newSFTPFront(in, out, dir, func(user string) (string, bool) {
		return dir, user == ""
	}, nil)
	defer front.closeDirs()
	rw := &sftpChannel{front: front}
	srv, err := sftp.NewServer(rw, sftp.WithServerWorkingDirectory(dir), sftp.WithMaxTxPacket(maxSFTPRead))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve() // ends with the stream, or at a malformed packet
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end with the client's stream")
	}
	return []byte(out.String())
}

// TestSFTPLimits: limits@openssh.com is offered in VERSION and answered with
// the sizes the session takes; a request with bytes after the name is
// answered alike (sftp-server ignores them too).
func TestSFTPLimits(t *testing.T) {
	in := bytes.Join([][]byte{
		sftpPacket(1, uint32(3)),
		sftpPacket(200, uint32(7), limitsExt),
		sftpPacket(200, uint32(8), limitsExt, "more"),
	}, nil)
	replies := sftpReplies(t, runSFTPStream(t, in))
	if len(replies) != 3 {
		t.Fatalf("%d replies, want VERSION and two", len(replies))
	}
	var version struct {
		Version uint32
		Exts    []byte `ssh:"rest"`
	}
	if replies[0][0] != sftpVersion || gossh.Unmarshal(replies[0][1:], &version) != nil {
		t.Fatalf("first reply %x, want VERSION", replies[0])
	}
	if !bytes.Contains(version.Exts, sftpPacket(0, limitsExt, "1")[5:]) {
		t.Errorf("VERSION's extensions %q do not offer %s", version.Exts, limitsExt)
	}
	type limits struct {
		ID                           uint32
		Packet, Read, Write, Handles uint64
	}
	for i, id := range []uint32{7, 8} {
		var got limits
		if r := replies[1+i]; r[0] != sftpExtReply || gossh.Unmarshal(r[1:], &got) != nil {
			t.Fatalf("reply to %d: %x, want EXTENDED_REPLY", id, r)
		}
		if want := (limits{id, 256 << 10, 32 << 10, 255 << 10, maxOpenHandles}); got != want {
			t.Errorf("limits = %+v, want %+v", got, want)
		}
	}
}

// TestSFTPRepliesWireForm pins the bytes of the replies gossh.Marshal builds
// from structs with a `_ func()` field (sftpStatusPacket): the field is
// skipped, so a reply holds its other fields alone.
func TestSFTPRepliesWireForm(t *testing.T) {
	var exts []any
	for _, e := range sftpExtensions {
		exts = append(exts, e, "1")
	}
	// A request after INIT, as the server answers VERSION with the first.
	replies := sftpReplies(t, runSFTPStream(t, append(sftpPacket(1, uint32(3)), sftpPacket(200, uint32(7), limitsExt)...)))
	// pkg/sftp's own extensions come first; the front's are appended.
	if want := sftpPacket(0, exts...)[5:]; len(replies) == 0 || !bytes.HasSuffix(replies[0], want) {
		t.Errorf("VERSION reply = %x, want it to end with %x", replies, want)
	}
	for _, tc := range []struct {
		name      string
		got, want []byte
	}{
		{"STATUS", sftpStatusPacket(7, io.EOF), sftpPacket(sftpStatus, uint32(7), uint32(sftpEOF), "End of file", "")},
		{"NAME", sftpNamePacket(7, "/x", nil), sftpPacket(sftpName, uint32(7), uint32(1), "/x", "/x", uint32(0))},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s reply = %x, want %x", tc.name, tc.got, tc.want)
		}
	}
}

// TestSFTPUsersGroupsByID: ids are answered in order, "" for those the
// passwd and group files do not name (here there are none: no Server), and a
// list that is not whole uint32s is refused without ending the session.
func TestSFTPUsersGroupsByID(t *testing.T) {
	ids := func(n ...uint32) string {
		var b []byte
		for _, v := range n {
			b = binary.BigEndian.AppendUint32(b, v)
		}
		return string(b)
	}
	replies := sftpReplies(t, runSFTPStream(t, bytes.Join([][]byte{
		sftpPacket(1, uint32(3)),
		sftpPacket(200, uint32(5), usersGroupsExt, ids(0, 1000), ids(7)),
		sftpPacket(200, uint32(6), usersGroupsExt, "abc", ""),
		sftpPacket(200, uint32(7), limitsExt),
	}, nil)))
	if len(replies) != 4 {
		t.Fatalf("%d replies, want VERSION and three", len(replies))
	}
	var names struct {
		ID            uint32
		Users, Groups string
	}
	if replies[1][0] != sftpExtReply || gossh.Unmarshal(replies[1][1:], &names) != nil {
		t.Fatalf("reply to users-groups-by-id: %x", replies[1])
	}
	empty := string(gossh.Marshal(struct{ A string }{""}))
	if names.ID != 5 || names.Users != empty+empty || names.Groups != empty {
		t.Errorf("users-groups-by-id = %+v, want two and one empty names", names)
	}
	sftpStatuses(t, replies[2:3], [2]uint32{6, sftpFailure}) // a malformed id list
	if replies[3][0] != sftpExtReply {
		t.Errorf("the session did not go on after the malformed request: %x", replies[3])
	}
}

// TestSFTPUsersGroupsByIDNamed: with a Server, users-groups-by-id names
// uids from its passwd file and gids from its group file, the first name of
// an id winning (as in listings and as getpwuid(3) answers), "" for an id a
// file does not name; and the group file is not left open.
func TestSFTPUsersGroupsByIDNamed(t *testing.T) {
	dir := t.TempDir()
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	writeFile(t, passwd, "zz-first:x:4242:4343::/:/bin/sh\nzz-second:x:4242:4343::/:/bin/sh\n")
	writeFile(t, group, "zz-group:x:4343:\nzz-glater:x:4343:\nzz-g4242:x:4242:\n")
	s := newSFTPFront(bytes.NewReader(nil), io.Discard, dir, nil, &Server{PasswdFile: passwd, GroupFile: group})
	ids := func(n ...uint32) string {
		var b []byte
		for _, v := range n {
			b = binary.BigEndian.AppendUint32(b, v)
		}
		return string(b)
	}
	names := func(n ...string) string {
		var b []byte
		for _, v := range n {
			b = append(b, gossh.Marshal(struct{ S string }{v})...)
		}
		return string(b)
	}
	reply := s.usersGroups(5, gossh.Marshal(struct{ UIDs, GIDs string }{ids(4242, 7), ids(4343, 4242, 7)}))
	var got struct {
		ID            uint32
		Users, Groups string
	}
	if reply[4] != sftpExtReply || gossh.Unmarshal(reply[5:], &got) != nil {
		t.Fatalf("reply to users-groups-by-id: %q", reply)
	}
	if want := names("zz-first", ""); got.Users != want {
		t.Errorf("users %q, want %q", got.Users, want)
	}
	if want := names("zz-group", "zz-g4242", ""); got.Groups != want {
		t.Errorf("groups %q, want %q", got.Groups, want)
	}
	// Ids not whole uint32s, in either list, are refused.
	sftpStatuses(t, [][]byte{s.usersGroups(6, gossh.Marshal(struct{ UIDs, GIDs string }{ids(4242), "abc"}))[4:]},
		[2]uint32{6, sftpFailure})
	// A listing names the owner from passwd and the group from group (told
	// apart where the test may give a file another owner and group).
	if os.Geteuid() == 0 {
		writeFile(t, filepath.Join(dir, "f"), "x")
		if err := os.Lchown(filepath.Join(dir, "f"), 4242, 4343); err != nil {
			t.Fatal(err)
		}
		reply = s.readdir(8, string(s.opendir(7, dir)[13:]))
		s.closeDirs()
		if want := " zz-first zz-group "; !bytes.Contains(reply, []byte(want)) {
			t.Errorf("listing %q: no long name with %q", reply, want)
		}
	}
	if n := descriptorsOn(t, group); n != 0 {
		t.Errorf("%d descriptors left open on the group file", n)
	}
}

// fsyncCalls replaces the seams through which fsync@openssh.com flushes and
// records the calls: the path and size of each file fsync(2) was given
// (from the descriptor) and the number of sync(2) calls.
type fsyncCalls struct {
	mu    sync.Mutex
	files []string // "path size"
	syncs int
}

func recordFsyncs(t *testing.T) *fsyncCalls {
	c := &fsyncCalls{}
	oldFile, oldAll := fsyncFile, syncAll
	t.Cleanup(func() { fsyncFile, syncAll = oldFile, oldAll })
	fsyncFile = func(f *os.File) error {
		// The kernel's name for the descriptor, not the one it was opened by.
		p, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		fi, _ := f.Stat()
		c.mu.Lock()
		c.files = append(c.files, fmt.Sprintf("%s %d", p, fi.Size()))
		c.mu.Unlock()
		return nil
	}
	syncAll = func() {
		c.mu.Lock()
		c.syncs++
		c.mu.Unlock()
	}
	return c
}

func (c *fsyncCalls) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("fsync %q, sync %d", c.files, c.syncs)
}

// TestSFTPFsync: fsync@openssh.com is offered, flushes the file of a handle
// pkg/sftp holds open once the writes before it are in, and is refused as
// sftp-server refuses it for a handle that is not open (never opened, or
// closed) and for a directory's (no such file).
func TestSFTPFsync(t *testing.T) {
	calls := recordFsyncs(t)
	const create = sftpFlagWrite | sftpFlagCreat | sftpFlagTrunc
	replies := sftpReplies(t, runSFTPStream(t, bytes.Join([][]byte{
		sftpPacket(1, uint32(3)),
		sftpPacket(sftpOpen, uint32(2), "f.bin", uint32(create), uint32(0)),
		// A request served here goes once those before it are answered: the
		// OPEN is, before the WRITE reaches pkg/sftp (which would run them at
		// once, as no client sends them).
		sftpPacket(sftpExt, uint32(20), limitsExt),
		sftpPacket(sftpWrite, uint32(3), "1", uint32(0), uint32(0), "data"),
		sftpPacket(sftpExt, uint32(4), fsyncExt, "1"),
		sftpPacket(sftpOpendir, uint32(5), "."),
		sftpPacket(sftpExt, uint32(6), fsyncExt, "d1"),
		sftpPacket(sftpExt, uint32(7), fsyncExt, "9"),
		sftpPacket(sftpClose, uint32(8), "1"),
		sftpPacket(sftpExt, uint32(9), fsyncExt, "1"),
	}, nil)))
	if len(replies) != 10 {
		t.Fatalf("%d replies, want VERSION and nine", len(replies))
	}
	replies = slices.Delete(replies, 2, 3) // limits
	if !bytes.Contains(replies[0], sftpPacket(0, fsyncExt, "1")[5:]) {
		t.Errorf("VERSION %q does not offer %s", replies[0], fsyncExt)
	}
	if want := sftpPacket(sftpHandle, uint32(2), "1")[4:]; !bytes.Equal(replies[1], want) {
		t.Fatalf("reply to OPEN %q, want the handle \"1\" (pkg/sftp numbers its handles)", replies[1])
	}
	sftpStatuses(t, [][]byte{replies[2], replies[3], replies[5], replies[6], replies[7], replies[8]},
		[2]uint32{3, sftpOK}, [2]uint32{4, sftpOK},
		[2]uint32{6, sftpNoSuchFile}, // a directory's handle
		[2]uint32{7, sftpNoSuchFile}, // never opened
		[2]uint32{8, sftpOK},
		[2]uint32{9, sftpNoSuchFile}, // closed
	)
	if len(calls.files) != 1 || !strings.HasSuffix(calls.files[0], "/f.bin 4") || calls.syncs != 0 {
		t.Errorf("flushed: %v, want fsync of f.bin with its 4 bytes written", calls)
	}
}

// TestSFTPFsyncWriteBackError: a failed fsync(2) (a write-back error, EIO)
// is the reply to fsync@openssh.com, as from sftp-server, so that sftp's put
// -f says the upload is not safe on disk; and the descriptor the file was
// opened again with is closed, not left open for each fsync of a session.
func TestSFTPFsyncWriteBackError(t *testing.T) {
	old := fsyncFile
	t.Cleanup(func() { fsyncFile = old })
	var flushed []*os.File // the seam runs in the front's goroutine, before the reply
	fsyncFile = func(f *os.File) error {
		flushed = append(flushed, f)
		return syscall.EIO
	}
	const create = sftpFlagWrite | sftpFlagCreat | sftpFlagTrunc
	replies := sftpReplies(t, runSFTPStream(t, bytes.Join([][]byte{
		sftpPacket(1, uint32(3)),
		sftpPacket(sftpOpen, uint32(2), "f.bin", uint32(create), uint32(0)),
		sftpPacket(sftpExt, uint32(3), fsyncExt, "1"),
	}, nil)))
	if len(replies) != 3 {
		t.Fatalf("%d replies, want VERSION and two", len(replies))
	}
	sftpStatuses(t, replies[2:], [2]uint32{3, sftpFailure})
	if !bytes.Contains(replies[2], []byte(syscall.EIO.Error())) {
		t.Errorf("reply to fsync %q, want it to say %q", replies[2], syscall.EIO.Error())
	}
	if len(flushed) != 1 {
		t.Fatalf("fsync(2) ran %d times, want once", len(flushed))
	}
	if err := flushed[0].Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the descriptor fsync(2) was given is still open after the reply (Close: %v)", err)
	}
}

// TestSFTPReaddirNotADirectory: READDIR with a file's handle, or one never
// opened, is "failure", as sftp-server answers it.
func TestSFTPReaddirNotADirectory(t *testing.T) {
	replies := sftpReplies(t, runSFTPStream(t, bytes.Join([][]byte{
		sftpPacket(1, uint32(3)),
		sftpPacket(sftpOpen, uint32(2), "f", uint32(0x02|0x08), uint32(0)), // WRITE, CREAT
		sftpPacket(sftpExt, uint32(3), limitsExt),                          // the OPEN is answered first
		sftpPacket(sftpReaddir, uint32(4), "1"),
		sftpPacket(sftpReaddir, uint32(5), "9"),
	}, nil)))
	if len(replies) != 5 {
		t.Fatalf("%d replies, want VERSION and four", len(replies))
	}
	sftpStatuses(t, replies[3:], [2]uint32{4, sftpFailure}, [2]uint32{5, sftpFailure})
}

// TestSFTPFsyncFileMoved: a file renamed, or replaced by a FIFO, since it was
// opened is not the file at its path any more: every file system is flushed
// instead, and the FIFO does not hold the session (open(2) would wait for a
// writer).
func TestSFTPFsyncFileMoved(t *testing.T) {
	calls := recordFsyncs(t)
	e := newEnv(t, nil)
	_, cl := sftpClient(t, e)
	home := e.home("root")
	for _, tc := range []struct {
		name  string
		moved func(p string) error
	}{
		{"renamed", func(p string) error { return os.Rename(p, p+".old") }},
		{"replaced by a FIFO", func(p string) error {
			os.Remove(p)
			return syscall.Mkfifo(p, 0o600)
		}},
	} {
		f, err := cl.Create("moved.bin")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		if err := tc.moved(filepath.Join(home, "moved.bin")); err != nil {
			t.Fatal(err)
		}
		before := calls.String()
		done := make(chan error, 1)
		go func() { done <- f.Sync() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: fsync: %v", tc.name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: fsync still waiting after 10 s", tc.name)
		}
		f.Close()
		os.Remove(filepath.Join(home, "moved.bin"))
		if got := calls.String(); len(calls.files) != 0 || got == before {
			t.Errorf("%s: flushed: %v, want sync once more and no fsync", tc.name, got)
		}
	}
	// The file where it was opened: fsync(2).
	f, err := cl.Create("kept.bin")
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("data"))
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if len(calls.files) != 1 || calls.files[0] != filepath.Join(home, "kept.bin")+" 4" || calls.syncs != 2 {
		t.Errorf("flushed: %v, want fsync of kept.bin after two syncs", calls)
	}
}

// TestSFTPCopyData: copy-data copies a whole file, a range to an offset, and
// to the end of a file opened to append; it is refused for a handle not
// opened to read (from) or to write (to), within one file, for a handle that
// is not open and for a directory's, and the session goes on.
func TestSFTPCopyData(t *testing.T) {
	const (
		read, write, appnd, creat, trunc = 0x01, 0x02, 0x04, 0x08, 0x10
	)
	// A request served here goes once those before it are answered (limits
	// here): each OPEN is answered before the WRITE to its handle reaches
	// pkg/sftp, which would run them at once (no client sends them so).
	barrier := sftpPacket(sftpExt, uint32(99), limitsExt)
	copyData := func(id uint32, from string, fromOff, n uint64, to string, toOff uint64, more ...any) []byte {
		u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
		return sftpPacket(sftpExt, append([]any{id, copyDataExt, from, u64(fromOff), u64(n), to, u64(toOff)}, more...)...)
	}
	dir := t.TempDir()
	replies := sftpReplies(t, runSFTPStreamIn(t, dir, bytes.Join([][]byte{
		sftpPacket(1, uint32(3)),
		sftpPacket(sftpOpen, uint32(2), "src.bin", uint32(read|write|creat|trunc), uint32(0)), // "1"
		barrier,
		sftpPacket(sftpWrite, uint32(3), "1", uint32(0), uint32(0), "0123456789"),
		sftpPacket(sftpOpen, uint32(4), "dst.bin", uint32(write|creat|trunc), uint32(0)), // "2"
		copyData(5, "1", 0, 0, "2", 0),
		copyData(6, "1", 2, 3, "2", 20),
		copyData(7, "2", 0, 0, "1", 0),
		copyData(8, "1", 0, 0, "1", 5),
		copyData(9, "1", 0, 0, "9", 0),
		sftpPacket(sftpOpen, uint32(10), "app.bin", uint32(write|creat|appnd), uint32(0)), // "3"
		barrier,
		sftpPacket(sftpWrite, uint32(11), "3", uint32(0), uint32(0), "ab"),
		copyData(12, "1", 0, 4, "3", 0, []byte("more")), // bytes after the request are ignored
		sftpPacket(sftpOpendir, uint32(13), "."),        // "d1"
		copyData(14, "d1", 0, 0, "2", 0),
		sftpPacket(sftpExt, uint32(15), limitsExt),
	}, nil)))
	if len(replies) != 17 {
		t.Fatalf("%d replies, want 17", len(replies))
	}
	if !bytes.Contains(replies[0], sftpPacket(0, copyDataExt, "1")[5:]) {
		t.Errorf("VERSION %q does not offer %s", replies[0], copyDataExt)
	}
	for i, h := range map[int]string{1: "1", 4: "2", 10: "3", 14: "d1"} {
		if r := replies[i]; r[0] != sftpHandle || !bytes.HasSuffix(r, sftpPacket(0, h)[5:]) {
			t.Fatalf("reply %d: %q, want the handle %q (pkg/sftp numbers its handles)", i, r, h)
		}
	}
	sftpStatuses(t, [][]byte{replies[3], replies[5], replies[6], replies[7], replies[8], replies[9], replies[12], replies[13], replies[15]},
		[2]uint32{3, sftpOK}, [2]uint32{5, sftpOK}, [2]uint32{6, sftpOK},
		[2]uint32{7, sftpNoSuchFile}, // "2" was not opened to read
		[2]uint32{8, sftpFailure},    // within one file
		[2]uint32{9, sftpNoSuchFile}, // not open
		[2]uint32{11, sftpOK}, [2]uint32{12, sftpOK},
		[2]uint32{14, sftpFailure}, // a directory
	)
	if replies[16][0] != sftpExtReply {
		t.Errorf("the session did not go on: %x", replies[16])
	}
	for name, want := range map[string]string{
		"src.bin": "0123456789",
		"dst.bin": "0123456789\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00234",
		"app.bin": "ab0123",
	} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); string(got) != want {
			t.Errorf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
}

// TestSFTPCopyDataFileMoved: a handle whose file was renamed since it was
// opened is refused, and neither that file nor the one that now has its
// name is read or written.
func TestSFTPCopyDataFileMoved(t *testing.T) {
	dir := t.TempDir()
	front := newSFTPFront(bytes.NewReader(nil), io.Discard, dir, nil, nil)
	note := func(h, name string, flags uint32, data string) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		front.openingID, front.opening = 1, openFile{path: p, flags: flags}
		front.opened(1, h)
	}
	orig := map[string]string{"src.bin": "source", "dst.bin": "dest"}
	note("1", "src.bin", sftpFlagRead, orig["src.bin"])
	note("2", "dst.bin", sftpFlagWrite, orig["dst.bin"])
	for _, moved := range []string{"src.bin", "dst.bin"} {
		p := filepath.Join(dir, moved)
		if err := os.Rename(p, p+".old"); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(p, []byte("other"), 0o600) // another file with the name
		err := front.copyData(copyDataRequest{From: "1", To: "2"})
		if err != errFileMoved {
			t.Errorf("copy-data after %s was renamed: %v, want %v", moved, err, errFileMoved)
		}
		for name, want := range map[string]string{moved: "other", moved + ".old": orig[moved]} {
			if got, _ := os.ReadFile(filepath.Join(dir, name)); string(got) != want {
				t.Errorf("after %s was renamed: %s = %q, want %q", moved, name, got, want)
			}
		}
		os.Remove(p)
		os.Rename(p+".old", p)
	}
	if err := front.copyData(copyDataRequest{From: "1", To: "2"}); err != nil {
		t.Fatalf("copy-data with both files in place: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "dst.bin")); string(got) != "source" {
		t.Errorf("dst.bin = %q, want \"source\"", got)
	}
}

// TestSFTPCopyDataFullDisk: a copy that runs out of space says so (the
// client prints the errno's text) and leaves a prefix of the source.
func TestSFTPCopyDataFullDisk(t *testing.T) {
	small := smallDisk(t)
	dir := t.TempDir()
	front := newSFTPFront(bytes.NewReader(nil), io.Discard, dir, nil, nil)
	data := make([]byte, 2<<20)
	rand.Read(data)
	for h, f := range map[string]struct {
		path  string
		flags uint32
		data  []byte
	}{"1": {filepath.Join(dir, "src.bin"), sftpFlagRead, data}, "2": {filepath.Join(small, "dst.bin"), sftpFlagWrite, nil}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		front.openingID, front.opening = 1, openFile{path: f.path, flags: f.flags}
		front.opened(1, h)
	}
	err := front.copyData(copyDataRequest{From: "1", To: "2"})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("copy-data of 2 MiB onto 1 MiB: %v, want ENOSPC", err)
	}
	if st := sftpStatusPacket(7, err); !bytes.Contains(st, []byte("no space left on device")) {
		t.Errorf("status %q does not say why", st)
	}
	got, _ := os.ReadFile(filepath.Join(small, "dst.bin"))
	if len(got) == 0 || !bytes.Equal(got, data[:len(got)]) {
		t.Errorf("the failed copy left %d bytes that are not a prefix of the source", len(got))
	}
}

// MKDIR with permissions creates the directory with them, as sftp-server
// does (Paramiko's mkdir(path, 0o700) sends them): pkg/sftp made every
// directory 0755.
func TestSFTPMkdirMode(t *testing.T) {
	dir := t.TempDir()
	l := newSFTPLive(t, dir)
	l.send(t, sftpPacket(14, uint32(2), "private", uint32(4), uint32(0o700)))
	if r := l.recv(t); r[0] != sftpStatus || r[8] != sftpOK {
		t.Fatalf("MKDIR: %x", r)
	}
	fi, err := os.Stat(filepath.Join(dir, "private"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("MKDIR with mode 0700 made a directory %v", fi.Mode())
	}
}

// statvfs@openssh.com of a relative path is taken against the working
// directory, as every other path is: sshfs mounted as host:sub asks for
// "sub" (and host: for "."), and pkg/sftp took it against the agent's own
// working directory, so df on the mount failed or showed another file system.
func TestSFTPStatVFSRelative(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Base(t.TempDir()) + "-only-in-home"
	os.Mkdir(filepath.Join(dir, sub), 0o755)
	l := newSFTPLive(t, dir)
	l.send(t, sftpPacket(200, uint32(2), "statvfs@openssh.com", sub))
	if r := l.recv(t); r[0] != sftpExtReply {
		t.Fatalf("statvfs of %q, a directory in the working directory: %x", sub, r)
	}
}

// A path through a regular file (ENOTDIR) or a symbolic link loop (ELOOP) is
// "no such file", as sftp-server answers (errno_to_portable): pkg/sftp said
// SSH_FX_FAILURE, which sshfs turns into EPERM instead of ENOENT.
func TestSFTPNotDirIsNoSuchFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	os.Symlink("loop", filepath.Join(dir, "loop"))
	l := newSFTPLive(t, dir)
	for i, req := range [][]byte{
		sftpPacket(17, uint32(2), "file/x"),                                 // STAT
		sftpPacket(7, uint32(3), "file/x"),                                  // LSTAT
		sftpPacket(3, uint32(4), "file/x", uint32(1), uint32(0)),            // OPEN
		sftpPacket(9, uint32(5), "file/x", uint32(1), uint32(0), uint32(0)), // SETSTAT
		sftpPacket(17, uint32(6), "loop"),                                   // STAT
	} {
		l.send(t, req)
		if r := l.recv(t); r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) != sftpNoSuchFile {
			t.Errorf("request %d: %x, want SSH_FX_NO_SUCH_FILE", i, r)
		}
	}
}

// REMOVE, RMDIR and RENAME keep their meaning for a request longer than 16
// KiB (handed to pkg/sftp before): a relative path padded with "./" is
// cleaned to a short one (by pkg/sftp as here), so pkg/sftp's REMOVE deleted
// an empty directory and its RENAME replaced an existing file.
func TestSFTPLongPathsKeepMeaning(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "emptydir"), 0o755)
	os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dir, "b"), []byte("b"), 0o644)
	pad := strings.Repeat("./", 8<<10)
	l := newSFTPLive(t, dir)
	l.send(t, sftpPacket(13, uint32(2), pad+"emptydir")) // REMOVE
	if r := l.recv(t); r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) == sftpOK {
		t.Errorf("REMOVE of a directory: %x", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "emptydir")); err != nil {
		t.Errorf("REMOVE (not RMDIR) of a long path deleted a directory: %v", err)
	}
	l.send(t, sftpPacket(18, uint32(3), pad+"a", pad+"b")) // RENAME
	if r := l.recv(t); r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) == sftpOK {
		t.Errorf("RENAME onto an existing file: %x", r)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "b")); string(b) != "b" {
		t.Errorf("RENAME of a long path replaced an existing file")
	}
}

// A file opened with SSH_FXF_APPEND takes every WRITE at its end, whatever
// the offset, as sftp-server opens it O_APPEND: curl --append (libssh2)
// writes from offset 0 and counts on it. pkg/sftp ignores the flag, and so
// overwrote the start of the file.
func TestSFTPAppendWritesAtTheEnd(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "log")
	os.WriteFile(p, []byte("line1\n"), 0o644)
	l := newSFTPLive(t, dir)
	h := l.open(t, "log", 0x0e) // WRITE|APPEND|CREAT
	l.send(t, sftpPacket(6, uint32(2), h, uint32(0), uint32(0), "line2\n"))
	l.send(t, sftpPacket(6, uint32(3), h, uint32(0), uint32(6), "line3\n"))
	l.send(t, sftpPacket(4, uint32(4), h))
	for id := uint32(2); id <= 4; id++ {
		if r := l.recv(t); r[0] != sftpStatus || binary.BigEndian.Uint32(r[1:]) != id || binary.BigEndian.Uint32(r[5:]) != sftpOK {
			t.Fatalf("reply %x, want OK for %d", r, id)
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "line1\nline2\nline3\n" {
		t.Errorf("after two WRITEs to a file opened to append: %q", b)
	}
}

// descriptorsOn counts this process's descriptors open on path, as
// /proc/self/fd names their files (with no symbolic link in the path).
func descriptorsOn(t *testing.T, path string) (n int) {
	t.Helper()
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		if p, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && p == path {
			n++
		}
	}
	return n
}

// TestSFTPSessionKeepsNoDescriptors: a session leaves no descriptor open on
// the files it appended to and the directories it listed, closed or not
// (the client may go with a directory still open): on a router with Linux's
// default 4096 descriptors, each WRITE to append or each listing would keep
// one of the agent's, which its tunnels and logins need, until the garbage
// collector happened to close it.
func TestSFTPSessionKeepsNoDescriptors(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "left-open"), 0o755)
	os.Mkdir(filepath.Join(dir, "closed"), 0o755)
	const appendFlags = sftpFlagWrite | sftpFlagAppend | sftpFlagCreat
	replies := sftpReplies(t, runSFTPStreamIn(t, dir, bytes.Join([][]byte{
		sftpPacket(1, uint32(3)),
		sftpPacket(sftpOpen, uint32(2), "log", uint32(appendFlags), uint32(0)),
		sftpPacket(sftpExt, uint32(3), limitsExt), // the OPEN is answered before the WRITEs
		sftpPacket(sftpWrite, uint32(4), "1", uint64(0), "line1\n"),
		sftpPacket(sftpWrite, uint32(5), "1", uint64(0), "line2\n"),
		sftpPacket(sftpClose, uint32(6), "1"),
		sftpPacket(sftpOpendir, uint32(7), "left-open"),
		sftpPacket(sftpOpendir, uint32(8), "closed"),
		sftpPacket(sftpClose, uint32(9), "d2"),
	}, nil)))
	if len(replies) != 9 {
		t.Fatalf("%d replies, want VERSION and eight", len(replies))
	}
	sftpStatuses(t, replies[3:6], [2]uint32{4, sftpOK}, [2]uint32{5, sftpOK}, [2]uint32{6, sftpOK})
	if b, _ := os.ReadFile(filepath.Join(dir, "log")); string(b) != "line1\nline2\n" {
		t.Errorf("appended: %q", b)
	}
	for _, name := range []string{"log", "left-open", "closed"} {
		if n := descriptorsOn(t, filepath.Join(dir, name)); n != 0 {
			t.Errorf("%d descriptors still open on %s after the session", n, name)
		}
	}
}

// TestSFTPStatAccessTime: STAT and LSTAT report the file's access time, as
// sftp-server does (and as READDIR and scp -p here do). pkg/sftp reports the
// modification time in its place, so every client that preserves times on a
// download (sftp get -p, scp -p in its default SFTP mode, pscp -p, Paramiko)
// set the copy's access time to the original's modification time.
func TestSFTPStatAccessTime(t *testing.T) {
	e := newEnv(t, nil)
	s, cl := sftpClient(t, e)
	p := filepath.Join(e.home("root"), "f")
	writeFile(t, p, "data")
	atime, mtime := time.Unix(1000000000, 0), time.Unix(1500000000, 0)
	if err := os.Chtimes(p, atime, mtime); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		stat func(string) (os.FileInfo, error)
	}{{"Stat", cl.Stat}, {"Lstat", cl.Lstat}} {
		fi, err := tc.stat("f")
		if err != nil {
			t.Fatalf("%s(f): %v", tc.name, err)
		}
		fs := fi.Sys().(*sftp.FileStat)
		if int64(fs.Atime) != atime.Unix() || int64(fs.Mtime) != mtime.Unix() || fi.Size() != 4 || fi.Mode() != 0o644 {
			t.Errorf("%s(f): atime %d, mtime %d, size %d, mode %v; want atime %d, mtime %d, size 4, mode -rw-r--r--",
				tc.name, fs.Atime, fs.Mtime, fi.Size(), fi.Mode(), atime.Unix(), mtime.Unix())
		}
	}
	cl.Close()
	if st := s.wait(t); st != "exit-status 0" {
		t.Errorf("end of sftp session: %s, want exit-status 0", st)
	}
}

// posix-rename@openssh.com has rename(2)'s semantics, as sftp-server gives it
// (OpenSSH's sftp uses it for its plain rename; sshfs for every rename): a
// directory replaces an empty directory, and a name renamed onto itself is
// left as it is. pkg/sftp served it with os.Rename, which refuses an existing
// directory as the new name (EEXIST) before rename(2) is called. Paths are
// taken as the kernel takes them, as for RENAME: "deep/../x", with deep a
// link to dir/sub, is dir/x, and "x/" must be a directory; so for
// hardlink@openssh.com (sftp's ln).
func TestSFTPPosixRenameAsRename(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "src"), 0o755)
	writeFile(t, filepath.Join(dir, "src", "inner"), "x")
	os.Mkdir(filepath.Join(dir, "empty"), 0o755)
	os.Mkdir(filepath.Join(dir, "same"), 0o755)
	os.MkdirAll(filepath.Join(dir, "dir", "sub"), 0o755)
	os.Symlink("dir/sub", filepath.Join(dir, "deep"))
	writeFile(t, filepath.Join(dir, "f"), "f")
	writeFile(t, filepath.Join(dir, "g"), "g")
	l := newSFTPLive(t, dir)
	l.send(t,
		sftpPacket(200, uint32(2), "posix-rename@openssh.com", "src", "empty"),
		sftpPacket(200, uint32(3), "posix-rename@openssh.com", "same", "same"),
		sftpPacket(200, uint32(4), "posix-rename@openssh.com", "f", "deep/../x"),
		sftpPacket(200, uint32(5), "posix-rename@openssh.com", "g", "nodir/"),
		sftpPacket(200, uint32(6), "hardlink@openssh.com", "dir/x", "deep/../y"),
		sftpPacket(200, uint32(7), "hardlink@openssh.com", "g", "nodir2/"),
		// link(2) of a directory: EPERM, "permission denied" as from sftp-server.
		sftpPacket(200, uint32(8), "hardlink@openssh.com", "same", "samelink"),
	)
	var replies [][]byte
	for range 7 {
		replies = append(replies, l.recv(t))
	}
	sftpStatuses(t, replies, [2]uint32{2, sftpOK}, [2]uint32{3, sftpOK}, [2]uint32{4, sftpOK}, [2]uint32{5, sftpNoSuchFile},
		[2]uint32{6, sftpOK}, [2]uint32{7, sftpNoSuchFile}, [2]uint32{8, sftpPermissionDenied})
	for name, exists := range map[string]bool{
		"empty/inner": true, "src": false, "same": true, "dir/x": true, "x": false, "g": true, "nodir": false,
		"dir/y": true, "y": false, "nodir2": false, "samelink": false,
	} {
		if _, err := os.Lstat(filepath.Join(dir, name)); (err == nil) != exists {
			t.Errorf("%s: Lstat = %v; want it to exist: %v", name, err, exists)
		}
	}
}

// FSETSTAT acts on the open file, as sftp-server's futimes(2), fchmod(2) and
// fchown(2) do, whatever has its name now. pkg/sftp sets the times by the name
// the file was opened by: once the file was renamed and another took the name
// (a save that renames), the other file got the times.
func TestSFTPFsetstatTimesOnTheOpenFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), "opened")
	l := newSFTPLive(t, dir)
	h := l.open(t, "f", 0x3) // READ|WRITE
	os.Rename(filepath.Join(dir, "f"), filepath.Join(dir, "g"))
	writeFile(t, filepath.Join(dir, "f"), "another file")
	before, _ := os.Stat(filepath.Join(dir, "f"))
	l.send(t, sftpPacket(10, uint32(2), h, uint32(0x8), uint32(1000000), uint32(1000000))) // ACMODTIME
	r := l.recv(t)
	after, _ := os.Stat(filepath.Join(dir, "f"))
	if !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("FSETSTAT of the handle of g (opened as f) set the times of the file now named f (reply %x)", r)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "g")); r[0] == sftpStatus && r[8] == sftpOK && fi.ModTime().Unix() != 1000000 {
		t.Errorf("FSETSTAT answered OK, yet the open file's mtime is %v", fi.ModTime())
	}
}

// OpenSSH's sftp renames with posix-rename@openssh.com: "rename new old",
// with old an empty directory, replaces it as with sftp-server (rename(2));
// put -p sets the upload's times through FSETSTAT on its handle.
func TestOpenSSHSFTPRenameOntoEmptyDir(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	sftp := needProgram(t, "sftp")
	home := o.home("root")
	os.Mkdir(filepath.Join(home, "new"), 0o755)
	writeFile(t, filepath.Join(home, "new", "inner"), "x")
	os.Mkdir(filepath.Join(home, "old"), 0o755)
	src := filepath.Join(o.dir, "src")
	writeFile(t, src, "kept times")
	os.Chtimes(src, time.Unix(1000000, 0), time.Unix(1000000, 0))
	batch := filepath.Join(o.dir, "batch")
	writeFile(t, batch, "rename new old\nput -p "+src+" up\n")
	out, errOut, code := o.run(t, nil, sftp, append(o.opts(), "-P", o.port, "-b", batch, "root@127.0.0.1")...)
	if code != 0 {
		t.Fatalf("sftp -b: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(home, "old", "inner")); err != nil {
		t.Errorf("after rename new old: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(home, "up")); err != nil || fi.ModTime().Unix() != 1000000 {
		t.Errorf("after put -p: %v, %v", fi.ModTime(), err)
	}
}

// An OPEN with neither READ nor WRITE opens the file to read, with what else
// it asks, as sftp-server opens it (O_RDONLY is 0): Paramiko's open(p, "x")
// sends CREAT|EXCL and makes the file, or finds it exists; pkg/sftp refused
// both with "invalid argument".
func TestSFTPOpenWithoutReadOrWrite(t *testing.T) {
	dir := t.TempDir()
	l := newSFTPLive(t, dir)
	l.send(t, sftpPacket(3, uint32(2), "lock", uint32(0x28), uint32(0))) // CREAT|EXCL
	if r := l.recv(t); r[0] != sftpHandle {
		t.Errorf("OPEN lock CREAT|EXCL: %x, want a handle", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "lock")); err != nil {
		t.Errorf("OPEN lock CREAT|EXCL made no file: %v", err)
	}
	l.send(t, sftpPacket(3, uint32(3), "lock", uint32(0x28), uint32(0)))
	sftpStatuses(t, [][]byte{l.recv(t)}, [2]uint32{3, sftpFailure}) // EEXIST
}

// FSTAT of an open file answers with its access time, as STAT does (pkg/sftp
// sent the modification time as the access time: paramiko's SFTPFile.stat and
// sshfs's fgetattr saw the wrong one), and FSTAT of a directory handle with the
// directory's attributes (pkg/sftp has no directory handles: it refused them).
// A file renamed and replaced since it was opened is still answered for
// itself, not for the file that now has its name.
func TestSFTPFstat(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	writeFile(t, p, "data")
	atime, mtime := time.Unix(1000000000, 0), time.Unix(1500000000, 0)
	if err := os.Chtimes(p, atime, mtime); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(dir, atime, mtime)
	l := newSFTPLive(t, dir)
	h := l.open(t, "f", 0x1)                  // READ
	l.send(t, sftpPacket(11, uint32(2), ".")) // OPENDIR
	r := l.recv(t)
	if r[0] != sftpHandle {
		t.Fatalf("OPENDIR: %x", r)
	}
	d := string(r[9:])
	fstat := func(id uint32, h string) sftpFileAttrs {
		t.Helper()
		l.send(t, sftpPacket(8, id, h))
		r := l.recv(t)
		var a sftpFileAttrs
		if r[0] != sftpAttrs || gossh.Unmarshal(r[5:], &a) != nil {
			t.Fatalf("FSTAT of %q: %x, want ATTRS", h, r)
		}
		return a
	}
	if a := fstat(3, h); a.Atime != uint32(atime.Unix()) || a.Mtime != uint32(mtime.Unix()) || a.Size != 4 {
		t.Errorf("FSTAT of the file: atime %d, mtime %d, size %d; want %d, %d, 4", a.Atime, a.Mtime, a.Size, atime.Unix(), mtime.Unix())
	}
	if a := fstat(4, d); a.Mode&syscall.S_IFMT != syscall.S_IFDIR || a.Mtime != uint32(mtime.Unix()) {
		t.Errorf("FSTAT of the directory: mode %o, mtime %d; want a directory, %d", a.Mode, a.Mtime, mtime.Unix())
	}
	os.Rename(p, filepath.Join(dir, "g"))
	writeFile(t, p, "another file")
	if a := fstat(5, h); a.Size != 4 {
		t.Errorf("FSTAT of the file renamed since: size %d, want its own 4", a.Size)
	}
}

// SETSTAT and FSETSTAT set a time after January 2038 as sent (SFTP's times
// go to 2106), with the other attributes of the request: on a 32-bit device
// pkg/sftp's os.Chtimes set it in 1901 or 1902.
func TestSFTPSetTimesAfter2038(t *testing.T) {
	const atime, mtime int64 = 1<<31 + 100, 4102444800 // 2038, 2100-01-01
	dir := t.TempDir()
	for _, name := range []string{"f", "g"} {
		writeFile(t, filepath.Join(dir, name), "data")
	}
	l := newSFTPLive(t, dir)
	h := l.open(t, "g", 0x1|0x2) // READ|WRITE
	// SIZE (2, in two words), PERMISSIONS and ACMODTIME.
	attrs := []any{uint32(0x1 | 0x4 | sftpAttrTimes), uint32(0), uint32(2), uint32(0o600), uint32(atime), uint32(mtime)}
	l.send(t, sftpPacket(sftpSetstat, append([]any{uint32(2), "f"}, attrs...)...))
	l.send(t, sftpPacket(sftpFsetstat, append([]any{uint32(3), h}, attrs...)...))
	for _, name := range []string{"f", "g"} {
		if r := l.recv(t); r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) != sftpOK {
			t.Fatalf("setting the attributes of %s: %x, want STATUS OK", name, r)
		}
		// statx: stat's times are 32-bit on 32-bit devices and on mips64.
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, filepath.Join(dir, name), 0, unix.STATX_BASIC_STATS, &stx); err != nil {
			t.Fatal(err)
		}
		if stx.Atime.Sec != atime || stx.Mtime.Sec != mtime || stx.Size != 2 || stx.Mode&0o7777 != 0o600 {
			t.Errorf("%s: atime %d, mtime %d, size %d, mode %o; want %d, %d, 2, 600", name, stx.Atime.Sec, stx.Mtime.Sec, stx.Size, stx.Mode&0o7777, atime, mtime)
		}
	}
	// And a STAT sends them back as set.
	l.send(t, sftpPacket(sftpStat, uint32(4), "f"))
	var a sftpFileAttrs
	if r := l.recv(t); r[0] != sftpAttrs || gossh.Unmarshal(r[5:], &a) != nil || int64(a.Atime) != atime || int64(a.Mtime) != mtime {
		t.Errorf("STAT: %x (%+v), want atime %d, mtime %d", r, a, atime, mtime)
	}
}

// parseSetAttrs reads exactly what the flags name, and refuses attributes
// cut short.
func FuzzParseSetAttrs(f *testing.F) {
	f.Add(uint32(0xf), uint64(7), uint32(1), uint32(2), uint32(0o4755), uint32(1<<31), uint32(1<<32-1), 0)
	f.Add(uint32(0x8), uint64(0), uint32(0), uint32(0), uint32(0), uint32(5), uint32(6), 3)
	f.Fuzz(func(t *testing.T, flags uint32, size uint64, uid, gid, perms, atime, mtime uint32, cut int) {
		b := binary.BigEndian.AppendUint32(nil, flags)
		want := setAttrs{flags: flags}
		if flags&0x1 != 0 {
			b, want.size = binary.BigEndian.AppendUint64(b, size), size
		}
		if flags&0x2 != 0 {
			b = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, uid), gid)
			want.uid, want.gid = uid, gid
		}
		if flags&0x4 != 0 {
			b, want.perms = binary.BigEndian.AppendUint32(b, perms), perms
		}
		if flags&sftpAttrTimes != 0 {
			b = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, atime), mtime)
			want.atime, want.mtime = atime, mtime
		}
		cut = max(0, min(cut, len(b)))
		got, err := parseSetAttrs(b[:len(b)-cut])
		switch {
		case cut > 0 && err == nil:
			t.Fatalf("parseSetAttrs(%x) = %+v, cut short by %d", b[:len(b)-cut], got, cut)
		case cut == 0 && (err != nil || got != want):
			t.Fatalf("parseSetAttrs(%x) = %+v, %v; want %+v", b, got, err, want)
		}
		if got, err := parseSetAttrs(append(b, 0xff)); cut == 0 && (err != nil || got != want) {
			t.Fatalf("with extended bytes after: %+v, %v", got, err)
		}
	})
}

// TestSFTPOpenTerminalRefused: an SFTP OPEN of a terminal is refused. pkg/sftp
// opens without O_NOCTTY, so in a server that leads its session with no
// controlling terminal (the agent under procd or systemd; here a child made
// so) the terminal became the server's own, and a ^C on that line (a serial
// console, a USB serial adapter) sent it SIGINT, which stops the agent.
// scp's open, with O_NOCTTY, is the control; /dev/null, a character device
// but no terminal, still opens.
func TestSFTPOpenTerminalRefused(t *testing.T) {
	if !inChild() {
		runChild(t, &syscall.SysProcAttr{Setsid: true}, nil)
		return
	}
	noCtty := func(what string) {
		t.Helper()
		f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
		if err == nil {
			f.Close()
			t.Fatalf("after %s the process has a controlling terminal", what)
		}
		if !errors.Is(err, syscall.ENXIO) {
			t.Fatalf("opening /dev/tty after %s: %v, want ENXIO", what, err)
		}
	}
	noCtty("nothing")
	master, name := unusedTerminal(t)
	go io.Copy(io.Discard, master)
	dir := t.TempDir()
	if answer, status := scpInProcess(t, dir, "scp -t "+name, "C0644 2 x\nhi\x00"); status != 0 {
		t.Fatalf("scp -t %s: %q, status %d", name, answer, status)
	}
	noCtty("scp -t " + name)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT)
	defer signal.Stop(sig)
	replies := sftpReplies(t, runSFTPStreamIn(t, dir, bytes.Join([][]byte{
		sftpPacket(1, uint32(3)),
		sftpPacket(sftpOpen, uint32(1), name, uint32(sftpFlagRead|sftpFlagWrite), uint32(0)), // as sshfs opens
		sftpPacket(sftpOpen, uint32(2), "/dev/null", uint32(sftpFlagRead), uint32(0)),
		sftpPacket(sftpExt, uint32(3), limitsExt), // answered once pkg/sftp has answered the OPEN before it
	}, nil)))
	if len(replies) != 4 || replies[1][0] != sftpStatus || !bytes.Contains(replies[1], []byte("a terminal is not opened")) {
		t.Errorf("OPEN %s: %q, want the terminal refused", name, replies)
	}
	if len(replies) != 4 || replies[2][0] != sftpHandle {
		t.Errorf("OPEN /dev/null: %q, want a handle", replies)
	}
	master.Write([]byte{3})
	select {
	case <-sig:
		t.Errorf("after an SFTP OPEN of %s, a ^C from that terminal sent the server SIGINT", name)
	case <-time.After(time.Second):
	}
	noCtty("an SFTP OPEN of " + name)
}

// unusedTerminal opens a pseudo-terminal whose terminal side no process has
// open: its master, closed with the test, and the terminal's name.
func unusedTerminal(t *testing.T) (master *os.File, name string) {
	t.Helper()
	master, tty, err := openPTY()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	name = tty.Name()
	tty.Close()
	return master, name
}

// TestSFTPReadOnlyOpenWithoutFlags: under internal-sftp -R an OPEN that ends
// after its path, without the pflags, is refused as one that may write
// (permission denied), and the session goes on to answer the next request:
// the front reads no flags it was not sent.
func TestSFTPReadOnlyOpenWithoutFlags(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), "data")
	in := bytes.Join([][]byte{sftpPacket(1, uint32(3)), sftpPacket(3, uint32(2), "f"), sftpPacket(17, uint32(3), "f")}, nil)
	out := &lockedBuffer{}
	front := newSFTPFront(bytes.NewReader(in), out, dir, func(string) (string, bool) { return dir, true }, nil)
	front.readOnly = true
	defer front.closeDirs()
	srv, err := sftp.NewServer(&sftpChannel{front: front}, sftp.WithServerWorkingDirectory(dir), sftp.WithMaxTxPacket(maxSFTPRead), sftp.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end with the client's stream")
	}
	replies := sftpReplies(t, []byte(out.String()))
	if len(replies) != 3 || replies[0][0] != sftpVersion || replies[2][0] != sftpAttrs {
		t.Fatalf("replies %x, want VERSION, a status, then the STAT's ATTRS", replies)
	}
	sftpStatuses(t, replies[1:2], [2]uint32{2, sftpPermissionDenied})
}
