package sshd

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

var scpControlTests = []struct {
	line    string
	want    scpMsg
	wantErr bool
}{
	{line: "C0644 12 hello.txt", want: scpMsg{Type: 'C', Mode: 0o644, Size: 12, Name: "hello.txt"}},
	{line: "C4755 0 with space name", want: scpMsg{Type: 'C', Mode: 0o4755, Size: 0, Name: "with space name"}},
	{line: "D0755 0 dir", want: scpMsg{Type: 'D', Mode: 0o755, Name: "dir"}},
	{line: "E", want: scpMsg{Type: 'E'}},
	{line: "T1700000000 0 1700000001 0", want: scpMsg{Type: 'T', Mtime: 1700000000, Atime: 1700000001}},
	{line: "\x01scp: warning", want: scpMsg{Type: 1, Text: "scp: warning"}},
	{line: "\x02scp: fatal", want: scpMsg{Type: 2, Text: "scp: fatal"}},
	{line: "", wantErr: true},
	{line: "C0644 12 ../escape", wantErr: true},
	{line: "C0644 12 a/b", wantErr: true},
	{line: "C0644 12 ..", wantErr: true},
	{line: "D0755 0 .", wantErr: true},
	{line: "C0644 12 ", wantErr: true},
	{line: "C644 12 short-mode", wantErr: true},
	{line: "C0999 12 bad-octal", wantErr: true},
	{line: "C0644 -1 negative", wantErr: true},
	{line: "C0644 +5 plus", wantErr: true},
	{line: "C0644 99999999999999999999 huge", wantErr: true},
	{line: "Ex", wantErr: true},
	{line: "T1 0 2", wantErr: true},
	{line: "T1 5000000 2 0", wantErr: true},
	// OpenSSH's scp -t: "mtime.usec not delimited" past 999999, at either field.
	{line: "T1 999999 2 999999", want: scpMsg{Type: 'T', Mtime: 1, Atime: 2}},
	{line: "T1 1000000 2 0", wantErr: true},
	{line: "T1 0 2 1000000", wantErr: true},
	{line: "X", wantErr: true},
}

func TestParseSCPControl(t *testing.T) {
	for _, tc := range scpControlTests {
		got, err := parseSCPControl(tc.line)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseSCPControl(%q) error = %v, want error %v", tc.line, err, tc.wantErr)
			continue
		}
		if err == nil {
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseSCPControl(%q) mismatch (-want +got):\n%s", tc.line, diff)
			}
		}
	}
}

func FuzzSCPControl(f *testing.F) {
	for _, tc := range scpControlTests {
		f.Add(tc.line)
	}
	f.Fuzz(func(t *testing.T, line string) {
		m, err := parseSCPControl(line)
		if err != nil {
			return
		}
		if m.Type == 'C' || m.Type == 'D' {
			if m.Name == "" || m.Name == "." || m.Name == ".." || strings.ContainsAny(m.Name, "/\x00") {
				t.Fatalf("parseSCPControl(%q) accepted name %q", line, m.Name)
			}
			if m.Size < 0 || m.Mode > 0o7777 {
				t.Fatalf("parseSCPControl(%q) = %+v", line, m)
			}
		}
	})
}

func TestParseSCPCommand(t *testing.T) {
	for _, tc := range []struct {
		cmd     string
		want    scpOptions
		ok      bool
		wantErr bool
	}{
		{cmd: "scp -t /tmp/x", ok: true, want: scpOptions{Sink: true, Paths: []string{"/tmp/x"}, Patterns: []string{""}}},
		{cmd: "scp -t /tmp/x/", ok: true, want: scpOptions{Sink: true, Paths: []string{"/tmp/x/"}, Patterns: []string{""}}},
		{cmd: "scp -v -r -p -d -t -- 'my dir'", ok: true, want: scpOptions{Sink: true, Recursive: true, Preserve: true, TargetDir: true, Paths: []string{"my dir"}, Patterns: []string{""}}},
		{cmd: "/usr/bin/scp -prf a b", ok: true, want: scpOptions{Source: true, Recursive: true, Preserve: true, Paths: []string{"a", "b"}, Patterns: []string{"", ""}}},
		{cmd: "scp -f -- -dashfile", ok: true, want: scpOptions{Source: true, Paths: []string{"-dashfile"}, Patterns: []string{""}}},
		// Only unquoted metacharacters make a pattern (OpenSSH's client
		// sends the path as typed; the remote shell globs it).
		{cmd: `scp -f /d/\[ab\] '/d/*' "/d/?" /d/[ab] 'my file'*`, ok: true, want: scpOptions{
			Source:   true,
			Paths:    []string{"/d/[ab]", "/d/*", "/d/?", "/d/[ab]", "my file*"},
			Patterns: []string{"", "", "", "/d/[ab]", "my file*"},
		}},
		{cmd: `scp -f '*'*`, ok: true, want: scpOptions{Source: true, Paths: []string{"**"}, Patterns: []string{`\**`}}},
		{cmd: "scp -t 'unterminated", ok: true, wantErr: true},
		// Expansions the shell would run are refused, once the command is
		// known to be scp -t or -f; before that, the shell runs it.
		{cmd: "scp -f $(ls)", ok: true, wantErr: true},
		{cmd: "scp -t `ls`", ok: true, wantErr: true},
		{cmd: "$(which scp) -t x", ok: false},
		{cmd: "scp $(ls) -t x", ok: false},
		{cmd: "scp a b", ok: false},
		{cmd: "echo scp -t x", ok: false},
		{cmd: "scp -t", ok: true, wantErr: true},
		{cmd: "scp -t a b", ok: true, wantErr: true},
		{cmd: "scp -f", ok: true, wantErr: true},
		{cmd: "scp -tf x", ok: true, wantErr: true},
		{cmd: "scp -Z -t x", ok: true, wantErr: true},
	} {
		got, ok, err := parseSCPCommand(tc.cmd, nil)
		if ok != tc.ok || (err != nil) != tc.wantErr {
			t.Errorf("parseSCPCommand(%q) = ok %v, err %v; want ok %v, error %v", tc.cmd, ok, err, tc.ok, tc.wantErr)
			continue
		}
		if ok && err == nil {
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseSCPCommand(%q) mismatch (-want +got):\n%s", tc.cmd, diff)
			}
		}
	}
}

