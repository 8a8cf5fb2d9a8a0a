package sshd

// How the in-process scp behaves where OpenSSH's scp (Debian's
// openssh-client, 9.2p1 when this was written) is the reference: each
// expectation here was first read off its "scp -t" fed the same stream, and
// TestSCPSinkMatchesOpenSSH compares the two again on every run.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// scpTestEnv is the environment of the scp tables' commands, run in dir:
// HOME is dir, D and G are for the source's expansion cases.
func scpTestEnv(dir string) []string {
	return []string{"HOME=" + dir, "D=d", "G=d/*"}
}

// scpInProcess runs cmdline (an "scp -t" or "scp -f" command) in-process
// over stream, with dir as working and home directory and scpTestEnv's
// variables, and returns what it answered, with dir written as ROOT, and its
// exit status.
func scpInProcess(t *testing.T, dir, cmdline, stream string) (string, int) {
	t.Helper()
	expand := func(name string) (string, bool) {
		if name == "~" {
			return dir, true
		}
		return lookupEnv(scpTestEnv(dir), name)
	}
	opts, ok, err := parseSCPCommand(cmdline, expand)
	if !ok || err != nil {
		t.Fatalf("parseSCPCommand(%q) = ok %v, %v", cmdline, ok, err)
	}
	var out bytes.Buffer
	c := &scp{r: bufio.NewReader(strings.NewReader(stream)), w: &out, opts: opts}
	status, _ := c.run(dir)
	return strings.ReplaceAll(out.String(), dir, "ROOT"), status
}

// withUmask sets the process umask for the rest of the test: sshd's tests
// do not run in parallel.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// scpTestMtime is the time the test streams' T lines set.
const scpTestMtime = 1700000000

