package sshd

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

func TestSFTPRoundTrip(t *testing.T) {
	e := newEnv(t, nil)
	s, cl := sftpClient(t, e)
	data := make([]byte, 300_000)
	rand.Read(data)
	// Relative paths start in the user's home.
	if err := cl.Mkdir("up"); err != nil {
		t.Fatal(err)
	}
	f, err := cl.Create("up/blob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := cl.Chmod("up/blob", 0o640); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(filepath.Join(e.home("root"), "up", "blob"))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("uploaded file differs (err %v)", err)
	}
	if fi, _ := os.Stat(filepath.Join(e.home("root"), "up", "blob")); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", fi.Mode().Perm())
	}
	if err := cl.Rename("up/blob", "up/blob2"); err != nil {
		t.Fatal(err)
	}
	rf, err := cl.Open("up/blob2")
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(rf)
	rf.Close()
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("downloaded file differs (err %v)", err)
	}
	infos, err := cl.ReadDir("up")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fi := range infos {
		names = append(names, fi.Name())
	}
	sort.Strings(names)
	if len(names) != 1 || names[0] != "blob2" {
		t.Errorf("ReadDir = %v, want [blob2]", names)
	}
	if err := cl.Remove("up/blob2"); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	// The client closed its side: the server must send exit-status 0
	// before closing, or OpenSSH's sftp and scp report failure.
	if st := s.wait(t); st != "exit-status 0" {
		t.Errorf("end of sftp session: %s, want exit-status 0", st)
	}
	waitFor(t, "session end", func() bool { return len(e.eventsOf(EventSessionEnd)) == 1 })
	if ev := e.eventsOf(EventSessionEnd)[0]; ev.Kind != "subsystem" || ev.Command != "sftp" || ev.BytesIn < 300_000 || ev.BytesOut < 300_000 {
		t.Errorf("session end = %+v", ev)
	}
}

// TestSFTPForOtherUser: in-process SFTP would act as root, so another
// user gets the system's sftp-server running as that user, or nothing.
func TestSFTPForOtherUser(t *testing.T) {
	needRoot(t)
	t.Run("no sftp-server", func(t *testing.T) {
		e := newEnv(t, func(_ *testEnv, s *Server) { s.sftpServerPaths = []string{"/nonexistent/sftp-server"} })
		c := e.login("alice")
		s := openSession(t, c)
		if err := s.RequestSubsystem("sftp"); err == nil {
			t.Error("sftp granted to alice on a root server without an sftp-server")
		}
	})
	t.Run("system sftp-server", func(t *testing.T) {
		e := newEnv(t, nil)
		if e.srv.externalSFTPServer() == "" {
			if os.Getenv("CI") == "true" {
				t.Fatal("no sftp-server (install Debian's openssh-sftp-server; tools/deps.sh test does)")
			}
			t.Skip("no sftp-server; install openssh-sftp-server to run this test")
		}
		if !systemKnowsAlice(t) {
			return
		}
		s, cl := sftpOn(t, e.login("alice"))
		f, err := cl.Create("mine.txt")
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("alice's"))
		f.Close()
		// alice may not write into root's home.
		if f, err := cl.Create(filepath.Join(e.home("root"), "intrusion")); err == nil {
			f.Close()
			t.Error("alice wrote into root's home over sftp")
		}
		cl.Close()
		if st := s.wait(t); st != "exit-status 0" {
			t.Errorf("sftp-server session ended with %s, want exit-status 0", st)
		}
		fi, err := os.Stat(filepath.Join(e.home("alice"), "mine.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 1000 {
			t.Errorf("file written over sftp owned by %d:%d, want 1000:1000", st.Uid, st.Gid)
		}
	})
}

func TestUnknownSubsystem(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	if err := s.RequestSubsystem("netconf"); err == nil {
		t.Error("unknown subsystem granted")
	}
}

// halfCloser makes Close send EOF only, as OpenSSH's sftp does, so the
// channel stays open for the server's exit status.
type halfCloser struct{ ch gossh.Channel }

// sftpClient logs in as root and starts the sftp subsystem on session s.
func sftpClient(t testing.TB, e *testEnv, opts ...sftp.ClientOption) (s *rawSession, cl *sftp.Client) {
	t.Helper()
	return sftpOn(t, e.login("root"), opts...)
}