// testShellVars is what testExpand knows: variables, and homes for ~ and
// ~user. Their values have blanks, glob and quote characters.
var testShellVars = map[string]string{
	"HOME": "/home/op", "EMPTY": "", "SP": " a  b ", "GLOB": "*.[ch]", "BS": `a\b'"`,
	"~": "/home/op", "~alice": "/home/al ice*",
}

func testExpand(name string) (string, bool) {
	v, ok := testShellVars[name]
	return v, ok
}

// splitShellWordsTests are split with testExpand.
var splitShellWordsTests = []struct {
	in      string
	want    []shellWord
	wantErr bool
}{
	{in: " a  b\tc\n", want: []shellWord{{Text: "a", Pattern: "a"}, {Text: "b", Pattern: "b"}, {Text: "c", Pattern: "c"}}},
	{in: `'it''s' "a\"b" 'c\d'`, want: []shellWord{{Text: "its", Pattern: "its"}, {Text: `a"b`, Pattern: `a"b`}, {Text: `c\d`, Pattern: `c\\d`}}},
	{in: `"\$x\y\\"`, want: []shellWord{{Text: `$x\y\`, Pattern: `$x\\y\\`}}},
	{in: "a\\\nb \\\n", want: []shellWord{{Text: "ab", Pattern: "ab"}}},
	{in: `'' ""`, want: []shellWord{{}, {}}},
	{in: `x*'*'\?"[" [ab]`, want: []shellWord{{Text: "x**?[", Pattern: `x*\*\?\[`, Glob: true}, {Text: "[ab]", Pattern: "[ab]", Glob: true}}},
	{in: `'[ab]' \[ab\] "*"`, want: []shellWord{{Text: "[ab]", Pattern: `\[ab\]`}, {Text: "[ab]", Pattern: `\[ab\]`}, {Text: "*", Pattern: `\*`}}},
	{in: "'\xff*'é*", want: []shellWord{{Text: "\xff*é*", Pattern: "\xff\\*é*", Glob: true}}}, // bytes, not runes
	{in: `x\`, wantErr: true},
	{in: `'x`, wantErr: true},
	{in: `"x\"`, wantErr: true},
	// Expansions: unquoted values are split at blanks and glob.
	{in: `$HOME/x ${HOME}y "$HOME"`, want: []shellWord{{Text: "/home/op/x", Pattern: "/home/op/x"}, {Text: "/home/opy", Pattern: "/home/opy"}, {Text: "/home/op", Pattern: "/home/op"}}},
	{in: `x$SP"$SP"$SP`, want: []shellWord{{Text: "x", Pattern: "x"}, {Text: "a", Pattern: "a"}, {Text: "b", Pattern: "b"}, {Text: " a  b ", Pattern: " a  b "}, {Text: "a", Pattern: "a"}, {Text: "b", Pattern: "b"}}},
	{in: `$EMPTY "$EMPTY" a$EMPTY`, want: []shellWord{{}, {Text: "a", Pattern: "a"}}},
	// What the login's shell might set but scp here cannot know is refused, not "".
	{in: `$UNSET`, wantErr: true},
	{in: `"${UNSET}"`, wantErr: true},
	{in: `$'x'`, wantErr: true},
	{in: `$"x"`, wantErr: true},
	{in: `"a$"`, want: []shellWord{{Text: "a$", Pattern: "a$"}}},
	{in: `~+/x`, wantErr: true},
	{in: `~-`, wantErr: true},
	{in: `d/$GLOB "d/$GLOB" $BS`, want: []shellWord{{Text: "d/*.[ch]", Pattern: "d/*.[ch]", Glob: true}, {Text: "d/*.[ch]", Pattern: `d/\*.\[ch\]`}, {Text: `a\b'"`, Pattern: `a\\b'"`}}},
	{in: `'$HOME' \$HOME "\$HOME" $ a$ "$" $% $/x`, want: []shellWord{{Text: "$HOME", Pattern: "$HOME"}, {Text: "$HOME", Pattern: "$HOME"}, {Text: "$HOME", Pattern: "$HOME"}, {Text: "$", Pattern: "$"}, {Text: "a$", Pattern: "a$"}, {Text: "$", Pattern: "$"}, {Text: "$%", Pattern: "$%"}, {Text: "$/x", Pattern: "$/x"}}},
	// A leading unquoted ~ or ~user, up to the first /.
	{in: `~ ~/x ~alice/y* ~nobody/x a~ '~'/x ~"alice" \~ ~$HOME`, want: []shellWord{
		{Text: "/home/op", Pattern: "/home/op"}, {Text: "/home/op/x", Pattern: "/home/op/x"},
		{Text: "/home/al ice*/y*", Pattern: `/home/al ice\*/y*`, Glob: true}, {Text: "~nobody/x", Pattern: "~nobody/x"},
		{Text: "a~", Pattern: "a~"}, {Text: "~/x", Pattern: "~/x"}, {Text: "~alice", Pattern: "~alice"}, {Text: "~", Pattern: "~"},
		{Text: "~/home/op", Pattern: "~/home/op"},
	}},
	// The shell's other expansions are refused.
	{in: `$(id)`, wantErr: true},
	{in: `"$(id)"`, wantErr: true},
	{in: "`id`", wantErr: true},
	{in: "\"`id`\"", wantErr: true},
	{in: `$((1+1))`, wantErr: true},
	{in: `${HOME:-x}`, wantErr: true},
	{in: `${#HOME}`, wantErr: true},
	{in: `${}`, wantErr: true},
	{in: `${HOME`, wantErr: true},
	{in: `$1`, wantErr: true},
	{in: `"$?"`, wantErr: true},
	{in: `$$`, wantErr: true},
}

func TestSplitShellWords(t *testing.T) {
	for _, tc := range splitShellWordsTests {
		got, err := splitShellWords(tc.in, testExpand)
		if (err != nil) != tc.wantErr {
			t.Errorf("splitShellWords(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got); err == nil && diff != "" {
			t.Errorf("splitShellWords(%q) mismatch (-want +got):\n%s", tc.in, diff)
		}
	}
}

// TestSplitShellWordsMatchesShell: the words /bin/sh makes of the table's
// command lines, run with testShellVars (in an empty directory, so that
// nothing globs), are splitShellWords' texts. ~user is looked up in the
// system's passwd file, by both.
func TestSplitShellWordsMatchesShell(t *testing.T) {
	env := []string{"PATH=" + os.Getenv("PATH")}
	for name, v := range testShellVars {
		if !strings.HasPrefix(name, "~") {
			env = append(env, name+"="+v)
		}
	}
	expand := func(name string) (string, bool) {
		if u, ok := strings.CutPrefix(name, "~"); ok && u != "" {
			usr, err := user.Lookup(u)
			if err != nil {
				return "", false
			}
			return usr.HomeDir, true
		}
		return testExpand(name)
	}
	for _, tc := range append(splitShellWordsTests, struct {
		in      string
		want    []shellWord
		wantErr bool
	}{in: `~root/x ~root`}) {
		got, err := splitShellWords(tc.in, expand)
		if err != nil {
			continue // syntax errors, or expansions the shell would run
		}
		cmd := exec.Command("/bin/sh", "-c", `printf '%s\0' `+tc.in)
		cmd.Env, cmd.Dir = env, t.TempDir()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("sh -c printf %s: %v", tc.in, err)
		}
		want := strings.Split(string(out), "\x00")
		want = want[:len(want)-1]
		var texts []string
		for _, w := range got {
			texts = append(texts, w.Text)
		}
		if len(texts) == 0 {
			texts = []string{""} // printf with no arguments prints its format once
		}
		if diff := cmp.Diff(want, texts); diff != "" {
			t.Errorf("words of %q (-sh +splitShellWords):\n%s", tc.in, diff)
		}
	}
}

// FuzzSplitShellWords: a word without unquoted metacharacters is a pattern
// that matches exactly its own text, and a word's text in single quotes is
// that one word, unexpanded.
func FuzzSplitShellWords(f *testing.F) {
	for _, tc := range splitShellWordsTests {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		words, err := splitShellWords(in, testExpand)
		if err != nil {
			return
		}
		for _, w := range words {
			if !w.Glob {
				if ok, err := filepath.Match(w.Pattern, w.Text); !ok || err != nil {
					t.Fatalf("splitShellWords(%q): pattern %q does not match its text %q: %v", in, w.Pattern, w.Text, err)
				}
			}
			q := "'" + strings.ReplaceAll(w.Text, "'", `'\''`) + "'"
			if again, err := splitShellWords(q, testExpand); err != nil || len(again) != 1 || again[0].Text != w.Text || again[0].Glob {
				t.Fatalf("splitShellWords(%q): word %q quoted as %s splits into %+v, %v", in, w.Text, q, again, err)
			}
		}
	})
}

// FuzzShellGlob: what a client's pattern expands to (scp -f, the sink's
// target) is only names in the directory it names, and a hidden name only for a
// pattern that starts with a "." itself, as the shell expands it.
func FuzzShellGlob(f *testing.F) {
	for _, p := range []string{"", "*", "?", "[!a]", "[]a]", "[a-]", ".*", "[.]x", "\\*", "[!", "a*[", "**/*", "[[:alpha:]]", "[![:punct:]-]*", "[[:foo:]]", "[[=a=]]"} {
		f.Add(p)
	}
	dir := f.TempDir()
	for _, n := range []string{"a", "b", ".h", "]", "-", "!x", "sub/c"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o755)
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	f.Fuzz(func(t *testing.T, pat string) {
		// ".." (also written escaped, as .\.) leaves the directory as typed.
		if strings.ContainsAny(pat, "\x00") || strings.Contains(unescapeGlob(pat), "..") || strings.HasPrefix(pat, "/") {
			return
		}
		for _, m := range shellGlob(escapeGlob(dir) + "/" + pat) {
			rel, err := filepath.Rel(dir, m)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Fatalf("shellGlob(%q) gave %q, outside %s", pat, m, dir)
			}
			if _, err := os.Lstat(m); err != nil {
				t.Fatalf("shellGlob(%q) gave %q, which does not exist", pat, m)
			}
			pats, names := strings.Split(pat, "/"), strings.Split(rel, "/")
			for i, n := range names {
				if i < len(pats) && n != "." && strings.HasPrefix(n, ".") && !strings.HasPrefix(pats[i], ".") && !strings.HasPrefix(pats[i], "\\.") {
					t.Fatalf("shellGlob(%q) gave the hidden %q", pat, m)
				}
			}
		}
	})
}

// scpStream is a sink input: a D with a file inside and a file at the top.
func scpStream(mtime int64) string {
	return fmt.Sprintf("T%d 0 %d 0\nD0750 0 tree\nT%d 0 %d 0\nC0604 5 inner.txt\nhello\x00E\nC0755 3 top.sh\nabc\x00", mtime, mtime, mtime, mtime)
}

// FuzzSCPSink feeds arbitrary protocol streams to the sink: it must never
// write outside its target directory or panic.
func FuzzSCPSink(f *testing.F) {
	f.Add(scpStream(1700000000))
	f.Add("C0644 3 a\nabc\x00")
	f.Add("D0755 0 d\nD0755 0 e\nC0644 1 f\nx\x00E\nE\n")
	f.Add("C0644 3 ../a\nabc\x00")
	f.Add("E\n")
	f.Add("\x01warn\nC0644 0 z\n\x00")
	f.Fuzz(func(t *testing.T, stream string) {
		root := t.TempDir()
		target := filepath.Join(root, "target")
		os.Mkdir(target, 0o755)
		var out bytes.Buffer
		c := &scp{r: bufio.NewReader(strings.NewReader(stream)), w: &out, opts: scpOptions{Sink: true, Recursive: true, Preserve: true}}
		c.sink(target)
		entries, _ := os.ReadDir(root)
		if len(entries) != 1 || entries[0].Name() != "target" {
			t.Fatalf("sink wrote outside its target: %v", entries)
		}
	})
}

func TestSCPSinkProtocol(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	dest := filepath.Join(e.home("root"), "dest")
	os.Mkdir(dest, 0o755)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC).Unix()

	s := openRaw(t, c)
	if ok, err := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Cmd string }{"scp -r -p -t dest"})); !ok || err != nil {
		t.Fatalf("exec scp -t = %v, %v", ok, err)
	}
	r := bufio.NewReader(s.ch)
	expectAck := func(what string) {
		t.Helper()
		b, err := r.ReadByte()
		if err != nil || b != 0 {
			line, _ := r.ReadString('\n')
			t.Fatalf("after %s: answer %q%s, %v; want \\0", what, b, line, err)
		}
	}
	expectAck("start")
	steps := strings.SplitAfter(scpStream(mtime), "\n")
	// Write the stream piecewise, checking each answer.
	for _, step := range []string{steps[0], steps[1], steps[2], steps[3]} {
		io.WriteString(s.ch, step)
		expectAck(strings.TrimSpace(step))
	}
	io.WriteString(s.ch, "hello\x00")
	expectAck("file data")
	io.WriteString(s.ch, "E\n")
	expectAck("E")
	fmt.Fprintf(s.ch, "T%d 0 %d 0\n", mtime, mtime)
	expectAck("T for top.sh")
	io.WriteString(s.ch, "C0755 3 top.sh\n")
	expectAck("C top.sh")
	io.WriteString(s.ch, "abc\x00")
	expectAck("top.sh data")
	// An unsafe name is refused fatally.
	io.WriteString(s.ch, "C0644 1 ../evil\n")
	if b, _ := r.ReadByte(); b != 2 {
		t.Errorf("answer to ../evil = %d, want 2 (fatal)", b)
	}
	if st := s.wait(t); st != "exit-status 1" {
		t.Errorf("scp -t ended with %s, want exit-status 1 after the fatal error", st)
	}
	for _, f := range []struct {
		path string
		data string
		mode os.FileMode
	}{
		{"dest/tree/inner.txt", "hello", 0o604},
		{"dest/top.sh", "abc", 0o755},
		{"dest/tree", "", os.ModeDir | 0o750},
	} {
		p := filepath.Join(e.home("root"), f.path)
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		if fi.Mode() != f.mode {
			t.Errorf("%s mode = %v, want %v", f.path, fi.Mode(), f.mode)
		}
		if fi.ModTime().Unix() != mtime {
			t.Errorf("%s mtime = %v, want %v", f.path, fi.ModTime().Unix(), mtime)
		}
		if !fi.IsDir() {
			if got, _ := os.ReadFile(p); string(got) != f.data {
				t.Errorf("%s = %q, want %q", f.path, got, f.data)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(e.home("root"), "evil")); err == nil {
		t.Error("../evil was written")
	}
}

// TestSCPSinkTargetMustBeDir: with -d (several files sent) the target
// must be a directory, refused in OpenSSH's words (checked with its scp -t).
func TestSCPSinkTargetMustBeDir(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	file := filepath.Join(e.home("root"), "file")
	writeFile(t, file, "x")
	for _, tc := range []struct{ target, want string }{
		{"/nonexistent/dir", "\x02scp: /nonexistent/dir: No such file or directory\n"},
		{file, "\x02scp: " + file + ": Not a directory\n"},
		{file + "/", "\x02scp: " + file + "/: Not a directory\n"},
	} {
		s := openRaw(t, c)
		if ok, _ := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Cmd string }{"scp -d -t " + tc.target})); !ok {
			t.Fatal("exec refused")
		}
		line, _ := bufio.NewReader(s.ch).ReadString('\n')
		if line != tc.want {
			t.Errorf("scp -d -t %s: answer = %q, want %q", tc.target, line, tc.want)
		}
		if st := s.wait(t); st != "exit-status 1" {
			t.Errorf("scp -d -t %s: ended with %s, want exit-status 1", tc.target, st)
		}
	}
}

