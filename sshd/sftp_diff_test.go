package sshd

// Differential test of the embedded SFTP server against OpenSSH's sftp-server
// (as root): the same random request stream is sent to both, each in its own
// copy of one tree, and their replies and final trees are compared. make test
// runs seeds 0-4; SFTP_DIFF_SEEDS=n SFTP_DIFF_FIRST=k run others. Some seeds
// (15, 149 and 165 of the first 200) meet differences that are by design and
// not normalised here, such as READDIR of a directory renamed since OPENDIR
// (listed here, EOF from sftp-server).

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

const diffRoot = "@R@"

type hRef int   // a handle slot
type u64 uint64 // an 8-byte field

type diffReq struct {
	typ    byte
	ext    string // for EXTENDED
	fields []any  // uint32, u64, string (diffRoot replaced), hRef, []byte
	slot   int    // the handle slot an OPEN/OPENDIR fills, else -1
}

func (r diffReq) String() string {
	name := map[byte]string{3: "OPEN", 4: "CLOSE", 5: "READ", 6: "WRITE", 7: "LSTAT", 8: "FSTAT", 9: "SETSTAT", 10: "FSETSTAT",
		11: "OPENDIR", 12: "READDIR", 13: "REMOVE", 14: "MKDIR", 15: "RMDIR", 16: "REALPATH", 17: "STAT", 18: "RENAME",
		19: "READLINK", 20: "SYMLINK", 200: "EXT"}[r.typ]
	var b strings.Builder
	b.WriteString(name)
	if r.ext != "" {
		b.WriteString(" " + r.ext)
	}
	for _, f := range r.fields {
		switch v := f.(type) {
		case []byte:
			if len(v) > 16 {
				fmt.Fprintf(&b, " [%d bytes]", len(v))
			} else {
				fmt.Fprintf(&b, " %x", v)
			}
		case string:
			if len(v) > 40 {
				fmt.Fprintf(&b, " [%d-byte string]", len(v))
			} else {
				fmt.Fprintf(&b, " %q", v)
			}
		case hRef:
			fmt.Fprintf(&b, " h%d", int(v))
		case uint32:
			fmt.Fprintf(&b, " %#o", v)
		default:
			fmt.Fprintf(&b, " %v", v)
		}
	}
	if r.slot >= 0 {
		fmt.Fprintf(&b, " ->h%d", r.slot)
	}
	return b.String()
}

// diffSide is one server.
type diffSide struct {
	name    string
	root    string
	send    func([]byte)
	recv    func() []byte
	handles map[int]string
	stop    func()
}

func (s *diffSide) packet(id uint32, r diffReq) []byte {
	var args []any
	args = append(args, id)
	if r.typ == 200 {
		args = append(args, r.ext)
	}
	for _, f := range r.fields {
		switch v := f.(type) {
		case string:
			args = append(args, strings.ReplaceAll(v, diffRoot, s.root))
		case hRef:
			h, ok := s.handles[int(v)]
			if !ok {
				h = "nohandle"
			}
			args = append(args, h)
		case u64:
			args = append(args, binary.BigEndian.AppendUint64(nil, uint64(v)))
		default:
			args = append(args, v)
		}
	}
	return sftpPacket(r.typ, args...)
}

func sftpServerSide(t *testing.T, root string) *diffSide {
	cmd := exec.Command((&Server{}).externalSFTPServer(), "-d", root)
	cmd.Dir = root
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(outp)
	s := &diffSide{name: "sftp-server", root: root, handles: map[int]string{}}
	s.send = func(b []byte) { in.Write(b) }
	s.recv = func() []byte { return readSFTPPacket(t, out) }
	// Closing the reading end too lets a server blocked on replies nobody
	// read (a run that ended early) fail its write and exit, where closing
	// its input alone would leave Wait waiting for it.
	s.stop = func() { in.Close(); outp.Close(); cmd.Wait() }
	s.send(sftpPacket(1, uint32(3)))
	s.recv()
	return s
}