// sftpOn is sftpClient over the connection c.
func sftpOn(t testing.TB, c *gossh.Client, opts ...sftp.ClientOption) (s *rawSession, cl *sftp.Client) {
	t.Helper()
	s = openRaw(t, c)
	if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"})); !ok || err != nil {
		t.Fatalf("subsystem sftp = %v, %v", ok, err)
	}
	cl, err := sftp.NewClientPipe(s.ch, halfCloser{s.ch}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, cl
}

func (h halfCloser) Write(b []byte) (int, error) { return h.ch.Write(b) }
func (h halfCloser) Close() error                { return h.ch.CloseWrite() }

// TestSFTPSymlinks: SYMLINK requests, served in front of pkg/sftp, store the
// target as sent, relative or absolute, with the link's path resolved
// against the working directory, and are answered in turn with the requests
// around them while a client keeps many in flight (a download here).
func TestSFTPSymlinks(t *testing.T) {
	e := newEnv(t, nil)
	s, cl := sftpClient(t, e)
	home := e.home("root")
	data := make([]byte, 1<<20+3)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(home, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cl.Mkdir("links"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f, err := cl.Open("big.bin")
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		var got bytes.Buffer
		if _, err := f.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), data) {
			t.Errorf("download during symlinks: %d bytes, %v; want the %d bytes written", got.Len(), err, len(data))
		}
	}()
	targets := map[string]string{}
	for i := range 20 {
		target := fmt.Sprintf("../target-%d", i)
		if i%2 == 1 {
			target = "/nonexistent/target-" + strconv.Itoa(i)
		}
		link := fmt.Sprintf("links/l%d", i)
		targets[link] = target
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cl.Symlink(target, link); err != nil {
				t.Errorf("Symlink(%q, %q): %v", target, link, err)
			}
		}()
	}
	wg.Wait()
	for link, target := range targets {
		if got, err := os.Readlink(filepath.Join(home, link)); err != nil || got != target {
			t.Errorf("readlink %s = %q, %v; want %q", link, got, err, target)
		}
		if got, err := cl.ReadLink(link); err != nil || got != target {
			t.Errorf("ReadLink(%s) = %q, %v; want %q", link, got, err, target)
		}
	}
	var se *sftp.StatusError
	if err := cl.Symlink("x", "links/l0"); !errors.As(err, &se) || se.Code != 4 {
		t.Errorf("Symlink over an existing name = %v, want SSH_FX_FAILURE", err)
	}
	if err := cl.Symlink("x", "missing/l"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Symlink in a missing directory = %v, want not found", err)
	}
	cl.Close()
	if st := s.wait(t); st != "exit-status 0" {
		t.Errorf("end of sftp session: %s, want exit-status 0", st)
	}
}