// scpTree describes the tree under root: for each path, its type and mode
// (set-id and sticky bits included), the content of a file, and "T" when
// its mtime is scpTestMtime.
func scpTree(t *testing.T, root string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v", fi.Mode())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(data)
		}
		if fi.ModTime().Unix() == scpTestMtime {
			desc += " T"
		}
		rel, _ := filepath.Rel(root, p)
		tree[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// scpLayout makes the files the sink tests start from. Directories the
// test leaves without u+w are given it back so that TempDir can remove them
// when not running as root.
func scpLayout(t *testing.T, root string) {
	t.Helper()
	t.Cleanup(func() {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	for _, d := range []struct {
		name string
		mode os.FileMode
	}{{"dir", 0o755}, {"ex700", 0o700}} {
		if err := os.Mkdir(filepath.Join(root, d.name), d.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(root, d.name), d.mode)
	}
	for _, f := range []string{"dir/conf", "exfile"} {
		if err := os.WriteFile(filepath.Join(root, f), []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// scpLayoutTree is scpTree of an untouched scpLayout.
func scpLayoutTree() map[string]string {
	return map[string]string{
		"dir":      "drwxr-xr-x",
		"dir/conf": "-rw------- old",
		"ex700":    "drwx------",
		"exfile":   "-rw------- old",
	}
}

// withEntries returns a copy of base with the entries of more added.
func withEntries(base map[string]string, more map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range more {
		m[k] = v
	}
	return m
}

// scpSinkCases are sink runs (under umask 022) and what OpenSSH's scp -t
// answers to them and leaves in scpLayout. A stream stops where a client
// would after an error answer.
var scpSinkCases = []struct {
	name   string
	cmd    string
	stream string
	answer string // ROOT stands for the directory
	status int
	tree   map[string]string // added to scpLayoutTree
}{
	// A trailing "/" means the target must be a directory.
	{
		name: "file to an existing file with a slash", cmd: "scp -t ROOT/dir/conf/", stream: "C0644 3 f\n",
		answer: "\x00\x01scp: ROOT/dir/conf/: Is a directory\n", status: 1,
	},
	{
		name: "file to a missing name with a slash", cmd: "scp -t ROOT/dir/newdir/", stream: "C0644 3 f\n",
		answer: "\x00\x01scp: ROOT/dir/newdir/: Is a directory\n", status: 1,
	},
	{
		name: "file to a directory with a slash", cmd: "scp -t ROOT/dir/", stream: "C0644 3 f\nabc\x00",
		answer: "\x00\x00\x00", tree: map[string]string{"dir/f": "-rw-r--r-- abc"},
	},
	{
		name: "directory to an existing file with a slash", cmd: "scp -r -t ROOT/dir/conf/", stream: "D0755 0 d\n",
		answer: "\x00\x01scp: ROOT/dir/conf/: File exists\n", status: 1,
	},
	{
		name: "directory to a missing name with a slash", cmd: "scp -r -t ROOT/dir/newdir/", stream: "D0755 0 d\nC0644 3 f\nabc\x00E\n",
		answer: "\x00\x00\x00\x00\x00",
		tree:   map[string]string{"dir/newdir": "drwxr-xr-x", "dir/newdir/f": "-rw-r--r-- abc"},
	},
	{
		name: "file to an existing file", cmd: "scp -t ROOT/dir/conf", stream: "C0644 3 f\nabc\x00",
		answer: "\x00\x00\x00", tree: map[string]string{"dir/conf": "-rw------- abc"},
	},
	// Errors in strerror's words.
	{
		name: "file in a missing directory", cmd: "scp -t ROOT/nope/f", stream: "C0644 3 f\n",
		answer: "\x00\x01scp: ROOT/nope/f: No such file or directory\n", status: 1,
	},
	// With -d (several files sent) the target must be a directory; the
	// refusal ends the run, so it is fatal (\x02), where OpenSSH sends
	// every error as \x01 and then exits.
	{
		name: "files to a missing directory", cmd: "scp -d -t ROOT/nope", stream: "",
		answer: "\x02scp: ROOT/nope: No such file or directory\n", status: 1,
	},
	{
		name: "files to a file", cmd: "scp -d -t ROOT/exfile", stream: "",
		answer: "\x02scp: ROOT/exfile: Not a directory\n", status: 1,
	},
	// Without -p: what is created gets the source's mode less the umask
	// and the set-id bits, a file made with u+w for writing loses it again,
	// what exists keeps its mode.
	{
		name: "modes without -p", cmd: "scp -r -t ROOT",
		stream: "D0777 0 newdir\nC0444 3 ro\nabc\x00C0777 1 rwx\nx\x00E\n" +
			"D0755 0 ex700\nE\nC0444 2 exfile\nhi\x00" +
			"D0500 0 rodir\nC0644 1 in\nz\x00E\nC4755 1 suid\nq\x00D2775 0 sgid\nE\n",
		answer: strings.Repeat("\x00", 19),
		tree: map[string]string{
			"newdir":     "drwxr-xr-x",
			"newdir/ro":  "-r--r--r-- abc",
			"newdir/rwx": "-rwxr-xr-x x",
			"exfile":     "-rw------- hi",
			"rodir":      "dr-x------",
			"rodir/in":   "-rw-r--r-- z",
			"suid":       "-rwxr-xr-x q",
			"sgid":       "drwxr-xr-x",
		},
	},
	// With -p: exactly the source's mode, existing entries included.
	{
		name: "modes with -p", cmd: "scp -r -p -t ROOT",
		stream: "T1700000000 0 1700000000 0\nD0777 0 newdir\nC0444 3 ro\nabc\x00C0777 1 rwx\nx\x00E\n" +
			"D0755 0 ex700\nE\nT1700000000 0 1700000000 0\nC0444 2 exfile\nhi\x00" +
			"D0500 0 rodir\nC0604 1 in\nz\x00E\n",
		answer: strings.Repeat("\x00", 17),
		tree: map[string]string{
			"newdir":     "drwxrwxrwx T",
			"newdir/ro":  "-r--r--r-- abc",
			"newdir/rwx": "-rwxrwxrwx x",
			"ex700":      "drwxr-xr-x",
			"exfile":     "-r--r--r-- hi T",
			"rodir":      "dr-x------",
			"rodir/in":   "-rw----r-- z",
		},
	},
	// A source that could not read the whole file (it shrank, or a read
	// failed) pads it and sends a warning instead of \0: the sink still
	// answers, or the source waits for that answer for ever.
	{
		name: "file the source could not read", cmd: "scp -t ROOT",
		stream: "C0644 3 short\nab\x00\x01scp: short: Broken pipe\nC0644 1 next\nn\x00",
		answer: strings.Repeat("\x00", 5), status: 1,
		tree: map[string]string{"short": "-rw-r--r-- ab\x00", "next": "-rw-r--r-- n"},
	},
	// Times from a T line are set with or without -p.
	{
		name: "times without -p", cmd: "scp -r -t ROOT",
		stream: "T1700000000 0 1700000000 0\nC0644 1 t\nq\x00T1700000000 0 1700000000 0\nD0755 0 d\nE\n",
		answer: strings.Repeat("\x00", 7),
		tree:   map[string]string{"t": "-rw-r--r-- q T", "d": "drwxr-xr-x T"},
	},
}

func TestSCPSink(t *testing.T) {
	withUmask(t, 0o022)
	for _, tc := range scpSinkCases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			scpLayout(t, root)
			answer, status := scpInProcess(t, root, strings.ReplaceAll(tc.cmd, "ROOT", root), tc.stream)
			if answer != tc.answer || status != tc.status {
				t.Errorf("%s: answered %q, status %d; want %q, %d", tc.cmd, answer, status, tc.answer, tc.status)
			}
			if diff := cmp.Diff(withEntries(scpLayoutTree(), tc.tree), scpTree(t, root)); diff != "" {
				t.Errorf("%s: tree mismatch (-want +got):\n%s", tc.cmd, diff)
			}
		})
	}
}

// TestSCPSinkSetIDWithP: with -p a file keeps its set-id bits. (Not in
// scpSinkCases: OpenSSH's scp -t, not root, loses them when it writes the
// file after creating it with them.)
func TestSCPSinkSetIDWithP(t *testing.T) {
	root := t.TempDir()
	if answer, status := scpInProcess(t, root, "scp -p -t "+root, "C4755 1 suid\nq\x00"); answer != "\x00\x00\x00" || status != 0 {
		t.Fatalf("answered %q, status %d", answer, status)
	}
	want := map[string]string{"suid": "urwxr-xr-x q"}
	if diff := cmp.Diff(want, scpTree(t, root)); diff != "" {
		t.Errorf("tree mismatch (-want +got):\n%s", diff)
	}
}

// TestSCPSinkMatchesOpenSSH runs scpSinkCases through OpenSSH's own
// "scp -t" too (needs /usr/bin/scp, Debian's openssh-client), to catch the
// table drifting from what OpenSSH does.
func TestSCPSinkMatchesOpenSSH(t *testing.T) {
	bin := needProgram(t, "scp")
	withUmask(t, 0o022)
	for _, tc := range scpSinkCases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			scpLayout(t, root)
			args := strings.Fields(strings.ReplaceAll(tc.cmd, "ROOT", root))[1:]
			cmd := exec.Command(bin, args...)
			cmd.Stdin = strings.NewReader(tc.stream)
			out, status := outputAndStatus(t, cmd)
			want := strings.ReplaceAll(tc.answer, "\x02", "\x01") // see the -d cases
			if answer := strings.ReplaceAll(string(out), root, "ROOT"); answer != want || status != tc.status {
				t.Errorf("OpenSSH %s: answered %q, status %d; the table says %q, %d", tc.cmd, answer, status, want, tc.status)
			}
			if diff := cmp.Diff(withEntries(scpLayoutTree(), tc.tree), scpTree(t, root)); diff != "" {
				t.Errorf("OpenSSH %s: tree differs from the table (-table +OpenSSH):\n%s", tc.cmd, diff)
			}
		})
	}
}