func ourSide(t *testing.T, root string) *diffSide {
	l := newSFTPLive(t, root)
	return &diffSide{name: "porthole", root: root, handles: map[int]string{},
		send: func(b []byte) { l.send(t, b) }, recv: func() []byte { return l.recv(t) }, stop: func() {}}
}

// The initial tree, made alike in both roots.
func diffTree(t *testing.T, root string, seed int64) {
	rnd := rand.New(rand.NewSource(seed))
	data := func(n int) []byte { b := make([]byte, n); rnd.Read(b); return b }
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(root+"/d/sub", 0o755))
	must(os.Mkdir(root+"/emptydir", 0o755))
	must(os.Mkdir(root+"/special", 0o755))
	must(os.Mkdir(root+"/rodir", 0o555))
	for _, f := range []struct {
		name string
		n    int
		mode os.FileMode
	}{{"f1", 100, 0o644}, {"f2", 5000, 0o600}, {"empty", 0, 0o644}, {"ro", 50, 0o444}, {"x", 10, 0o755},
		{"d/a", 300, 0o640}, {"d/sub/b", 20, 0o644}, {"rodir/c", 30, 0o644}} {
		must(os.WriteFile(root+"/"+f.name, data(f.n), f.mode))
		must(os.Chmod(root+"/"+f.name, f.mode))
	}
	must(syscall.Mkfifo(root+"/special/fifo", 0o644))
	for _, l := range [][2]string{{"d", "ld"}, {"f1", "lf"}, {"nosuch", "lbroken"}, {root + "/f2", "labs"},
		{"lloop", "lloop"}, {"d/sub", "lsub"}, {"../f1", "d/lup"}} {
		must(os.Symlink(l[0], root+"/"+l[1]))
	}
	// Fixed times, deepest first so that directories keep theirs.
	var paths []string
	filepath.Walk(root, func(p string, _ os.FileInfo, _ error) error { paths = append(paths, p); return nil })
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for i, p := range paths {
		ts := []unix.Timespec{unix.NsecToTimespec((1500000000 + int64(i)) * 1e9), unix.NsecToTimespec((1600000000 + int64(i)) * 1e9)}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

// diffGen makes random requests.
type diffGen struct {
	rnd      *rand.Rand
	files    []int // open file slots
	dirs     []int
	nextSlot int
}

var diffNames = []string{"f1", "f2", "empty", "ro", "x", "d", "d/a", "d/sub", "d/sub/b", "emptydir", "ld", "lf",
	"lbroken", "labs", "lloop", "lsub", "d/lup", "rodir", "rodir/c", "new1", "new2", "newd", "d/new3", "ld/a", "ld/sub/b",
	"lf/", "d/", "f1/", "new1/", "newd/", "d/../f1", "ld/../f1", "ld/..", "lsub/../a", "d/./a", "d//a", ".",
	diffRoot + "/f1", diffRoot + "/d/a", diffRoot + "/ld/../new1", diffRoot + "/newd", diffRoot, "lbroken/", "emptydir/", "lloop/x",
	"f1/x", "newd/new4", "ld/new5", "lsub/new6", "labs/", "d/lup/", ""}

func (g *diffGen) path() string { return diffNames[g.rnd.Intn(len(diffNames))] }

func (g *diffGen) attrs(forSet bool) []byte {
	var flags uint32
	var b []byte
	if g.rnd.Intn(3) == 0 {
		// Alone: sftp-server applies the other attributes after a failed
		// truncate (of a directory), pkg/sftp stops (reported).
		b = binary.BigEndian.AppendUint64(nil, []uint64{0, 10, 77, 5000, 40000}[g.rnd.Intn(5)])
		return append(binary.BigEndian.AppendUint32(nil, 1), b...)
	}
	if forSet && g.rnd.Intn(6) == 0 {
		flags |= 2
		b = binary.BigEndian.AppendUint32(b, []uint32{0, 1000}[g.rnd.Intn(2)])
		b = binary.BigEndian.AppendUint32(b, []uint32{0, 1000}[g.rnd.Intn(2)])
	}
	if g.rnd.Intn(2) == 0 {
		flags |= 4
		b = binary.BigEndian.AppendUint32(b, []uint32{0o644, 0o600, 0o755, 0o400, 0, 0o4755, 0o1777, 0o100644, 0o40700, 0o2750}[g.rnd.Intn(10)])
	}
	if forSet && g.rnd.Intn(3) == 0 {
		flags |= 8
		b = binary.BigEndian.AppendUint32(b, []uint32{1000000000, 1234567890, 0x7fffffff, 0}[g.rnd.Intn(4)])
		b = binary.BigEndian.AppendUint32(b, []uint32{1000000000, 1234567890, 0x7fffffff, 0}[g.rnd.Intn(4)])
	}
	return append(binary.BigEndian.AppendUint32(nil, flags), b...)
}

func (g *diffGen) file() hRef {
	if len(g.files) == 0 || g.rnd.Intn(20) == 0 {
		return hRef(-1)
	}
	return hRef(g.files[g.rnd.Intn(len(g.files))])
}

func (g *diffGen) off() u64 {
	return u64([]uint64{0, 0, 1, 50, 99, 100, 101, 4999, 5000, 6000, 70000, 1 << 33}[g.rnd.Intn(12)])
}

// next makes one request; ready lists the slots usable in this batch.
func (g *diffGen) next() diffReq {
	r := diffReq{slot: -1}
	switch n := g.rnd.Intn(100); {
	case n < 14:
		r.typ = 3
		r.slot = g.nextSlot
		g.nextSlot++
		var a []byte
		if g.rnd.Intn(3) == 0 {
			a = binary.BigEndian.AppendUint32(nil, 4)
			a = binary.BigEndian.AppendUint32(a, []uint32{0o600, 0o755, 0o640, 0o644}[g.rnd.Intn(4)])
		} else {
			a = binary.BigEndian.AppendUint32(nil, 0)
		}
		r.fields = []any{g.path(), uint32(g.rnd.Intn(64)), a}
	case n < 20:
		if len(g.files)+len(g.dirs) == 0 {
			return g.next()
		}
		all := append(append([]int{}, g.files...), g.dirs...)
		k := all[g.rnd.Intn(len(all))]
		r.typ = 4
		r.fields = []any{hRef(k)}
		isK := func(v int) bool { return v == k }
		g.files = slices.DeleteFunc(g.files, isK)
		g.dirs = slices.DeleteFunc(g.dirs, isK)
	case n < 30:
		r.typ = 5
		r.fields = []any{g.file(), g.off(), uint32([]int{0, 1, 10, 100, 4096, 20000}[g.rnd.Intn(6)])}
	case n < 40:
		r.typ = 6
		d := make([]byte, []int{0, 1, 10, 100, 2000}[g.rnd.Intn(5)])
		g.rnd.Read(d)
		r.fields = []any{g.file(), g.off(), string(d)}
	case n < 44:
		r.typ = 8
		r.fields = []any{g.file()}
	case n < 48:
		r.typ = 10
		r.fields = []any{g.file(), g.attrs(true)}
	case n < 52:
		r.typ = []byte{7, 17}[g.rnd.Intn(2)]
		r.fields = []any{g.path()}
	case n < 56:
		r.typ = 9
		r.fields = []any{g.path(), g.attrs(true)}
	case n < 60:
		r.typ = 11
		r.slot = g.nextSlot
		g.nextSlot++
		r.fields = []any{g.path()}
	case n < 63:
		r.typ = 12
		if len(g.dirs) == 0 {
			r.fields = []any{hRef(-1)}
		} else {
			r.fields = []any{hRef(g.dirs[g.rnd.Intn(len(g.dirs))])}
		}
	case n < 66:
		r.typ = 13
		r.fields = []any{g.path()}
	case n < 69:
		r.typ = 15
		r.fields = []any{g.path()}
	case n < 72:
		r.typ = 14
		r.fields = []any{g.path(), g.attrs(false)}
	case n < 76:
		r.typ = 18
		r.fields = []any{g.path(), g.path()}
	case n < 79:
		r.typ = 20
		r.fields = []any{g.path(), g.path()}
	case n < 82:
		r.typ = 19
		r.fields = []any{g.path()}
	case n < 86:
		r.typ = 16
		r.fields = []any{g.path()}
		if g.rnd.Intn(8) == 0 {
			r.fields = []any{""}
		}
	default:
		r.typ = 200
		switch g.rnd.Intn(8) {
		case 0:
			r.ext, r.fields = "posix-rename@openssh.com", []any{g.path(), g.path()}
		case 1:
			r.ext, r.fields = "hardlink@openssh.com", []any{g.path(), g.path()}
		case 2:
			r.ext, r.fields = "statvfs@openssh.com", []any{g.path()}
		case 3:
			r.ext, r.fields = "fsync@openssh.com", []any{g.file()}
		case 4:
			r.ext, r.fields = "expand-path@openssh.com", []any{[]string{"~", "~/f1", "~/ld/..", "", "ld/../x", "~/x", "~nosuch", "d/"}[g.rnd.Intn(8)]}
		case 5:
			r.ext, r.fields = "copy-data", []any{g.file(), g.off(), u64([]uint64{0, 1, 100, 10000}[g.rnd.Intn(4)]), g.file(), g.off()}
		case 6:
			r.ext, r.fields = "limits@openssh.com", nil
		case 99:
			r.ext, r.fields = "users-groups-by-id@openssh.com", []any{string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0), 12345)), string(binary.BigEndian.AppendUint32(nil, 0))}
		default:
			r.ext = "limits@openssh.com"
		}
	}
	return r
}