// TestLongName: the "ls -l" line of a directory entry, as sftp-server's
// ls_file makes it: the time of day only for the last six months, the year
// for older times and for any time in the future.
func TestLongName(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, localZone()) // the zone longName writes in (TZ, which may be a POSIX rule)
	for _, tc := range []struct {
		mode  uint32
		mtime time.Time
		want  string
	}{
		{syscall.S_IFREG | 0o644, now.Add(-time.Hour), "-rw-r--r--    1 4242     4343            7 Nov 30 11:00 name"},
		{syscall.S_IFREG | 0o644, now, "-rw-r--r--    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFREG | 0o644, now.Add(time.Minute), "-rw-r--r--    1 4242     4343            7 Nov 30  2026 name"},
		{syscall.S_IFREG | 0o644, now.AddDate(0, 0, -182), "-rw-r--r--    1 4242     4343            7 Jun  1 12:00 name"},
		{syscall.S_IFREG | 0o644, now.AddDate(0, 0, -183), "-rw-r--r--    1 4242     4343            7 May 31  2026 name"},
		{syscall.S_IFDIR | syscall.S_ISVTX | 0o777, now, "drwxrwxrwt    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFDIR | syscall.S_ISVTX | 0o776, now, "drwxrwxrwT    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFREG | syscall.S_ISUID | syscall.S_ISGID | 0o644, now, "-rwSr-Sr--    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFLNK | 0o777, now, "lrwxrwxrwx    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFIFO | 0o600, now, "prw-------    1 4242     4343            7 Nov 30 12:00 name"},
		// The kinds of file /dev holds, and set-id bits over execute bits.
		{syscall.S_IFCHR | 0o620, now, "crw--w----    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFBLK | 0o660, now, "brw-rw----    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFSOCK | 0o755, now, "srwxr-xr-x    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFREG | syscall.S_ISUID | 0o4755, now, "-rwsr-xr-x    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFDIR | syscall.S_ISGID | 0o2750, now, "drwxr-s---    1 4242     4343            7 Nov 30 12:00 name"},
		{syscall.S_IFREG | syscall.S_ISGID | 0o2705, now, "-rwx--Sr-x    1 4242     4343            7 Nov 30 12:00 name"},
	} {
		st := unix.Stat_t{Mode: tc.mode, Nlink: 1, Uid: 4242, Gid: 4343, Size: 7}
		if got := longName("name", &st, tc.mtime.Unix(), "4242", "4343", now); got != tc.want {
			t.Errorf("longName(mode %o, mtime %v) =\n%q, want\n%q", tc.mode, tc.mtime, got, tc.want)
		}
	}
	// Six months are half of 365 days to the second, as in ls_file: an mtime
	// that old is shown with its year, one a second younger with its time.
	edge := now.Add(-365 * 24 * time.Hour / 2)
	for mtime, layout := range map[time.Time]string{edge: "Jan _2  2006", edge.Add(time.Second): "Jan _2 15:04"} {
		st := unix.Stat_t{Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: 7}
		if got, want := longName("name", &st, mtime.Unix(), "0", "0", now), mtime.In(localZone()).Format(layout)+" name"; !strings.HasSuffix(got, " "+want) {
			t.Errorf("longName(mtime %v) = %q, want it to end %q", mtime, got, want)
		}
	}
}

// TestSFTPReadDirLongNameAfter2038: the "ls -l" line of a file dated after
// January 2038 names its year, as sftp-server's does with a 64-bit time_t
// (OpenSSH's sftp before 9.1 prints the server's line). On 32-bit arm and
// mips stat64's times are 32-bit signed: it said 1904 (qemu-user runs this).
func TestSFTPReadDirLongNameAfter2038(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	writeFile(t, p, "x")
	sec := time.Date(2040, 7, 1, 12, 0, 0, 0, time.UTC).Unix()
	if err := setTimes(p, sec, sec); err != nil {
		t.Fatal(err)
	}
	s := newSFTPFront(bytes.NewReader(nil), io.Discard, dir, nil, nil)
	defer s.closeDirs()
	var h struct{ H string }
	if r := s.opendir(1, dir); r[4] != sftpHandle || gossh.Unmarshal(r[9:], &h) != nil {
		t.Fatalf("OPENDIR: %q", r)
	}
	r := s.readdir(2, h.H)
	if r[4] != sftpName {
		t.Fatalf("READDIR: %q", r)
	}
	b := r[13:]
	for range binary.BigEndian.Uint32(r[9:]) {
		var e struct {
			Name, Long string
			Attrs      []byte `ssh:"rest"`
		}
		if err := gossh.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		b = e.Attrs[4+8+4+4+4+4+4:] // flags, size, uid, gid, permissions, atime, mtime
		if e.Name == "f" && !strings.Contains(e.Long, " 2040 ") {
			t.Errorf("long name of a file of July 2040: %q, want the year 2040", e.Long)
		}
	}
}