func TestSCPSourceProtocol(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	home := e.home("root")
	os.MkdirAll(filepath.Join(home, "src", "sub"), 0o751)
	os.Chmod(filepath.Join(home, "src"), 0o710)
	writeFile(t, filepath.Join(home, "src", "sub", "b.txt"), "bee")
	os.Chmod(filepath.Join(home, "src", "sub", "b.txt"), 0o640)
	mt := time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(home, "src", "sub", "b.txt"), mt, mt)

	s := openRaw(t, c)
	if ok, _ := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Cmd string }{"scp -r -p -f src missing"})); !ok {
		t.Fatal("exec refused")
	}
	r := bufio.NewReader(s.ch)
	s.ch.Write([]byte{0})
	var got []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		got = append(got, strings.TrimSuffix(line, "\n"))
		if strings.HasPrefix(line, "C") {
			m, _ := parseSCPControl(strings.TrimSuffix(line, "\n"))
			s.ch.Write([]byte{0})
			data := make([]byte, m.Size+1)
			io.ReadFull(r, data)
			got = append(got, "data:"+string(data))
		}
		if strings.HasPrefix(line, "\x01") {
			continue // warnings are not answered
		}
		s.ch.Write([]byte{0})
	}
	st := s.wait(t)
	// Directory times are not compared: reading the tree changed atime.
	if len(got) < 9 {
		t.Fatalf("source sent %q", got)
	}
	want := []string{"D0710 0 src", "D0751 0 sub", fmt.Sprintf("T%d 0 %d 0", mt.Unix(), mt.Unix()), "C0640 3 b.txt", "data:bee\x00", "E", "E"}
	var filtered []string
	for _, l := range got {
		if strings.HasPrefix(l, "T") && !strings.HasPrefix(l, fmt.Sprintf("T%d", mt.Unix())) {
			continue
		}
		filtered = append(filtered, l)
	}
	if len(filtered) != len(want)+1 {
		t.Fatalf("source sent %q, want %q and a warning", filtered, want)
	}
	if diff := cmp.Diff(want, filtered[:len(want)]); diff != "" {
		t.Errorf("source stream mismatch (-want +got):\n%s", diff)
	}
	if w := filtered[len(want)]; !strings.HasPrefix(w, "\x01scp: ") || !strings.Contains(w, "missing") {
		t.Errorf("warning = %q, want one about missing", w)
	}
	if st != "exit-status 1" {
		t.Errorf("scp -f ended with %s, want exit-status 1 (missing file)", st)
	}
}