// diffProgram makes batches of requests.
func diffProgram(seed int64, nbatch int) [][]diffReq {
	g := &diffGen{rnd: rand.New(rand.NewSource(seed))}
	var prog [][]diffReq
	for range nbatch {
		var batch []diffReq
		var newFiles, newDirs []int
		for range 1 + g.rnd.Intn(6) {
			r := g.next()
			if r.typ == 3 {
				newFiles = append(newFiles, r.slot)
			} else if r.typ == 11 {
				newDirs = append(newDirs, r.slot)
			}
			batch = append(batch, r)
		}
		g.files = append(g.files, newFiles...)
		g.dirs = append(g.dirs, newDirs...)
		prog = append(prog, batch)
	}
	return prog
}

// normalisation of a reply for comparison.
func diffNorm(root string, start int64, r diffReq, b []byte) string {
	norm := func(s string) string {
		s = strings.ReplaceAll(s, root, diffRoot)
		return strings.ReplaceAll(s, filepath.Dir(root), "@B@")
	}
	tm := func(v uint32) string {
		if int64(v) >= start-2 && int64(v) <= time.Now().Unix()+2 {
			return "NOW"
		}
		return strconv.Itoa(int(v))
	}
	attrs := func(b []byte) (string, []byte) {
		if len(b) < 4 {
			return "short", nil
		}
		f := binary.BigEndian.Uint32(b)
		b = b[4:]
		s := fmt.Sprintf("flags=%x", f)
		if f&1 != 0 {
			s += fmt.Sprintf(" size=%d", binary.BigEndian.Uint64(b))
			b = b[8:]
		}
		if f&2 != 0 {
			s += fmt.Sprintf(" uid=%d gid=%d", binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:]))
			b = b[8:]
		}
		if f&4 != 0 {
			s += fmt.Sprintf(" mode=%o", binary.BigEndian.Uint32(b))
			b = b[4:]
		}
		if f&8 != 0 {
			s += fmt.Sprintf(" atime=%s mtime=%s", tm(binary.BigEndian.Uint32(b)), tm(binary.BigEndian.Uint32(b[4:])))
			b = b[8:]
		}
		return s, b
	}
	typ := b[0]
	body := b[5:]
	switch typ {
	case sftpStatus:
		return fmt.Sprintf("STATUS %d", binary.BigEndian.Uint32(body))
	case sftpHandle:
		return "HANDLE"
	case 103: // DATA
		var d struct{ D []byte }
		gossh.Unmarshal(body, &d)
		return fmt.Sprintf("DATA %d %x", len(d.D), d.D)
	case sftpAttrs:
		s, _ := attrs(body)
		if r.typ == 8 { // FSTAT's atime from pkg/sftp: known, being fixed
			if i := strings.Index(s, " atime="); i >= 0 {
				j := strings.Index(s, " mtime=")
				s = s[:i] + s[j:]
			}
		}
		return "ATTRS " + s
	case sftpName:
		n := binary.BigEndian.Uint32(body)
		body = body[4:]
		var names []string
		for range n {
			var e struct {
				Name, Long string
				Rest       []byte `ssh:"rest"`
			}
			gossh.Unmarshal(body, &e)
			a, rest := attrs(e.Rest)
			if r.typ == 12 {
				if e.Name == "." || e.Name == ".." {
					a = "" // the directory's own times change with everything
				}
				if i := strings.Index(a, " atime="); i >= 0 && strings.Contains(a, "mode=120") {
					a = a[:i] + a[strings.Index(a, " mtime="):] // sftp-server's stat(2) of a new name reads a link
				}
				names = append(names, e.Name+" "+a)
			} else {
				names = append(names, norm(e.Name))
			}
			body = rest
		}
		sort.Strings(names)
		return "NAME " + strings.Join(names, "; ")
	case sftpExtReply:
		switch r.ext {
		case "statvfs@openssh.com":
			var v struct{ Bsize, Frsize, Blocks, Bfree, Bavail, Files, Ffree, Favail, Fsid, Flag, Namemax uint64 }
			gossh.Unmarshal(body, &v)
			return fmt.Sprintf("STATVFS bsize=%d flag=%d namemax=%d", v.Bsize, v.Flag, v.Namemax)
		case "limits@openssh.com":
			return "LIMITS"
		}
		return fmt.Sprintf("EXTREPLY %x", body)
	}
	return fmt.Sprintf("type %d %x", typ, body)
}