// TestSFTPReadDir: listings served in front of pkg/sftp come in batches up to
// the end, with each entry's lstat attributes; a file is not a directory.
func TestSFTPReadDir(t *testing.T) {
	e := newEnv(t, nil)
	s, cl := sftpClient(t, e)
	dir := filepath.Join(e.home("root"), "many")
	os.Mkdir(dir, 0o755)
	mtime := time.Unix(1500000000, 0)
	for i := range 250 {
		p := filepath.Join(dir, strconv.Itoa(i))
		writeFile(t, p, strconv.Itoa(i))
		os.Chtimes(p, mtime, mtime)
	}
	os.Symlink("0", filepath.Join(dir, "link"))
	infos, err := cl.ReadDir("many")
	if err != nil || len(infos) != 251 {
		t.Fatalf("ReadDir(many) = %d entries, %v; want 251", len(infos), err)
	}
	for _, fi := range infos {
		want, err := os.Lstat(filepath.Join(dir, fi.Name()))
		if err != nil || fi.Size() != want.Size() || fi.Mode() != want.Mode() || fi.ModTime().Unix() != want.ModTime().Unix() {
			t.Errorf("ReadDir entry %s: size %d, mode %v, mtime %v; lstat says %v (%v)", fi.Name(), fi.Size(), fi.Mode(), fi.ModTime(), want, err)
		}
	}
	if _, err := cl.ReadDir("many/0"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadDir of a file = %v, want not found (ENOTDIR)", err)
	}
	cl.Close()
	if st := s.wait(t); st != "exit-status 0" {
		t.Errorf("end of sftp session: %s, want exit-status 0", st)
	}
}

// TestSFTPOpenHandlesAsAdvertised: a client gets as many handles as
// limits@openssh.com advertises (open-handles), directories as well as files:
// asyncssh's rmtree lists up to 128 directories at once, and at 64 directories
// it failed with "too many open files" and left the tree half removed. Past
// the number, files and directories together, an OPENDIR and an OPEN get
// SSH_FX_FAILURE "too many open files", as from sftp-server at its descriptor
// limit, so a client that never closes its handles holds at most that many
// of the agent's descriptors; a CLOSE gives one back.
func TestSFTPOpenHandlesAsAdvertised(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), "x")
	l := newSFTPLive(t, dir)
	l.send(t, sftpPacket(sftpExt, uint32(1), limitsExt))
	var limits struct {
		ID                           uint32
		Packet, Read, Write, Handles uint64
	}
	if r := l.recv(t); r[0] != sftpExtReply || gossh.Unmarshal(r[1:], &limits) != nil {
		t.Fatalf("limits@openssh.com: reply %x", r)
	}
	if limits.Handles == 0 || limits.Handles > 1024 {
		t.Fatalf("limits@openssh.com advertises %d open handles", limits.Handles)
	}
	tooMany := func(what string, r []byte) {
		t.Helper()
		var st struct {
			ID, Code  uint32
			Msg, Lang string
		}
		if r[0] != sftpStatus || gossh.Unmarshal(r[1:], &st) != nil || st.Code != sftpFailure || st.Msg != "too many open files" {
			t.Errorf("%s with %d handles open: reply %q, want SSH_FX_FAILURE \"too many open files\"", what, limits.Handles, r)
		}
	}
	var handles []string
	for i := range limits.Handles {
		l.send(t, sftpPacket(sftpOpendir, uint32(10+i), "."))
		r := l.recv(t)
		if r[0] != sftpHandle {
			t.Fatalf("OPENDIR with %d directories open, %d handles advertised: reply %q", i, limits.Handles, r)
		}
		handles = append(handles, string(r[9:]))
	}
	l.send(t, sftpPacket(sftpOpendir, uint32(2), "."))
	tooMany("OPENDIR", l.recv(t))
	l.send(t, sftpPacket(sftpOpen, uint32(3), "f", uint32(sftpFlagRead), uint32(0)))
	tooMany("OPEN", l.recv(t))
	// A CLOSE of a directory makes room for a file, which counts as well.
	l.send(t, sftpPacket(sftpClose, uint32(4), handles[0]))
	if r := l.recv(t); r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) != sftpOK {
		t.Fatalf("CLOSE of a directory: reply %q", r)
	}
	l.send(t, sftpPacket(sftpOpen, uint32(5), "f", uint32(sftpFlagRead), uint32(0)))
	if r := l.recv(t); r[0] != sftpHandle {
		t.Fatalf("OPEN after a CLOSE: reply %q, want a handle", r)
	}
	l.send(t, sftpPacket(sftpOpendir, uint32(6), "."))
	tooMany("OPENDIR", l.recv(t))
}