// TestSCPExpandsSessionEnv: scp's paths expand the variables that a command
// run through the shell would see, the session's own and the client's.
func TestSCPExpandsSessionEnv(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.AcceptEnv = []string{"LC_*"} })
	os.Mkdir(filepath.Join(e.home("root"), "sub"), 0o755)
	p := filepath.Join(e.home("root"), "sub", "root.txt")
	writeFile(t, p, "mine")
	os.Chmod(p, 0o644)
	s := openSession(t, e.login("root"))
	if err := s.Setenv("LC_DIR", "sub"); err != nil {
		t.Fatal(err)
	}
	s.Stdin = strings.NewReader("\x00\x00\x00")
	out, err := s.Output("scp -f $LC_DIR/${USER}.txt")
	if want := "C0644 4 root.txt\nmine\x00"; string(out) != want || err != nil {
		t.Errorf("scp -f $LC_DIR/${USER}.txt sent %q, %v; want %q", out, err, want)
	}
}

// TestSCPForOtherUser: scp -t for a user other than the server's runs the
// system scp as that user (in-process scp would write as root).
func TestSCPForOtherUser(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("scp"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("scp not found (install openssh-client)")
		}
		t.Skip("scp not found")
	}
	if !systemKnowsAlice(t) {
		return
	}
	e := newEnv(t, nil)
	c := e.login("alice")
	s := openRaw(t, c)
	if ok, _ := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Cmd string }{"scp -t ."})); !ok {
		t.Fatal("exec scp -t refused")
	}
	r := bufio.NewReader(s.ch)
	if b, err := r.ReadByte(); err != nil || b != 0 {
		t.Fatalf("scp start answer %d, %v", b, err)
	}
	io.WriteString(s.ch, "C0644 3 up.txt\n")
	if b, _ := r.ReadByte(); b != 0 {
		t.Fatalf("answer to C = %d", b)
	}
	io.WriteString(s.ch, "abc\x00")
	if b, _ := r.ReadByte(); b != 0 {
		t.Fatalf("answer to data = %d", b)
	}
	if st := s.wait(t); st != "exit-status 0" {
		t.Errorf("scp ended with %s", st)
	}
	fi, err := os.Stat(filepath.Join(e.home("alice"), "up.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 {
		t.Errorf("file written by scp for alice owned by uid %d, want 1000", st.Uid)
	}
	if ev := e.eventsOf(EventSessionStart); len(ev) != 1 || ev[0].Kind != "exec" {
		t.Errorf("session start = %+v, want an exec (the system scp), not in-process", ev)
	}
}