// diffTreeDump lists a tree: paths, kinds, modes, sizes, contents, targets.
func diffTreeDump(root string, start int64) []string {
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("%s mode=%o uid=%d gid=%d nlink=%d", rel, st.Mode, st.Uid, st.Gid, st.Nlink)
		if fi.Mode().IsRegular() {
			// The first MiB (a WRITE at 8 GiB makes a sparse file).
			var b []byte
			if f, err := os.Open(p); err == nil {
				b, _ = io.ReadAll(io.LimitReader(f, 1<<20))
				f.Close()
			}
			mt := strconv.Itoa(int(st.Mtim.Sec))
			if int64(st.Mtim.Sec) >= start-2 {
				mt = "NOW"
			}
			s += fmt.Sprintf(" size=%d mtime=%s data=%x", st.Size, mt, sha256.Sum256(b))
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			tg, _ := os.Readlink(p)
			s += " -> " + strings.ReplaceAll(tg, root, diffRoot)
		}
		out = append(out, s)
		return nil
	})
	return out
}

// diffRun runs prog on both servers; it returns the first mismatch, "" if none.
func diffRun(t *testing.T, seed int64, prog [][]diffReq, verbose bool, soft map[string]int) string {
	if soft == nil {
		soft = map[string]int{}
	}
	base := t.TempDir()
	start := time.Now().Unix()
	var sides []*diffSide
	for i, mk := range []func(*testing.T, string) *diffSide{sftpServerSide, ourSide} {
		root := filepath.Join(base, strconv.Itoa(i), "root")
		diffTree(t, root, seed)
		sides = append(sides, mk(t, root))
	}
	defer func() {
		for _, s := range sides {
			s.stop()
		}
	}()
	id := uint32(100)
	var log []string
	for bi, batch := range prog {
		ids := make([]uint32, len(batch))
		for _, s := range sides {
			var all []byte
			for i, r := range batch {
				all = append(all, s.packet(id+uint32(i), r)...)
			}
			s.send(all)
		}
		for i := range batch {
			ids[i] = id + uint32(i)
		}
		for i, r := range batch {
			var got [2]string
			for k, s := range sides {
				b := s.recv()
				if rid := binary.BigEndian.Uint32(b[1:]); rid != ids[i] {
					return fmt.Sprintf("%s: reply id %d, want %d", s.name, rid, ids[i])
				}
				if b[0] == sftpHandle && r.slot >= 0 {
					var h struct{ H string }
					gossh.Unmarshal(b[5:], &h)
					s.handles[r.slot] = h.H
				}
				got[k] = diffNorm(s.root, start, r, b)
			}
			line := fmt.Sprintf("b%d %s => %s", bi, r, got[0])
			log = append(log, line)
			bogus := false
			for _, f := range r.fields {
				if h, ok := f.(hRef); ok {
					_, ok0 := sides[0].handles[int(h)]
					_, ok1 := sides[1].handles[int(h)]
					bogus = bogus || !ok0 || !ok1
				}
			}
			if got[0] != got[1] && strings.HasPrefix(got[0], "STATUS") && strings.HasPrefix(got[1], "STATUS") && got[0] != "STATUS 0" && got[1] != "STATUS 0" {
				if !bogus {
					soft[fmt.Sprintf("%s: %s vs %s", r, got[0], got[1])]++
				}
				continue
			}
			if r.ext == "copy-data" && got[0] == "STATUS 0" && strings.HasPrefix(got[1], "STATUS") {
				// sftp-server reports success for a copy of at most 64 KiB whose
				// read failed, and copies within one file opened twice (refused here)
				soft[fmt.Sprintf("aborted: copy-data: %s vs %s", got[0], got[1])]++
				return ""
			}
			if got[0] == "STATUS 0" && got[1] == "STATUS 4" && (r.typ == 10 || r.typ == 6 || r.typ == 18) {
				// known: FSETSTAT of times and an appending WRITE on a file
				// renamed since it was opened are refused; RENAME onto a
				// dangling symlink is refused (sftp-server stat(2)s the new name)
				soft[fmt.Sprintf("aborted: %s %s vs %s", r, got[0], got[1])]++
				return ""
			}
			if r.typ == 6 && got[1] == "STATUS 0" && got[0] == "STATUS 2" && strings.Contains(r.String(), ` ""`) {
				continue // an empty WRITE to a handle not open to write
			}
			if got[0] != got[1] {
				if verbose {
					t.Logf("log:\n%s", strings.Join(log, "\n"))
				}
				return fmt.Sprintf("%s:\n  sftp-server: %s\n  porthole:    %s", r, got[0], got[1])
			}
		}
		id += uint32(len(batch))
	}
	for _, s := range sides {
		s.stop()
	}
	sides = nil
	a := diffTreeDump(filepath.Join(base, "0", "root"), start)
	b := diffTreeDump(filepath.Join(base, "1", "root"), start)
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		if verbose {
			t.Logf("log:\n%s", strings.Join(log, "\n"))
		}
		var d []string
		for _, x := range a {
			if !slices.Contains(b, x) {
				d = append(d, "- "+x)
			}
		}
		for _, x := range b {
			if !slices.Contains(a, x) {
				d = append(d, "+ "+x)
			}
		}
		return "final trees differ (- sftp-server, + porthole):\n" + strings.Join(d, "\n")
	}
	return ""
}