// scpSourceCases are "scp -f" arguments as OpenSSH's client sends them
// (the remote path as typed) and what the source sends for them, from a
// directory holding d/a, d/b and d/[ab]. Only unquoted metacharacters glob,
// as in the shell OpenSSH runs scp -f through.
var scpSourceCases = []struct {
	arg    string
	want   string // the stream sent, with relative paths in messages
	status int
}{
	{arg: `d/\[ab\]`, want: "C0644 1 [ab]\nL\x00"},
	{arg: `'d/[ab]'`, want: "C0644 1 [ab]\nL\x00"},
	{arg: `"d/[ab]"`, want: "C0644 1 [ab]\nL\x00"},
	{arg: `d/'['ab]`, want: "C0644 1 [ab]\nL\x00"},
	{arg: `d/[ab]`, want: "C0644 1 a\nA\x00C0644 1 b\nB\x00"},
	{arg: `d/?`, want: "C0644 1 a\nA\x00C0644 1 b\nB\x00"},
	{arg: `d/[xy]`, want: "\x01scp: d/[xy]: No such file or directory\n", status: 1},
	{arg: `'d/*'`, want: "\x01scp: d/*: No such file or directory\n", status: 1},
	// Variables and ~ expand as in the shell: unquoted, a value globs.
	{arg: `$D/a`, want: "C0644 1 a\nA\x00"},
	{arg: `${D}/'[ab]'`, want: "C0644 1 [ab]\nL\x00"},
	{arg: `"$D/[ab]"`, want: "C0644 1 [ab]\nL\x00"},
	{arg: `$G`, want: "C0644 1 [ab]\nL\x00C0644 1 a\nA\x00C0644 1 b\nB\x00"},
	{arg: `"$G"`, want: "\x01scp: d/*: No such file or directory\n", status: 1},
	{arg: `$HOME/d/a`, want: "C0644 1 a\nA\x00"},
	{arg: `~/d/?`, want: "C0644 1 a\nA\x00C0644 1 b\nB\x00"},
	{arg: `'~/d/a'`, want: "\x01scp: ~/d/a: No such file or directory\n", status: 1},
}

// scpSourceDirs are names for the directory the source runs in: glob
// metacharacters in it must not glob (or glob as in the shell, for an
// unquoted $HOME, and match nothing).
var scpSourceDirs = []string{"home", "home[1]*"}

// scpSourceLayout makes d/a, d/b and d/[ab] under a directory named name
// and returns it.
func scpSourceLayout(t *testing.T, name string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"a": "A", "b": "B", "[ab]": "L"} {
		p := filepath.Join(root, "d", name)
		writeFile(t, p, data)
		os.Chmod(p, 0o644)
	}
	return root
}

func TestSCPSourceGlobQuoting(t *testing.T) {
	for _, dir := range scpSourceDirs {
		root := scpSourceLayout(t, dir)
		for _, tc := range scpSourceCases {
			got, status := scpInProcess(t, root, "scp -f "+tc.arg, strings.Repeat("\x00", 20))
			got = strings.ReplaceAll(got, "ROOT/", "")
			if got != tc.want || status != tc.status {
				t.Errorf("in %s: scp -f %s sent %q, status %d; want %q, %d", dir, tc.arg, got, status, tc.want, tc.status)
			}
		}
	}
}

// TestSCPSourceMatchesOpenSSH runs scpSourceCases through the shell and
// OpenSSH's own "scp -f" (needs /usr/bin/scp and /bin/sh), as sshd would
// run them.
func TestSCPSourceMatchesOpenSSH(t *testing.T) {
	needProgram(t, "scp")
	root := scpSourceLayout(t, scpSourceDirs[len(scpSourceDirs)-1])
	for _, tc := range scpSourceCases {
		cmd := exec.Command("/bin/sh", "-c", "scp -f "+tc.arg)
		cmd.Dir, cmd.Env = root, append(os.Environ(), scpTestEnv(root)...)
		cmd.Stdin = strings.NewReader(strings.Repeat("\x00", 20))
		out, err := cmd.Output()
		status := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("sh -c scp -f %s: %v", tc.arg, err)
		}
		if string(out) != tc.want || status != tc.status {
			t.Errorf("OpenSSH: scp -f %s sent %q, status %d; the table says %q, %d", tc.arg, out, status, tc.want, tc.status)
		}
	}
}