// A client that opens files and never closes them is held to maxOpenHandles of
// them; an OPEN that fails and a CLOSE give the count back, and the files
// still open keep working.
func TestSFTPOpenFilesBounded(t *testing.T) {
	e := newEnv(t, nil)
	s, cl := sftpClient(t, e)
	if err := cl.Mkdir("many"); err != nil {
		t.Fatal(err)
	}
	var files []*sftp.File
	for i := range maxOpenHandles {
		if _, err := cl.Open("many/missing"); err == nil {
			t.Fatal("opened a missing file")
		}
		f, err := cl.Create(fmt.Sprintf("many/%d", i))
		if err != nil {
			t.Fatalf("file %d: %v", i, err)
		}
		files = append(files, f)
	}
	_, err := cl.Create("many/over")
	if err == nil || !strings.Contains(err.Error(), "too many open files") {
		t.Fatalf("file past the limit: %v, want too many open files", err)
	}
	if _, err := cl.Stat("many/over"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused OPEN created its file: stat = %v", err)
	}
	if _, err := files[7].Write([]byte("still open")); err != nil {
		t.Errorf("write to an open file at the limit: %v", err)
	}
	if err := files[0].Close(); err != nil {
		t.Fatal(err)
	}
	f, err := cl.Create("many/over")
	if err != nil {
		t.Fatalf("after a close: %v", err)
	}
	f.Close()
	cl.Close()
	// It left 127 files open for writing: not a clean end (a transfer cut
	// short, TestSFTPCutUploadAudited).
	if st := s.wait(t); st != "exit-status 1" {
		t.Errorf("end of sftp session: %s, want exit-status 1", st)
	}
}

// READDIR stats the entries of the directory it opened, not of whatever its
// path names by then: here a directory swapped in under the same name, with
// the same file name at another size.
func TestSFTPReadDirStatsOpenDir(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "d")
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "f"), []byte("12345"), 0o644)
	s := newSFTPFront(bytes.NewReader(nil), io.Discard, base, nil, nil)
	defer s.closeDirs()
	reply := s.opendir(1, dir)
	if reply[4] != sftpHandle {
		t.Fatalf("OPENDIR: reply %q", reply)
	}
	os.Rename(dir, filepath.Join(base, "old"))
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "f"), []byte("123456789"), 0o644)
	reply = s.readdir(2, string(reply[13:]))
	if reply[4] != sftpName {
		t.Fatalf("READDIR: reply %q", reply)
	}
	found := false
	rest := reply[13:] // length, type, id and count
	for len(rest) > 0 {
		var e struct {
			Name, LongName            string
			Flags                     uint32
			Size                      uint64
			UID, GID, Mode, At, Mtime uint32
			Rest                      []byte `ssh:"rest"`
		}
		if err := gossh.Unmarshal(rest, &e); err != nil {
			t.Fatal(err)
		}
		if e.Name == "f" && e.Size != 5 {
			t.Errorf("READDIR after the swap: f has %d bytes, want 5, as in the opened directory", e.Size)
		}
		found = found || e.Name == "f"
		rest = e.Rest
	}
	if !found {
		t.Error("READDIR after the swap: f not listed")
	}
}

// Listings name owners and groups from the server's passwd and group files,
// as logins do, the first name of an id winning, and show an id the files do
// not have as its number.
func TestSFTPListingNames(t *testing.T) {
	dir := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	writeFile(t, filepath.Join(dir, "passwd"), fmt.Sprintf("zz-owner:x:%d:%d::/:/bin/sh\nzz-later:x:%d:%d::/:/bin/sh\n", uid, gid, uid, gid))
	writeFile(t, filepath.Join(dir, "group"), fmt.Sprintf("zz-group:x:%d:\n", gid))
	writeFile(t, filepath.Join(dir, "f"), "x")
	srv := &Server{PasswdFile: filepath.Join(dir, "passwd"), GroupFile: filepath.Join(dir, "group")}
	for _, tc := range []struct {
		srv  *Server
		want string
	}{
		{srv, " zz-owner zz-group "},
		{&Server{PasswdFile: filepath.Join(dir, "group"), GroupFile: filepath.Join(dir, "passwd")}, fmt.Sprintf(" %-8d %-8d ", uid, gid)},
		{nil, fmt.Sprintf(" %-8d %-8d ", uid, gid)},
	} {
		s := newSFTPFront(bytes.NewReader(nil), io.Discard, dir, nil, tc.srv)
		reply := s.opendir(1, dir)
		reply = s.readdir(2, string(reply[13:]))
		s.closeDirs()
		if !bytes.Contains(reply, []byte(tc.want+"       1 ")) {
			t.Errorf("listing %q: no long name with %q", reply, tc.want)
		}
	}
}