// shrink removes batches and requests while the run still fails.
func diffShrink(t *testing.T, seed int64, prog [][]diffReq) [][]diffReq {
	want := diffRun(t, seed, prog, false, nil)
	kind := func(m string) string {
		if i := strings.IndexByte(m, ' '); i > 0 && !strings.HasPrefix(m, "final") && !strings.HasPrefix(m, "EXT") {
			return m[:i] + m[strings.IndexByte(m, '\n'):]
		}
		return m[:min(len(m), 30)]
	}
	fails := func(p [][]diffReq) bool { return kind(diffRun(t, seed, p, false, nil)) == kind(want) }
	changed := true
	for changed {
		changed = false
		for i := 0; i < len(prog); i++ {
			p := append(append([][]diffReq{}, prog[:i]...), prog[i+1:]...)
			if fails(p) {
				prog, changed = p, true
				i--
			}
		}
		for i := 0; i < len(prog); i++ {
			for j := 0; j < len(prog[i]) && len(prog[i]) > 1; j++ {
				p := append([][]diffReq{}, prog...)
				p[i] = append(append([]diffReq{}, prog[i][:j]...), prog[i][j+1:]...)
				if fails(p) {
					prog, changed = p, true
					j--
				}
			}
		}
		// split batches into single requests
		for i := 0; i < len(prog); i++ {
			if len(prog[i]) > 1 {
				var p [][]diffReq
				p = append(p, prog[:i]...)
				for _, r := range prog[i] {
					p = append(p, []diffReq{r})
				}
				p = append(p, prog[i+1:]...)
				if fails(p) {
					prog, changed = p, true
				}
			}
		}
	}
	return prog
}