// TestOpenSSHSCPLegacyCompat: the cases above through OpenSSH's client
// ("scp -O"), as the problems were first seen.
func TestOpenSSHSCPLegacyCompat(t *testing.T) {
	withUmask(t, 0o022)
	o := newOpenSSHEnv(t, nil)
	scp := needProgram(t, "scp")
	base := append(o.opts(), "-P", o.port, "-O")
	home := o.home("root")
	src := filepath.Join(o.dir, "src.txt")
	writeFile(t, src, "new")
	os.MkdirAll(filepath.Join(home, "dir"), 0o755)
	conf := filepath.Join(home, "dir", "conf")
	writeFile(t, conf, "old")

	// A trailing slash: the target must be a directory.
	for _, target := range []string{"dir/conf/", "dir/newdir/"} {
		_, errOut, code := o.run(t, nil, scp, append(base, src, "root@127.0.0.1:"+target)...)
		if want := target + ": Is a directory"; code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("scp -O src host:%s: exit %d, %q; want 1 and %q", target, code, errOut, want)
		}
	}
	if got, _ := os.ReadFile(conf); string(got) != "old" {
		t.Errorf("dir/conf = %q after scp to dir/conf/, want it untouched", got)
	}
	if _, err := os.Lstat(filepath.Join(home, "dir", "newdir")); err == nil {
		t.Error("scp to dir/newdir/ made dir/newdir")
	}
	// Several files to a missing directory.
	_, errOut, code := o.run(t, nil, scp, append(base, src, src, "root@127.0.0.1:missing")...)
	if want := "missing: No such file or directory"; code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("scp -O src src host:missing: exit %d, %q; want 1 and %q", code, errOut, want)
	}

	// An escaped glob character is literal.
	d := filepath.Join(home, "g")
	os.Mkdir(d, 0o755)
	for name, data := range map[string]string{"a": "A", "b": "B", "[ab]": "L"} {
		writeFile(t, filepath.Join(d, name), data)
	}
	down := filepath.Join(o.dir, "down")
	os.Mkdir(down, 0o755)
	if _, errOut, code := o.run(t, nil, scp, append(base, `root@127.0.0.1:g/\[ab\]`, down)...); code != 0 {
		t.Errorf(`scp -O host:g/\[ab\]: exit %d, %q`, code, errOut)
	}
	if entries, _ := os.ReadDir(down); len(entries) != 1 || entries[0].Name() != "[ab]" {
		t.Errorf(`scp -O host:g/\[ab\] fetched %v, want [ab] alone`, entries)
	}

	// The remote path is expanded as the shell would expand it; command
	// substitution is refused with a message that scp prints, whichever way
	// it copies.
	writeFile(t, filepath.Join(home, "exp.txt"), "expanded")
	got := filepath.Join(o.dir, "got.txt")
	for _, remote := range []string{"$HOME/exp.txt", "${HOME}/exp.txt", `"$HOME"/exp.txt`, "~/exp.txt", "~root/exp.txt"} {
		os.Remove(got)
		_, errOut, code := o.run(t, nil, scp, append(base, "root@127.0.0.1:"+remote, got)...)
		if data, _ := os.ReadFile(got); code != 0 || string(data) != "expanded" {
			t.Errorf("scp -O host:%s: exit %d, %q, fetched %q; want home's exp.txt", remote, code, errOut, data)
		}
	}
	if _, errOut, code := o.run(t, nil, scp, append(base, src, "root@127.0.0.1:$HOME/up.txt")...); code != 0 {
		t.Errorf("scp -O src host:$HOME/up.txt: exit %d, %q", code, errOut)
	}
	if data, err := os.ReadFile(filepath.Join(home, "up.txt")); string(data) != "new" {
		t.Errorf("home's up.txt after scp -O src host:$HOME/up.txt: %q, %v; want new", data, err)
	}
	for _, args := range [][]string{{"root@127.0.0.1:$(echo exp.txt)", got}, {src, "root@127.0.0.1:`echo up.txt`"}} {
		_, errOut, code := o.run(t, nil, scp, append(base, args...)...)
		if want := "command substitution and arithmetic expansion are not supported"; code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("scp -O %q: exit %d, %q; want 1 and %q", args, code, errOut, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(home, "`echo up.txt`")); err == nil {
		t.Error("scp -O src host:`echo up.txt` wrote a file of that name")
	}

	// -r without -p: modes less the umask, existing directories untouched.
	tree := filepath.Join(o.dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	writeFile(t, filepath.Join(tree, "ro.txt"), "ro")
	os.Chmod(filepath.Join(tree, "ro.txt"), 0o444)
	os.Chmod(filepath.Join(tree, "sub"), 0o777)
	os.Mkdir(filepath.Join(home, "tree"), 0o700)
	if _, errOut, code := o.run(t, nil, scp, append(base, "-r", tree, "root@127.0.0.1:")...); code != 0 {
		t.Fatalf("scp -O -r tree host: exit %d, %q", code, errOut)
	}
	for name, want := range map[string]os.FileMode{"tree": os.ModeDir | 0o700, "tree/sub": os.ModeDir | 0o755, "tree/ro.txt": 0o444} {
		if fi, err := os.Stat(filepath.Join(home, name)); err != nil || fi.Mode() != want {
			t.Errorf("%s after scp -O -r: %v, %v; want mode %v", name, fi.Mode(), err, want)
		}
	}
}

// shellSCP runs cmdline through /bin/sh and OpenSSH's own scp in dir, as
// sshd would, and returns what it sent and its exit status.
func shellSCP(t *testing.T, dir, cmdline, stream string) (string, int) {
	t.Helper()
	needProgram(t, "scp")
	cmd := exec.Command("/bin/sh", "-c", cmdline)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), scpTestEnv(dir)...)
	cmd.Stdin = strings.NewReader(stream)
	out, status := outputAndStatus(t, cmd)
	return strings.ReplaceAll(string(out), dir, "ROOT"), status
}