// TestSCPRefusedCommandLineNotLogged: a command line scp refuses is explained
// to the client, which quotes part of it, and logged without it: a command's
// arguments are never logged (commandName).
func TestSCPRefusedCommandLineNotLogged(t *testing.T) {
	e := newEnv(t, nil)
	s := openSession(t, e.login("root"))
	s.Stdin = strings.NewReader("\x00")
	out, err := s.Output("scp -f ${BACKUP_KEY:-Hunter2}/x")
	if err == nil || !strings.Contains(string(out), "not supported") {
		t.Errorf("scp -f with ${X:-default}: sent %q, %v; want a fatal error saying it is not supported", out, err)
	}
	if len(e.logs.logged("scp command line refused")) == 0 {
		t.Error(`no "scp command line refused" log line`)
	}
	if l := e.logs.logged("Hunter2"); len(l) != 0 {
		t.Errorf("the refused command line was logged: %q", l)
	}
}

// TestSCPSinkFIFOWithoutReader: "scp -O f host:fifo" onto a FIFO that no
// program reads must not block the in-process scp in open(2) for ever: the
// session, its MaxSessions slot and the connection would outlive the
// client, which gave up, until the server restarts.
func TestSCPSinkFIFOWithoutReader(t *testing.T) {
	e := newEnv(t, nil)
	c, err := e.dial("root", gossh.PublicKeys(e.key))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fifo := filepath.Join(e.home("root"), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openRaw(t, c)
	if ok, err := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Cmd string }{"scp -t fifo"})); !ok || err != nil {
		t.Fatalf("exec scp -t = %v, %v", ok, err)
	}
	r := bufio.NewReader(s.ch)
	if b, err := r.ReadByte(); b != 0 || err != nil {
		t.Fatalf("start answer %d, %v", b, err)
	}
	io.WriteString(s.ch, "C0644 3 fifo\n")
	// Until scp has taken the C line: it answers it (open(2) failed), or it
	// is in open(2) of the FIFO. A fixed 200 ms could be too short on a slow
	// machine: scp then read the client's close instead, and the test passed
	// whether or not the open blocks.
	answered := make(chan struct{})
	go func() { r.ReadByte(); close(answered) }()
	taken := func() bool {
		select {
		case <-answered:
			return true
		default:
			return blockedIn(" [syscall", "os.OpenFile(", "sshd.(*scp).sinkFile(")
		}
	}
	for deadline := time.Now().Add(10 * time.Second); !taken(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("scp -t neither answered the C line nor opened the FIFO 10 s on")
		}
	}
	c.Close() // the client gives up
	deadline := time.Now().Add(5 * time.Second)
	for len(e.eventsOf(EventSessionEnd)) == 0 {
		if time.Now().After(deadline) {
			// Let the server's clean-up end: a reader frees the open.
			go func() {
				if f, err := os.OpenFile(fifo, os.O_RDONLY, 0); err == nil {
					io.Copy(io.Discard, f)
					f.Close()
				}
			}()
			t.Fatal("scp -t still blocked on the FIFO 5 s after the client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Ended by the client's leaving, not abandoned after abandonDelay (5 s)
	// blocked in open(2), which ends the session too.
	if l := e.logs.logged("scp: a read or write still blocks"); len(l) != 0 {
		t.Errorf("scp -t blocked on the FIFO and was abandoned: %q", l)
	}
}

// FuzzParseSCPCommand parses a client's exec line as the session does
// before it serves scp in-process: a line it serves names exactly one of -t
// and -f with the paths they need, and the same options with each path
// quoted back parse to the same paths.
func FuzzParseSCPCommand(f *testing.F) {
	for _, s := range []string{
		"scp -t /tmp/x", "scp -v -r -p -d -t -- 'my dir'", "/usr/bin/scp -prf a b", "scp -f -- -dashfile",
		`scp -f /d/\[ab\] '/d/*' "/d/?" /d/[ab] 'my file'*`, "scp -f $(ls)", "scp -t 'unterminated",
		"scp -f ~/x $HOME/y", "scp -tf x", "scp -Z -t x", "scp -t x; rm -rf /", "scp -f a\\\nb",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		o, ok, err := parseSCPCommand(cmdline, testExpand)
		if !ok {
			if o.Sink || o.Source {
				if _, err := splitShellWords(cmdline, testExpand); err == nil {
					t.Fatalf("parseSCPCommand(%q) not scp, with %+v", cmdline, o)
				}
			}
			return
		}
		if err != nil {
			return
		}
		if o.Sink == o.Source || len(o.Paths) != len(o.Patterns) || o.Sink && len(o.Paths) != 1 || len(o.Paths) == 0 {
			t.Fatalf("parseSCPCommand(%q) = %+v", cmdline, o)
		}
		again := "scp -"
		if o.Sink {
			again += "t"
		} else {
			again += "f"
		}
		again += " --"
		for _, p := range o.Paths {
			again += " '" + strings.ReplaceAll(p, "'", `'\''`) + "'"
		}
		o2, ok, err := parseSCPCommand(again, testExpand)
		if !ok || err != nil || !slices.Equal(o2.Paths, o.Paths) {
			t.Fatalf("parseSCPCommand(%q) paths %q; quoted as %q they parse to %q, %v, %v", cmdline, o.Paths, again, o2.Paths, ok, err)
		}
	})
}

// TestSCPSinkWriteErrorReported: a file that cannot be written in full (the
// disk fills up) is reported to the source with the error, as OpenSSH's
// scp -t does, and the transfer exits 1: the operator must not be told that
// a truncated file arrived.
func TestSCPSinkWriteErrorReported(t *testing.T) {
	dir := smallDisk(t) // 1 MiB
	const size = 2 << 20
	stream := "C0644 2097152 big\n" + strings.Repeat("x", size) + "\x00"
	got, status := scpInProcess(t, dir, "scp -t "+dir, stream)
	if !strings.Contains(got, "\x01scp: ") || !strings.Contains(got, "big: No space left on device\n") || status != 1 {
		t.Errorf("scp -t of 2 MiB onto 1 MiB: answered %q, exit %d; want a warning naming ENOSPC and exit 1", got, status)
	}
	// The same transfer where it fits is answered with OKs only.
	roomy := t.TempDir()
	got, status = scpInProcess(t, roomy, "scp -t "+roomy, stream)
	if got != "\x00\x00\x00" || status != 0 {
		t.Errorf("scp -t of 2 MiB: answered %q, exit %d; want three OKs and exit 0", got, status)
	}
	if fi, err := os.Stat(filepath.Join(roomy, "big")); err != nil || fi.Size() != size {
		t.Errorf("the file that fits: %v, %v", fi, err)
	}
}

// TestSCPSinkTruncatedStream: a source that goes away in the middle of a file
// ends the transfer with a non-zero exit, not as if the file had arrived.
func TestSCPSinkTruncatedStream(t *testing.T) {
	dir := t.TempDir()
	_, status := scpInProcess(t, dir, "scp -t "+dir, "C0644 10 f\nabc")
	if status == 0 {
		t.Errorf("scp -t of 3 of 10 bytes: exit 0, want non-zero")
	}
}

// TestSCPSinkStreamEndsInsideDirectory: a recursive upload whose stream
// ends before the E line of a directory, at any depth, exits non-zero, as one
// that ends inside a file does: the upload is incomplete. (OpenSSH's scp -t
// exits 0 there; the difference is porthole's.)
func TestSCPSinkStreamEndsInsideDirectory(t *testing.T) {
	for _, stream := range []string{"D0755 0 d\n", "D0755 0 d\nC0644 1 f\nx\x00", "D0755 0 d\nD0755 0 e\n"} {
		dir := t.TempDir()
		if _, status := scpInProcess(t, dir, "scp -r -t "+dir, stream); status == 0 {
			t.Errorf("scp -r -t of %q: exit 0, want non-zero", stream)
		}
	}
}

// TestSCPSinkControlLineLimit: a control line of up to maxSCPLine bytes is
// read; one byte more ends the upload (non-zero exit, nothing written), so a
// peer cannot make the sink hold an unbounded line. The lines are T lines
// whose first number is padded with zeros to the length.
func TestSCPSinkControlLineLimit(t *testing.T) {
	tLine := func(n int) string {
		const rest = "1 0 1 0"
		return "T" + strings.Repeat("0", n-len("T")-len(rest)) + rest + "\n"
	}
	for _, tc := range []struct {
		n    int
		want bool // the file arrives
	}{{maxSCPLine, true}, {maxSCPLine + 1, false}} {
		dir := t.TempDir()
		_, status := scpInProcess(t, dir, "scp -t "+dir, tLine(tc.n)+"C0644 1 f\nx\x00")
		_, err := os.Stat(filepath.Join(dir, "f"))
		if got := status == 0 && err == nil; got != tc.want {
			t.Errorf("control line of %d bytes: exit %d, file written: %v; want the file written %v", tc.n, status, err == nil, tc.want)
		}
	}
}

// TestSCPSinkCutShortKeepsTarget: an upload onto an existing file that ends
// midway (a dropped tunnel, ^C) leaves the file as OpenSSH's scp -t does:
// opened without O_TRUNC, written over in whole 16 KiB buffers, and cut to
// the new size only once the whole file has arrived. It was truncated at
// open, before any data came. The same streams go through OpenSSH's scp -t
// where it is installed.
func TestSCPSinkCutShortKeepsTarget(t *testing.T) {
	old := strings.Repeat("old\n", 5000) // 20,000 bytes
	n := strings.Repeat("N", 20000)
	cases := []struct{ name, stream, want string }{
		{"nothing of the data", "C0644 40000 conf\n", old},
		{"less than a buffer", "C0644 40000 conf\nNEW", old},
		{"a buffer and a part", "C0644 40000 conf\n" + n, n[:16384] + old[16384:]},
		{"a whole shorter file", "C0644 3 conf\nnew\x00", "new"},
	}
	run := func(t *testing.T, sink func(dir, stream string)) {
		for _, tc := range cases {
			dir := t.TempDir()
			p := filepath.Join(dir, "conf")
			writeFile(t, p, old)
			sink(p, tc.stream)
			if got, _ := os.ReadFile(p); string(got) != tc.want {
				t.Errorf("%s: the target holds %d bytes (%.8q...), want %d (%.8q...)", tc.name, len(got), got, len(tc.want), tc.want)
			}
		}
	}
	run(t, func(p, stream string) { scpInProcess(t, filepath.Dir(p), "scp -t "+p, stream) })
	t.Run("OpenSSH", func(t *testing.T) {
		bin := needProgram(t, "scp")
		run(t, func(p, stream string) {
			cmd := exec.Command(bin, "-t", p)
			cmd.Stdin = strings.NewReader(stream)
			outputAndStatus(t, cmd)
		})
	})
}

// TestSCPDroppedUploadKeepsAuthorizedKeys: replacing authorized_keys with
// legacy scp (scp -O, Dropbear, WinSCP) over a connection that drops after
// the C line left it empty, and every later key login was refused.
func TestSCPDroppedUploadKeepsAuthorizedKeys(t *testing.T) {
	e := newEnv(t, nil)
	c, err := e.dial("root", gossh.PublicKeys(e.key))
	if err != nil {
		t.Fatal(err)
	}
	s := openRaw(t, c)
	target := filepath.Join(e.home("root"), ".ssh", "authorized_keys")
	if ok, err := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Cmd string }{"scp -t " + target})); !ok || err != nil {
		t.Fatalf("exec scp -t = %v, %v", ok, err)
	}
	r := bufio.NewReader(s.ch)
	if b, err := r.ReadByte(); b != 0 || err != nil {
		t.Fatalf("start answer %d, %v", b, err)
	}
	io.WriteString(s.ch, "C0600 4096 authorized_keys\n")
	// The answer comes once the target is open.
	if b, err := r.ReadByte(); b != 0 || err != nil {
		t.Fatalf("answer to the C line %d, %v", b, err)
	}
	c.Close() // the connection drops before any data arrives
	c2, err := e.dial("root", gossh.PublicKeys(e.key))
	if err != nil {
		fi, _ := os.Stat(target)
		t.Fatalf("after an scp upload cut short, authorized_keys holds %d bytes and the next login fails: %v", fi.Size(), err)
	}
	c2.Close()
}

