package sshd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// TestSFTPRealpathAsSFTPServer: REALPATH and expand-path@openssh.com are
// answered as OpenSSH's sftp-server answers them, run on the same tree with
// the same working directory: "" and "." are the working directory, as
// getcwd(3) has it (its real path); symbolic links are resolved and ".."
// taken against what they resolve to; the last name may be missing, no other
// (NO_SUCH_FILE), and a trailing "/" makes the name before it not the last;
// a path through a file is NO_SUCH_FILE (ENOTDIR), and so is a loop of links
// or a chain of more than 33; a path of PATH_MAX bytes or more, sent or
// resolved, and a name longer than NAME_MAX, are BAD_MESSAGE (ENAMETOOLONG).
// Names are compared whole, a status by its code (sftp-server sends the
// code's text, the server the errno's).
func TestSFTPRealpathAsSFTPServer(t *testing.T) {
	server := (&Server{}).externalSFTPServer()
	if server == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no sftp-server (install Debian's openssh-sftp-server; tools/deps.sh test does)")
		}
		t.Skip("no sftp-server; install openssh-sftp-server to run this test")
	}
	root := t.TempDir()
	tree := filepath.Join(root, "tree")
	os.MkdirAll(filepath.Join(tree, "dir", "sub"), 0o755)
	writeFile(t, filepath.Join(tree, "file"), "x")
	for link, target := range map[string]string{
		"deep": "dir/sub", "loop": "loop", "dangling": "missing-target", "flink": "file",
		"abs": filepath.Join(tree, "dir"), "up": "..", "slash": "dir/", "root": "/",
	} {
		os.Symlink(target, filepath.Join(tree, link))
	}
	// c0 -> c1 -> ... -> c40 -> c41, a directory: c8 is 33 links from it.
	for i := range 41 {
		os.Symlink(fmt.Sprint("c", i+1), filepath.Join(tree, fmt.Sprint("c", i)))
	}
	os.Mkdir(filepath.Join(tree, "c41"), 0o755)
	home := filepath.Join(root, "home") // the working directory, through a link
	os.Symlink("tree", home)

	// long is a directory whose real path is 3900 bytes, a name of 194
	// bytes in it 4095.
	long := tree
	for len(long)+151 <= 3800 {
		long += "/" + strings.Repeat("l", 150)
	}
	long += "/" + strings.Repeat("m", 3899-len(long))
	if err := os.MkdirAll(long, 0o755); err != nil {
		t.Fatal(err)
	}

	paths := []string{
		"", ".", "./", "..", "../..", "x", "~", "~/x", "~/c8", "dir", "dir/", "dir/.", "dir//sub/", "a//b",
		"deep", "deep/", "deep/..", "deep/../x", "deep/../../x", "deep/../sub/..", "deep/c41",
		"missing", "missing/", "missing/x", "missing/..", "newdir2/",
		"file", "file/", "file/.", "file/..", "file/x", "flink", "flink/", "flink/x",
		"loop", "loop/", "loop/x", "dangling", "dangling/", "dangling/x",
		"abs", "abs/..", "abs/sub", "up", "up/tree/deep/..", "slash", "slash/sub", "root", "root/..",
		"c0", "c7", "c8", "c8/", "c8/x", "deep/../c8",
		"/", "/..", "/../..", "//", tree + "/deep/../x", "/" + tree + "/./file/", home, home + "/..",
		strings.Repeat("./", 2047) + "x",       // 4095 bytes
		strings.Repeat("./", 2047) + "xy",      // 4096: PATH_MAX
		"/" + strings.Repeat("./", 2047) + "x", // the "/" is not counted
		"/" + strings.Repeat("./", 2047) + "xy",
		strings.Repeat("n", 255), strings.Repeat("n", 256), strings.Repeat("n", 256) + "/..",
		long[len(tree)+1:] + "/" + strings.Repeat("y", 194), // resolved: 4095 bytes
		long[len(tree)+1:] + "/" + strings.Repeat("y", 195), // 4096
		long[len(tree)+1:] + "/" + strings.Repeat("y", 194) + "/..",
		long[len(tree)+1:] + "/../" + filepath.Base(long),
	}
	var stream []byte
	for i, p := range paths {
		stream = append(stream, sftpPacket(16, uint32(2*i), p)...)
		stream = append(stream, sftpPacket(200, uint32(2*i+1), expandPath, p)...)
	}
	in := append(sftpPacket(1, uint32(3)), stream...)

	want := sftpServerReplies(t, server, home, in, 1+2*len(paths))[1:]
	got := sftpReplies(t, runSFTPStreamIn(t, home, in))[1:]
	if len(got) != 2*len(paths) || len(want) != 2*len(paths) {
		t.Fatalf("%d replies, %d from sftp-server, want %d", len(got), len(want), 2*len(paths))
	}
	for i := range got {
		what := map[int]string{0: "REALPATH", 1: "expand-path"}[i%2]
		p := paths[i/2]
		if len(p) > 60 {
			p = fmt.Sprintf("%.30s...%s (%d bytes)", p, p[len(p)-20:], len(p))
		}
		if !bytes.Equal(sftpAnswer(got[i]), sftpAnswer(want[i])) {
			t.Errorf("%s %q: %s; sftp-server: %s", what, p, sftpAnswerText(got[i]), sftpAnswerText(want[i]))
		}
	}
}

// sftpAnswer is reply r without a status's message.
func sftpAnswer(r []byte) []byte {
	if r[0] == sftpStatus && len(r) >= 9 {
		return r[:9]
	}
	return r
}