// outputAndStatus runs cmd and returns its standard output and exit status; a
// command that cannot run fails the test.
func outputAndStatus(t *testing.T, cmd *exec.Cmd) ([]byte, int) {
	t.Helper()
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out, ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%q: %v", cmd.Args, err)
	}
	return out, 0
}

// TestSCPSourceGlobHiddenAndNegation: an unquoted pattern expands as the
// shell's does: *, ? and [...] do not match a leading "." (hidden files),
// and [!...] is a negated bracket expression.
func TestSCPSourceGlobHiddenAndNegation(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "d", ".ssh"), 0o755)
	for name, data := range map[string]string{"a": "A", "b": "B", ".h": "H", ".ssh/id": "K"} {
		p := filepath.Join(root, "d", name)
		writeFile(t, p, data)
		os.Chmod(p, 0o644)
	}
	os.Chmod(filepath.Join(root, "d", ".ssh"), 0o755)
	for _, tc := range []struct{ cmd, want string }{
		{"scp -f d/*", "C0644 1 a\nA\x00C0644 1 b\nB\x00"},
		{"scp -f d/?", "C0644 1 a\nA\x00C0644 1 b\nB\x00"},
		{"scp -f d/[!a]", "C0644 1 b\nB\x00"},
		{"scp -f d/.h*", "C0644 1 .h\nH\x00"},
		{"scp -r -f d/*", "C0644 1 a\nA\x00C0644 1 b\nB\x00"},
	} {
		got, status := scpInProcess(t, root, tc.cmd, strings.Repeat("\x00", 20))
		if got != tc.want || status != 0 {
			t.Errorf("%s sent %q, status %d; want %q, 0", tc.cmd, got, status, tc.want)
		}
		if sh, status := shellSCP(t, root, tc.cmd, strings.Repeat("\x00", 20)); sh != tc.want || status != 0 {
			t.Errorf("OpenSSH: %s sent %q, status %d; the test says %q, 0", tc.cmd, sh, status, tc.want)
		}
	}
}

// TestSCPSinkTargetGlob: an unquoted pattern in the sink's target expands
// as the shell would expand it before running scp -t: one match is the
// target, several are refused, none leaves the word as it is.
func TestSCPSinkTargetGlob(t *testing.T) {
	withUmask(t, 0o022)
	for _, tc := range []struct {
		cmd    string
		answer string
		status int
		tree   map[string]string
	}{
		{"scp -t di*", "\x00\x00\x00", 0, map[string]string{"dir/f": "-rw-r--r-- x"}},
		{"scp -t ./d?r/", "\x00\x00\x00", 0, map[string]string{"dir/f": "-rw-r--r-- x"}},
		{"scp -t ex*", "", 1, nil},
		{"scp -t 'di*'", "\x00\x00\x00", 0, map[string]string{"di*": "-rw-r--r-- x"}},
		{"scp -t nomatch*", "\x00\x00\x00", 0, map[string]string{"nomatch*": "-rw-r--r-- x"}},
	} {
		for _, ours := range []bool{true, false} {
			root := t.TempDir()
			scpLayout(t, root)
			var answer string
			var status int
			who := "in-process"
			if ours {
				answer, status = scpInProcess(t, root, tc.cmd, "C0644 1 f\nx\x00")
			} else {
				who = "OpenSSH"
				answer, status = shellSCP(t, root, tc.cmd, "C0644 1 f\nx\x00")
			}
			if tc.answer == "" { // refused: the wording differs (\x01 or \x02)
				if status != 1 || !strings.Contains(answer, "ambiguous target") {
					t.Errorf("%s %s: answered %q, status %d; want ambiguous target, 1", who, tc.cmd, answer, status)
				}
			} else if answer != tc.answer || status != tc.status {
				t.Errorf("%s %s: answered %q, status %d; want %q, %d", who, tc.cmd, answer, status, tc.answer, tc.status)
			}
			if diff := cmp.Diff(withEntries(scpLayoutTree(), tc.tree), scpTree(t, root)); diff != "" {
				t.Errorf("%s %s: tree mismatch (-want +got):\n%s", who, tc.cmd, diff)
			}
		}
	}
}