// TestSCPSourceTimesBeyondStat: scp -p -f sends a file's times as they are,
// also where the device's stat(2) cannot hold them: on 32-bit arm, mips and
// 386, stat64's times are 32-bit signed (a file of 2040 wraps to 1904, sent
// as 0: the copy is dated 1970); on mips64, the kernel's struct stat has
// unsigned 32-bit times (a file of 1969 is sent as 2106, one of 2108 as
// 1971). OpenSSH's libc (musl, glibc) asks statx(2) there. The times are set
// with the host's touch, which a test binary under emulation also runs.
func TestSCPSourceTimesBeyondStat(t *testing.T) {
	touch := needProgram(t, "touch")
	root := t.TempDir()
	for name, sec := range map[string]int64{"before1970": -100, "in2040": 2208988800, "in2108": 4354819200} {
		p := filepath.Join(root, name)
		writeFile(t, p, "x")
		if out, err := exec.Command(touch, "-d", fmt.Sprintf("@%d", sec), p).CombinedOutput(); err != nil {
			t.Fatalf("touch: %v %s", err, out)
		}
		want := fmt.Sprintf("T%d 0 %d 0\nC0644 1 %s\n", max(sec, 0), max(sec, 0), name)
		got, status := scpInProcess(t, root, "scp -p -f "+name, strings.Repeat("\x00", 10))
		if !strings.HasPrefix(got, want) || status != 0 {
			t.Errorf("scp -p -f %s sent %q, status %d; want it to start %q", name, got, status, want)
		}
	}
}