// The bound holds for OPENs padded past what the front serves itself (pkg/sftp
// ignores the padding), and a padded CLOSE gives its file back.
func TestSFTPOpenFilesBoundedPadded(t *testing.T) {
	e := newEnv(t, nil)
	s := openRaw(t, e.login("root"))
	if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"})); !ok || err != nil {
		t.Fatalf("subsystem sftp = %v, %v", ok, err)
	}
	pad := make([]byte, 16<<10+16)
	send := func(typ byte, body []byte) {
		if _, err := s.ch.Write(sftpPacket(typ, body)); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() (byte, []byte) {
		var hdr [5]byte
		if _, err := io.ReadFull(s.ch, hdr[:]); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, binary.BigEndian.Uint32(hdr[:4])-1)
		if _, err := io.ReadFull(s.ch, b); err != nil {
			t.Fatal(err)
		}
		return hdr[4], b
	}
	send(1, binary.BigEndian.AppendUint32(nil, 3)) // INIT
	recv()
	f := filepath.Join(e.home("root"), "f")
	writeFile(t, f, "x")
	open := func(id uint32) (byte, []byte) {
		send(sftpOpen, append(gossh.Marshal(struct {
			ID            uint32
			Path          string
			Pflags, Flags uint32
		}{id, f, 1, 0}), pad...))
		return recv()
	}
	var first string
	for i := range maxOpenHandles {
		typ, b := open(uint32(10 + i))
		if typ != sftpHandle {
			t.Fatalf("OPEN %d: reply type %d %q", i, typ, b)
		}
		if i == 0 {
			first = string(b[8:]) // id, string length
		}
	}
	if typ, b := open(1000); typ != sftpStatus || !bytes.Contains(b, []byte("too many open files")) {
		t.Fatalf("padded OPEN past the bound: reply type %d %q, want too many open files", typ, b)
	}
	send(sftpClose, append(gossh.Marshal(struct {
		ID uint32
		H  string
	}{1001, first}), pad...))
	if typ, b := recv(); typ != sftpStatus || binary.BigEndian.Uint32(b[4:]) != sftpOK {
		t.Fatalf("padded CLOSE: reply type %d %q", typ, b)
	}
	if typ, b := open(1002); typ != sftpHandle {
		t.Errorf("OPEN after a padded CLOSE: reply type %d %q, want a handle", typ, b)
	}
}

// TestSFTPBlockedOpenEndsWithTheClient: an OPEN of a FIFO that no program
// reads blocks in open(2), in pkg/sftp as in OpenSSH's sftp-server. Once the
// client gives up, the session must end (and free its MaxSessions slot and
// the connection) instead of waiting for that call for ever.
func TestSFTPBlockedOpenEndsWithTheClient(t *testing.T) {
	defer func(d time.Duration) { abandonDelay = d }(abandonDelay)
	abandonDelay = 200 * time.Millisecond
	e := newEnv(t, nil)
	s, cl := sftpClient(t, e)
	fifo := filepath.Join(e.home("root"), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Let the blocked open end when the test does, for the leak check.
	defer func() {
		if f, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			time.Sleep(100 * time.Millisecond)
			f.Close()
		}
	}()
	go cl.OpenFile("fifo", os.O_WRONLY)
	waitOpenBlocks(t)
	s.ch.Close() // the client gives up
	waitAbandoned(t, e, "sftp session, its OPEN", "sftp: a request still blocks")
}

// waitOpenBlocks waits up to 10 s for pkg/sftp to be in open(2) for an OPEN
// (of a FIFO that no one opens the other end of): a goroutine of this process
// in a system call with os.OpenFile and pkg/sftp on its stack. A fixed wait
// was too short where the machine is slow (qemu-user, a loaded CI runner),
// and the client then left before its OPEN was served.
func waitOpenBlocks(t *testing.T) {
	t.Helper()
	waitBlocked(t, "an SFTP OPEN in open(2)", " [syscall", "os.OpenFile(", "github.com/pkg/sftp.")
}