// TestOpenSSHSCPPreserveBefore1970: scp -O -p of a file whose times are
// before 1970 sends them as 0, as OpenSSH's scp -f does; a negative T line
// is a protocol error to the client, which then copies nothing more.
func TestOpenSSHSCPPreserveBefore1970(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	scp := needProgram(t, "scp")
	home := o.home("root")
	old := filepath.Join(home, "old")
	writeFile(t, old, "old")
	os.Chtimes(old, time.Unix(-100, 0), time.Unix(-100, 0))
	writeFile(t, filepath.Join(home, "new"), "new")
	down := filepath.Join(o.dir, "down")
	os.Mkdir(down, 0o755)
	args := append(o.opts(), "-P", o.port, "-O", "-p", "root@127.0.0.1:old", "root@127.0.0.1:new", down)
	if _, errOut, code := o.run(t, nil, scp, args...); code != 0 {
		t.Errorf("scp -O -p host:old host:new: exit %d, %q", code, errOut)
	}
	for _, name := range []string{"old", "new"} {
		if data, err := os.ReadFile(filepath.Join(down, name)); err != nil || string(data) != name {
			t.Errorf("%s after scp -O -p: %q, %v", name, data, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(down, "old")); err == nil && fi.ModTime().Unix() != 0 {
		t.Errorf("old's mtime after scp -O -p: %v, want the epoch", fi.ModTime().Unix())
	}
}

// TestSCPSourceShrunkFileMessage: a file that gives fewer bytes than its
// size (sysfs attributes are 4096 bytes by stat) is padded and reported in
// OpenSSH's words, not as "EOF".
func TestSCPSourceShrunkFileMessage(t *testing.T) {
	const p = "/sys/devices/system/cpu/online" // on every Linux with sysfs
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	got, status := scpInProcess(t, t.TempDir(), "scp -f "+p, strings.Repeat("\x00", 5))
	want := "\x01scp: " + p + ": Broken pipe\n"
	if !strings.HasSuffix(got, want) || status != 1 {
		t.Errorf("scp -f %s ended %q, status %d; want %q, 1", p, got[max(0, len(got)-80):], status, want)
	}
	if sh, _ := shellSCP(t, t.TempDir(), "scp -f "+p, strings.Repeat("\x00", 5)); !strings.HasSuffix(sh, want) {
		t.Errorf("OpenSSH: scp -f %s ended %q; the test says %q", p, sh[max(0, len(sh)-80):], want)
	}
}

// TestSCPSourceNewlineName: scp -f sends a name that contains a newline
// encoded as OpenSSH's scp sends it (strnvis with VIS_NL: "new\^Jline"), and
// other names as they are; the file is copied and the status is 0. The name
// was left out with a warning (status 1), and PuTTY's pscp stops the whole
// download at that. A directory so named is sent under the encoded name too
// (OpenSSH's scp opens the encoded name, and fails), with what is in it.
func TestSCPSourceNewlineName(t *testing.T) {
	cases := []struct{ name, sent string }{
		{"new\nline", `new\^Jline`},
		{"x\\y\t z\x7f\xc3\xa9\xa0\x85\x01\nn", `x\\y` + "\t" + ` z\^?\M-C\M-)\240\M^E\^A\^Jn`},
		{"back\\slash \x01 caf\xc3\xa9", "back\\slash \x01 caf\xc3\xa9"}, // no newline: as it is
	}
	zeros := strings.Repeat("\x00", 20)
	for _, tc := range cases {
		root := t.TempDir()
		tree := filepath.Join(root, "tree")
		os.Mkdir(tree, 0o755)
		os.Chmod(tree, 0o755)
		f := filepath.Join(tree, tc.name)
		writeFile(t, f, "x")
		os.Chmod(f, 0o644)
		want := "D0755 0 tree\nC0644 1 " + tc.sent + "\nx\x00E\n"
		if got, status := scpInProcess(t, root, "scp -r -f tree", zeros); got != want || status != 0 {
			t.Errorf("scp -r -f of %q sent %q, status %d; want %q, 0", tc.name, got, status, want)
		}
		if _, err := exec.LookPath("scp"); err == nil {
			if got, status := shellSCP(t, root, "scp -r -f tree", zeros); got != want || status != 0 {
				t.Errorf("OpenSSH: scp -r -f of %q sent %q, status %d; the test says %q, 0", tc.name, got, status, want)
			}
		}
	}
	root := t.TempDir()
	sub := filepath.Join(root, "tree", "d\nir")
	os.MkdirAll(sub, 0o755)
	os.Chmod(filepath.Join(root, "tree"), 0o755)
	os.Chmod(sub, 0o755)
	writeFile(t, filepath.Join(sub, "f"), "x")
	os.Chmod(filepath.Join(sub, "f"), 0o644)
	want := "D0755 0 tree\nD0755 0 d\\^Jir\nC0644 1 f\nx\x00E\nE\n"
	if got, status := scpInProcess(t, root, "scp -r -f tree", zeros); got != want || status != 0 {
		t.Errorf("scp -r -f of a directory d\\nir sent %q, status %d; want %q, 0", got, status, want)
	}
}

// TestOpenSSHSCPRecursiveNewlineName: "scp -O -r host:tree" of a tree that
// holds a file whose name has a newline copies every file, that one as
// "new\^Jline", and exits 0, as from OpenSSH's sshd.
func TestOpenSSHSCPRecursiveNewlineName(t *testing.T) {
	scp := needProgram(t, "scp")
	o := newOpenSSHEnv(t, nil)
	src := filepath.Join(o.home("root"), "tree")
	os.Mkdir(src, 0o755)
	for _, name := range []string{"a", "new\nline", "z"} {
		writeFile(t, filepath.Join(src, name), name)
	}
	dst := t.TempDir()
	_, errOut, code := o.run(t, nil, scp, append(o.opts(), "-O", "-r", "-P", o.port, "root@127.0.0.1:tree", dst)...)
	entries, _ := os.ReadDir(filepath.Join(dst, "tree"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"a", `new\^Jline`, "z"}; code != 0 || !slices.Equal(names, want) {
		t.Errorf("scp -O -r host:tree: exit %d, %q, copied %q; want 0 and %q", code, errOut, names, want)
	}
	if data, _ := os.ReadFile(filepath.Join(dst, "tree", `new\^Jline`)); string(data) != "new\nline" {
		t.Errorf("new\\^Jline holds %q, want new\\nline's text", data)
	}
}

// TestSCPDotDotAfterLink: a path with ".." after a link is the kernel's to
// resolve, as OpenSSH's scp -t and -f leave it: with deep a link to dir/sub,
// deep/../conf is dir/conf. Cleaned as text it was ~/conf: an upload
// overwrote another file, and a download sent it. Patterns keep it too.
func TestSCPDotDotAfterLink(t *testing.T) {
	tree := func(t *testing.T) string {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "dir", "sub"), 0o755)
		os.Symlink("dir/sub", filepath.Join(root, "deep"))
		writeFile(t, filepath.Join(root, "conf"), "outer")
		writeFile(t, filepath.Join(root, "dir", "conf"), "inner")
		return root
	}
	for _, tc := range []struct{ cmd, stream string }{
		{"scp -f deep/../conf", strings.Repeat("\x00", 5)},
		{"scp -f deep/../c*", strings.Repeat("\x00", 5)},
		{"scp -f ~/deep/../conf", strings.Repeat("\x00", 5)},
		{"scp -t deep/../conf", "C0644 3 f\nnew\x00"},
		{"scp -t deep/../co?f", "C0644 3 f\nnew\x00"},
		{"scp -t deep/..", "C0644 3 f\nnew\x00"},
		{"scp -r -t deep/..", "D0755 0 n\nC0644 3 f\nnew\x00E\n"},
		{"scp -r -f deep/../../dir", strings.Repeat("\x00", 10)},
	} {
		ours, theirs := tree(t), tree(t)
		got, status := scpInProcess(t, ours, tc.cmd, tc.stream)
		want, wantStatus := shellSCP(t, theirs, tc.cmd, tc.stream)
		if got != want || status != wantStatus {
			t.Errorf("%s: sent %q, status %d; OpenSSH's scp %q, %d", tc.cmd, got, status, want, wantStatus)
		}
		for _, name := range []string{"conf", "dir/conf", "f", "dir/f", "n/f", "dir/n/f"} {
			a, _ := os.ReadFile(filepath.Join(ours, name))
			b, _ := os.ReadFile(filepath.Join(theirs, name))
			if string(a) != string(b) {
				t.Errorf("%s: ~/%s holds %q; with OpenSSH's scp %q", tc.cmd, name, a, b)
			}
		}
	}
}

// TestShellGlobMatchesShell: shellGlob's matches for bracket expressions
// and hidden names are /bin/sh's (in the C locale).
func TestShellGlobMatchesShell(t *testing.T) {
	root := t.TempDir()
	for _, n := range []string{"]", "a", "-", "b", "!", ".x", "c]", "d/s/y", "d/z", "e/s/.w", "a-b/s/v"} {
		os.MkdirAll(filepath.Dir(filepath.Join(root, n)), 0o755)
		writeFile(t, filepath.Join(root, n), "")
	}
	os.Symlink("d/s", filepath.Join(root, "l"))
	for _, pat := range []string{"[]a]", "[!]a]", "[-a]", "[a-]", "[!-]", "[!a-c]", "?]", "[[]", "*", "[.]x", ".x*", "[a", "[!]",
		"l/../*", "l/../?", "*/s/*", "*/s/.w*", "l/*", "[ad]*/s", "*/", "l/../z"} {
		cmd := exec.Command("/bin/sh", "-c", "printf '%s\\n' "+pat)
		cmd.Dir, cmd.Env = root, []string{"LC_ALL=C"}
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		var ours []string
		for _, m := range shellGlob(escapeGlob(root) + "/" + pat) {
			ours = append(ours, strings.TrimPrefix(m, root+"/"))
		}
		if len(ours) == 0 {
			ours = []string{pat}
		}
		if diff := cmp.Diff(strings.Fields(string(out)), ours); diff != "" {
			t.Errorf("%s (-sh +shellGlob):\n%s", pat, diff)
		}
	}
	// A pattern in the root directory's names.
	out, err := exec.Command("/bin/sh", "-c", "printf '%s\\n' /[st]?[pr]*").Output()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(strings.Fields(string(out)), shellGlob("/[st]?[pr]*")); diff != "" {
		t.Errorf("/[st]?[pr]* (-sh +shellGlob):\n%s", diff)
	}
}

// TestSCPSourceModeBits: the source sends the permission and set-id bits
// of a file or directory, not its sticky bit, as OpenSSH's scp -f does
// (FILEMODEMASK): a client with -p would set it.
func TestSCPSourceModeBits(t *testing.T) {
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "shared"), 0o755)
	syscall.Chmod(filepath.Join(root, "shared"), 0o1777)
	writeFile(t, filepath.Join(root, "f"), "F")
	syscall.Chmod(filepath.Join(root, "f"), 0o1644)
	cmd := "scp -r -f shared f"
	want := "D0777 0 shared\nE\nC0644 1 f\nF\x00"
	if got, status := scpInProcess(t, root, cmd, strings.Repeat("\x00", 20)); got != want || status != 0 {
		t.Errorf("%s sent %q, status %d; want %q, 0", cmd, got, status, want)
	}
	if sh, status := shellSCP(t, root, cmd, strings.Repeat("\x00", 20)); sh != want || status != 0 {
		t.Errorf("OpenSSH: %s sent %q, status %d; the test says %q, 0", cmd, sh, status, want)
	}
}