// TestSCPSourceDirectoryAtime: scp -r -p -f sends the access time a
// directory had before it was listed, as OpenSSH's scp -f does (source()
// takes it with fstat(2) before rsource() reads the directory). It sent the
// one its own listing had set (relatime updates an access time not newer
// than the modification time, or a day old), so every directory of a tree
// downloaded with -p was dated the download.
func TestSCPSourceDirectoryAtime(t *testing.T) {
	root := t.TempDir()
	d, f := filepath.Join(root, "d"), filepath.Join(root, "d", "f")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, f, "x")
	old := time.Unix(1600000000, 0)
	for _, p := range []string{f, d} {
		os.Chmod(p, 0o755)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	got, status := scpInProcess(t, root, "scp -r -p -f d", strings.Repeat("\x00", 10))
	var st syscall.Stat_t
	if err := syscall.Stat(d, &st); err != nil || int64(st.Atim.Sec) == old.Unix() {
		t.Skip("listing a directory leaves its access time here (noatime?): nothing to tell apart")
	}
	want := "T1600000000 0 1600000000 0\nD0755 0 d\nT1600000000 0 1600000000 0\nC0755 1 f\nx\x00E\n"
	if got != want || status != 0 {
		t.Errorf("scp -r -p -f d sent %q, status %d; want %q, 0", got, status, want)
	}
}