// TestSFTPDiffSidesStopWithRepliesUnread: both sides of the differential
// test stop when a run ends with replies unread (a reply id that did not
// match ends diffRun early), instead of hanging the test binary until its
// timeout.
func TestSFTPDiffSidesStopWithRepliesUnread(t *testing.T) {
	sides := map[string]func(*testing.T, string) *diffSide{"porthole": ourSide}
	if (&Server{}).externalSFTPServer() != "" {
		sides["sftp-server"] = sftpServerSide
	} else if os.Getenv("CI") == "true" {
		t.Fatal("no sftp-server to compare with (install Debian's openssh-sftp-server; tools/deps.sh test does)")
	}
	for name, mk := range sides {
		// In a goroutine, so that a side that hangs fails the test here
		// (ourSide stops in its cleanup, which t.Run waits for).
		ran := make(chan bool, 1)
		go func() {
			ran <- t.Run(name, func(t *testing.T) {
				s := mk(t, t.TempDir())
				// 3000 STATs take 42 KB, less than a pipe holds; their
				// replies take 123 KB, more than one holds.
				var all []byte
				for id := range uint32(3000) {
					all = append(all, sftpPacket(sftpStat, 100+id, ".")...)
				}
				s.send(all)
				s.recv()
				s.stop()
			})
		}()
		select {
		case <-ran:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not stop with replies unread", name)
		}
	}
}