// sftpAnswerText shows a NAME or STATUS reply to a person.
func sftpAnswerText(r []byte) string {
	var name struct {
		ID, Count uint32
		Name      string
		Rest      []byte `ssh:"rest"`
	}
	var status struct{ ID, Code uint32 }
	switch {
	case r[0] == sftpName && gossh.Unmarshal(r[1:], &name) == nil:
		if len(name.Name) > 60 {
			return fmt.Sprintf("name %.30s... (%d bytes) %x", name.Name, len(name.Name), name.Rest)
		}
		return fmt.Sprintf("name %q %x", name.Name, name.Rest)
	case r[0] == sftpStatus && gossh.Unmarshal(r[1:9], &status) == nil:
		return fmt.Sprintf("status %d", status.Code)
	}
	return fmt.Sprintf("%x", r)
}

// sftpServerReplies runs sftp-server in dir on the client's stream in and
// returns its first n replies. It ends at the end of its input even with
// requests left to answer, so that is kept open until they have come.
func sftpServerReplies(t *testing.T, server, dir string, in []byte, n int) [][]byte {
	cmd := exec.Command(server)
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	go stdin.Write(in)
	var replies [][]byte
	for range n {
		var size [4]byte
		if _, err := io.ReadFull(stdout, size[:]); err != nil {
			t.Fatalf("%s: reply %d: %v", server, len(replies), err)
		}
		r := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(stdout, r); err != nil {
			t.Fatalf("%s: reply %d: %v", server, len(replies), err)
		}
		replies = append(replies, r)
	}
	return replies
}

// TestSFTPEmptyPathIsNoSuchFile: an empty path names nothing, as the kernel
// takes sftp-server's: NO_SUCH_FILE for every request. Joined to the working
// directory it named that: RENAME "" moved the home directory and RMDIR ""
// removed it (a client that never changes directory sends dirname("f"),
// which is ""). REALPATH of "" is the working directory, for both.
func TestSFTPEmptyPathIsNoSuchFile(t *testing.T) {
	server := (&Server{}).externalSFTPServer()
	if server == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no sftp-server to compare with (install Debian's openssh-sftp-server; tools/deps.sh test does)")
		}
		t.Skip("no sftp-server (Debian's openssh-sftp-server) to compare with")
	}
	const setstat, readlink = 9, 19
	for _, last := range [][]byte{
		sftpPacket(sftpRename, uint32(9), "", "../moved"),
		sftpPacket(sftpRmdir, uint32(9), ""),
		sftpPacket(sftpRemove, uint32(9), ""),
		sftpPacket(sftpExt, uint32(9), posixRenameExt, "", "../moved"),
	} {
		reqs := [][]byte{
			sftpPacket(sftpStat, uint32(1), ""),
			sftpPacket(sftpLstat, uint32(2), ""),
			sftpPacket(sftpOpendir, uint32(3), ""),
			sftpPacket(sftpOpen, uint32(4), "", uint32(sftpFlagRead), uint32(0)),
			sftpPacket(setstat, uint32(5), "", uint32(4), uint32(0o700)),
			sftpPacket(readlink, uint32(6), ""),
			sftpPacket(sftpMkdir, uint32(7), "", uint32(0)),
			sftpPacket(sftpExt, uint32(8), statvfsExt, ""),
			last,
		}
		in := append(sftpPacket(1, uint32(3)), bytes.Join(reqs, nil)...) // INIT first
		for _, side := range []string{"sftp-server", "front"} {
			root := t.TempDir()
			home := filepath.Join(root, "home")
			os.Mkdir(home, 0o755)
			var replies [][]byte
			if side == "sftp-server" {
				replies = sftpServerReplies(t, server, home, in, 1+len(reqs))[1:]
			} else {
				replies = sftpReplies(t, runSFTPStreamIn(t, home, in))[1:]
			}
			for i, r := range replies {
				if r[0] != sftpStatus || len(r) < 9 || binary.BigEndian.Uint32(r[5:]) != sftpNoSuchFile {
					t.Errorf("%s: request %d of the path \"\": %s, want NO_SUCH_FILE", side, i+1, sftpAnswerText(r))
				}
			}
			if fi, err := os.Stat(home); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("%s: the working directory after: %v, %v", side, fi, err)
			}
		}
	}
}

// A name longer than NAME_MAX or a path of PATH_MAX bytes is BAD_MESSAGE,
// as sftp-server answers ENAMETOOLONG (errno_to_portable), in requests that
// pkg/sftp serves too (it said FAILURE).
func TestSFTPNameTooLongIsBadMessage(t *testing.T) {
	l := newSFTPLive(t, t.TempDir())
	long := strings.Repeat("n", 256)
	for i, req := range [][]byte{
		sftpPacket(17, uint32(2), long),                       // STAT
		sftpPacket(7, uint32(3), long),                        // LSTAT
		sftpPacket(3, uint32(4), long, uint32(1), uint32(0)),  // OPEN
		sftpPacket(16, uint32(5), long+"/x"),                  // REALPATH
		sftpPacket(16, uint32(6), strings.Repeat("./", 2048)), // REALPATH, PATH_MAX
		sftpPacket(14, uint32(7), long, uint32(0)),            // MKDIR
	} {
		l.send(t, req)
		if r := l.recv(t); r[0] != sftpStatus || binary.BigEndian.Uint32(r[5:]) != sftpBadMessage {
			t.Errorf("request %d: %x, want SSH_FX_BAD_MESSAGE", i, r)
		}
	}
}