// TestSCPSourceFIFOSwappedIn: scp -f looked at a path with stat(2) and then
// opened it, so a FIFO renamed onto the path in between held the session in
// open(2) until some writer came. What is sent is now what was opened
// (O_NONBLOCK, then fstat): each of the many tries sends the file, or warns
// that it is missing or not a regular file, and the run ends.
func TestSCPSourceFIFOSwappedIn(t *testing.T) {
	root := t.TempDir()
	file, fifo, target := filepath.Join(root, "file"), filepath.Join(root, "fifo"), filepath.Join(root, "x")
	writeFile(t, file, "data")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	stop, swapped := make(chan struct{}), make(chan struct{})
	stopSwapping := sync.OnceFunc(func() { close(stop); <-swapped })
	t.Cleanup(stopSwapping)
	go func() {
		defer close(swapped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, p := range []string{file, fifo} {
				os.Rename(p, target)
				os.Rename(target, p)
			}
		}
	}()
	// Batches for 2 s: the window between a stat and an open is a few
	// microseconds.
	const tries = 2000
	for start := time.Now(); time.Since(start) < 2*time.Second; {
		done := make(chan string, 1)
		go func() {
			out, _ := scpInProcess(t, root, "scp -f"+strings.Repeat(" x", tries), strings.Repeat("\x00", 2*tries+1))
			done <- out
		}()
		select {
		case out := <-done:
			if sent, warned := strings.Count(out, "C0644 4 x\n"), strings.Count(out, "\x01scp: "); sent+warned != tries {
				t.Fatalf("of %d tries, %d sent the file and %d warned; want every try to do one", tries, sent, warned)
			}
			if strings.Contains(out, "C0600 0 x") {
				t.Fatalf("the FIFO was sent as a file: %q", out)
			}
			continue
		case <-time.After(30 * time.Second):
		}
		stopSwapping()
		// Free the blocked open: a writer at the FIFO, wherever it is now.
		for _, p := range []string{fifo, target} {
			if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
		}
		t.Fatal("scp -f still running after 30 s: an open(2) of the FIFO swapped in is waiting for a writer")
	}
}

// TestSCPSinkBlockedWriteEndsWithTheClient: scp -t onto a FIFO that a
// program holds open but never reads blocks in write(2) once the pipe is
// full, and then no longer reads the channel. Once the client gives up, the
// session must end (and free its MaxSessions slot and the connection)
// instead of waiting for that write for ever, as the SFTP server's does.
func TestSCPSinkBlockedWriteEndsWithTheClient(t *testing.T) {
	defer func(d time.Duration) { abandonDelay = d }(abandonDelay)
	abandonDelay = 200 * time.Millisecond
	e := newEnv(t, nil)
	c := e.login("root")
	fifo := filepath.Join(e.home("root"), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	stuck, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0) // a reader that never reads
	if err != nil {
		t.Fatal(err)
	}
	// Let the blocked write end when the test does, for the leak check.
	defer func() { go func() { io.Copy(io.Discard, stuck); stuck.Close() }() }()
	s := openRaw(t, c)
	if ok, err := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Cmd string }{"scp -t fifo"})); !ok || err != nil {
		t.Fatalf("exec scp -t = %v, %v", ok, err)
	}
	r := bufio.NewReader(s.ch)
	const size = 1 << 20
	fmt.Fprintf(s.ch, "C0644 %d fifo\n", size)
	for i := range 2 { // the start, then the C line
		if b, err := r.ReadByte(); b != 0 || err != nil {
			t.Fatalf("answer %d: %d, %v", i, b, err)
		}
	}
	go io.Copy(s.ch, strings.NewReader(strings.Repeat("x", size)))
	// Until the pipe is full, and the server's write blocks: a fixed 300 ms
	// was too short under qemu-user, where the client gave up before, and the
	// session ended on the channel's EOF instead.
	capacity, err := unix.FcntlInt(stuck.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// TIOCINQ is FIONREAD: the bytes waiting in the pipe.
		if n, err := unix.IoctlGetInt(int(stuck.Fd()), unix.TIOCINQ); err != nil || n >= capacity {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the FIFO's pipe is not full after 30 s")
		}
	}
	// The next write blocks: the FIFO, opened O_NONBLOCK, is in Go's poller,
	// so scp's goroutine waits there ([IO wait]), not in write(2). A fixed
	// 100 ms was too short on a slow machine: scp, still reading the
	// channel, saw the client's close first, and nothing was abandoned.
	waitBlocked(t, "scp's write to the full FIFO", " [IO wait", "os.(*File).Write(", "sshd.(*scp).sinkFile(")
	c.Close() // the client gives up
	waitAbandoned(t, e, "scp session, its write", "scp: a read or write still blocks")
}