// TestSCPSinkFarFutureTimes: a T line's time after 2262 is set as it is,
// as OpenSSH's scp -t sets it, not wrapped through nanoseconds.
func TestSCPSinkFarFutureTimes(t *testing.T) {
	const year2300 int64 = 10413792000
	want := year2300 // on 32-bit devices too, with utimensat_time64 (Linux 5.1)
	root := t.TempDir()
	stream := "T10413792000 0 10413792000 0\nC0644 1 f\nx\x00T10413792000 0 10413792000 0\nD0755 0 d\nE\n"
	if answer, status := scpInProcess(t, root, "scp -r -p -t .", stream); answer != strings.Repeat("\x00", 7) || status != 0 {
		t.Fatalf("answered %q, status %d", answer, status)
	}
	for _, name := range []string{"f", "d"} {
		// Read with statx: on mips64, stat's times are unsigned 32-bit.
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, filepath.Join(root, name), 0, unix.STATX_MTIME, &stx); err != nil {
			t.Fatal(err)
		}
		mtime := time.Unix(stx.Mtime.Sec, 0)
		if got := mtime.Unix(); want != 0 && got != want || want == 0 && time.Since(mtime) > time.Hour {
			t.Errorf("%s: mtime %d; want %d (0: left at the time of writing)", name, got, want)
		}
	}
}