func TestSFTPDifferential(t *testing.T) {
	if (&Server{}).externalSFTPServer() == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no sftp-server to compare with (install Debian's openssh-sftp-server; tools/deps.sh test does)")
		}
		t.Skip("no sftp-server (Debian's openssh-sftp-server) to compare with")
	}
	needRoot(t)
	seeds, _ := strconv.Atoi(os.Getenv("SFTP_DIFF_SEEDS"))
	if seeds == 0 {
		seeds = 5
	}
	first, _ := strconv.Atoi(os.Getenv("SFTP_DIFF_FIRST"))
	nbatch := 30
	fails := 0
	soft := map[string]int{"": 0}
	defer func() {
		var ks []string
		for k, n := range soft {
			ks = append(ks, fmt.Sprintf("%4d %s", n, k))
		}
		sort.Strings(ks)
		t.Logf("status codes that differ (both errors):\n%s", strings.Join(ks, "\n"))
	}()
	for seed := int64(first); seed < int64(first+seeds); seed++ {
		prog := diffProgram(seed, nbatch)
		if msg := diffRun(t, seed, prog, false, soft); msg != "" {
			t.Logf("seed %d: %s", seed, msg)
			fails++
			min := diffShrink(t, seed, prog)
			var lines []string
			for bi, b := range min {
				for _, r := range b {
					lines = append(lines, fmt.Sprintf("  b%d %s", bi, r))
				}
			}
			t.Errorf("seed %d: %s\nminimal (%s):\n%s", seed, msg, diffRun(t, seed, min, true, nil), strings.Join(lines, "\n"))
			if fails >= 8 {
				return
			}
		}
	}
}