// waitBlocked waits up to 10 s for a goroutine of this process in state
// (" [syscall", " [IO wait") with every one of frames on its stack, and
// fails the test, naming what, if none comes.
func waitBlocked(t *testing.T, what, state string, frames ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !blockedIn(state, frames...); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine in %s 10 s on", what)
		}
	}
}

// blockedIn reports whether a goroutine of this process is in state with
// every one of frames on its stack (see waitBlocked).
func blockedIn(state string, frames ...string) bool {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	for n == len(buf) { // cut short: every goroutine's, or none
		buf = make([]byte, 2*len(buf))
		n = runtime.Stack(buf, true)
	}
next:
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if !strings.Contains(g, state) {
			continue
		}
		for _, f := range frames {
			if !strings.Contains(g, f) {
				continue next
			}
		}
		return true
	}
	return false
}

// waitAbandoned waits up to 10 s for the end of the session (what) whose
// client has left while a call of its in-process server blocked, and for the
// one log line (logged) that says it was left behind (see abandonable).
func waitAbandoned(t *testing.T, e *testEnv, what, logged string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.eventsOf(EventSessionEnd)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s blocked on a FIFO: the session is still open 10 s after the client left", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l := e.logs.logged(logged); len(l) != 1 {
		t.Errorf("log lines %q: %q, want one", logged, l)
	}
}

// TestSFTPBlockedOpenReturnsAfterTheClient: the client has gone while an OPEN
// of a FIFO blocks, and the OPEN returns before abandonDelay: pkg/sftp's Serve
// then returns, and the session reported its end (EOF, close) while
// pkg/sftp's reply writer still wrote the OPEN's reply to the channel, a data
// race in x/crypto's channel (run with -race). The front is shut first.
func TestSFTPBlockedOpenReturnsAfterTheClient(t *testing.T) {
	e := newEnv(t, nil)
	s, cl := sftpClient(t, e)
	fifo := filepath.Join(e.home("root"), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go cl.OpenFile("fifo", os.O_WRONLY)
	waitOpenBlocks(t)
	s.ch.Close() // the client gives up
	time.Sleep(100 * time.Millisecond)
	f, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0) // the OPEN returns
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for deadline := time.Now().Add(10 * time.Second); len(e.eventsOf(EventSessionEnd)) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the session did not end once its OPEN returned")
		}
	}
}

// TestSFTPMalformedRequestEndsWithExitStatus: a request pkg/sftp cannot parse
// (a type it does not know, a body cut short) ends the session, as one the
// front cannot parse does, with exit status 1 after the replies to the
// requests before it. pkg/sftp closes its connection there, and that closed
// the channel before the exit status, which OpenSSH's sftp and scp need.
func TestSFTPMalformedRequestEndsWithExitStatus(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"unknown type", sftpPacket(99, uint32(7))},
		{"a reply's type", sftpPacket(101, uint32(7), uint32(0))},
		{"no request id", sftpPacket(sftpClose)},
		{"OPEN without flags", sftpPacket(sftpOpen, uint32(7), "x")},
		{"READ cut short", sftpPacket(sftpRead, uint32(7), "h")},
		{"STAT without a path", sftpPacket(sftpStat, uint32(7))}, // the front's
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openRaw(t, c)
			if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"})); !ok || err != nil {
				t.Fatalf("subsystem sftp = %v, %v", ok, err)
			}
			in := slices.Concat(sftpPacket(1, uint32(3)), sftpPacket(sftpLstat, uint32(5), "/"), tc.pkt)
			if _, err := s.ch.Write(in); err != nil {
				t.Fatal(err)
			}
			out, err := io.ReadAll(s.ch)
			if err != nil {
				t.Fatal(err)
			}
			replies := sftpReplies(t, out)
			if len(replies) != 2 || replies[1][0] != sftpAttrs {
				t.Errorf("replies %q, want VERSION and the LSTAT's ATTRS", replies)
			}
			if got := s.wait(t); got != "exit-status 1" {
				t.Errorf("the session ended with %q, want exit-status 1", got)
			}
		})
	}
}