// TestSCPSourceTrailingSlash: scp -f strips a path's trailing slashes before
// it opens it, as OpenSSH's scp -f does: "f/" and "f//" send the file f,
// where stat(2) of "f/" says ENOTDIR, and a message names "d", not "d/". A
// pattern with a slash still matches directories only.
func TestSCPSourceTrailingSlash(t *testing.T) {
	withUmask(t, 0o022)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), "F")
	os.Mkdir(filepath.Join(root, "d"), 0o755)
	writeFile(t, filepath.Join(root, "d", "y"), "Y")
	os.Symlink("f", filepath.Join(root, "lf"))
	for _, tc := range []struct {
		cmd    string
		want   string
		status int
	}{
		{"scp -f f/", "C0644 1 f\nF\x00", 0},
		{"scp -f f//", "C0644 1 f\nF\x00", 0},
		{"scp -f ~/f/", "C0644 1 f\nF\x00", 0},
		{"scp -f lf/", "C0644 1 lf\nF\x00", 0},
		{"scp -r -f d/ f/", "D0755 0 d\nC0644 1 y\nY\x00E\nC0644 1 f\nF\x00", 0},
		{"scp -f d/", "\x01scp: d: not a regular file\n", 1},
		{"scp -f nosuch/", "\x01scp: nosuch: No such file or directory\n", 1},
		{"scp -f f/.", "\x01scp: f/.: Not a directory\n", 1},
		{"scp -f [f]/", "\x01scp: [f]: No such file or directory\n", 1},
		{"scp -f [d]/", "\x01scp: d: not a regular file\n", 1},
	} {
		got, status := scpInProcess(t, root, tc.cmd, strings.Repeat("\x00", 20))
		if got = strings.ReplaceAll(got, "ROOT/", ""); got != tc.want || status != tc.status {
			t.Errorf("%s sent %q, status %d; want %q, %d", tc.cmd, got, status, tc.want, tc.status)
		}
		sh, status := shellSCP(t, root, tc.cmd, strings.Repeat("\x00", 20))
		if sh = strings.ReplaceAll(sh, "ROOT/", ""); sh != tc.want || status != tc.status {
			t.Errorf("OpenSSH: %s sent %q, status %d; the test says %q, %d", tc.cmd, sh, status, tc.want, tc.status)
		}
	}
}

// TestOpenSSHSCPSourceTrailingSlash: OpenSSH's client gets a file named with
// a trailing slash ("scp -O -T host:f/ ."), as from OpenSSH's sshd. Without
// -T the client itself refuses the name f for the request f/ ("filename does
// not match request"), from OpenSSH's sshd too: the server sent the file.
func TestOpenSSHSCPSourceTrailingSlash(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	scp := needProgram(t, "scp")
	writeFile(t, filepath.Join(o.home("root"), "f"), "F")
	for _, remote := range []string{"f/", "f//"} {
		down := t.TempDir()
		_, errOut, code := o.run(t, nil, scp, append(o.opts(), "-P", o.port, "-O", "-T", "root@127.0.0.1:"+remote, down)...)
		if data, _ := os.ReadFile(filepath.Join(down, "f")); code != 0 || string(data) != "F" {
			t.Errorf("scp -O -T host:%s: exit %d, %q, fetched %q; want f's F", remote, code, errOut, data)
		}
	}
	_, errOut, code := o.run(t, nil, scp, append(o.opts(), "-P", o.port, "-O", "root@127.0.0.1:f/", t.TempDir())...)
	if want := "filename does not match request"; code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("scp -O host:f/: exit %d, %q; want 1 and the client's %q", code, errOut, want)
	}
}
