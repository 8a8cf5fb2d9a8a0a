package sshd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// shellGlobShells are the shells whose pathname expansion shellGlob follows
// (Debian's dash as /bin/sh, bash, and busybox-static's ash, with glibc's
// fnmatch; tools/deps.sh test installs it).
var shellGlobShells = [][]string{{"/bin/sh"}, {"bash"}, {"busybox", "sh"}}

// shellExpansion is what shell (an argv) expands pattern to in dir, in the
// C locale: the pattern itself when nothing matches.
func shellExpansion(t *testing.T, shell []string, dir, pattern string) []string {
	t.Helper()
	needProgram(t, shell[0])
	cmd := exec.Command(shell[0], append(shell[1:], "-c", `for f in `+pattern+`; do printf '%s\0' "$f"; done`)...)
	cmd.Dir, cmd.Env = dir, []string{"LC_ALL=C"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: for f in %s: %v", shell, pattern, err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// TestShellGlobCharClasses: a character class in a bracket expression
// ([[:alpha:]], [![:digit:]], [[:upper:][:digit:]-]) matches what dash,
// bash and busybox ash match in the C locale. shellGlob took [[:alpha:]] for
// the set "[:alph" and a "]" after it: scp -t 'cls/[[:alpha:]]' wrote to
// cls/a] rather than cls/b, and scp -f 'log.[[:digit:]]' found nothing.
func TestShellGlobCharClasses(t *testing.T) {
	dir := t.TempDir()
	// Every byte but NUL, / and ., as a name, and some two-byte names.
	names := []string{"a]", ":]", "=]", "b!", "1-", "Z9", "\xff"}
	for c := 1; c < 0x80; c++ {
		if c != '/' && c != '.' {
			names = append(names, string(rune(c)))
		}
	}
	for _, n := range names {
		writeFile(t, filepath.Join(dir, n), "")
	}
	var patterns []string
	for _, class := range []string{"alpha", "digit", "alnum", "upper", "lower", "space", "blank", "punct", "print", "graph", "cntrl", "xdigit"} {
		patterns = append(patterns, "[[:"+class+":]]", "[![:"+class+":]]", "?[[:"+class+":]]")
	}
	patterns = append(patterns,
		"[[:upper:][:digit:]]", "[![:alnum:][:punct:]]", "[[:digit:]-a]", "[a[:digit:]-]", "[-[:digit:]]",
		"[[:alpha:]]*", "*[[:punct:]]", "[![:alpha:]][[:punct:]]", "[]-a[:digit:]]", `[\[:alpha:]]`, `\[[:alpha:]]`,
		"[[:alpha:]", "[[:", "[[:alpha:]x", "[a*", "[!]")
	for _, pat := range patterns {
		if err := checkGlob(pat); err != nil {
			t.Errorf("checkGlob(%q) = %v, want nil", pat, err)
		}
		var ours []string
		for _, m := range shellGlob(escapeGlob(dir) + "/" + pat) {
			ours = append(ours, strings.TrimPrefix(m, dir+"/"))
		}
		if len(ours) == 0 {
			ours = []string{unescapeGlob(pat)}
		}
		for _, sh := range shellGlobShells {
			if diff := cmp.Diff(shellExpansion(t, sh, dir, pat), ours); diff != "" {
				t.Errorf("%s (-%s +shellGlob):\n%s", pat, sh, diff)
			}
		}
	}
}

// TestCheckGlobRefuses: what the shells take in different ways in a bracket
// expression is refused, with the part that is not supported named, rather
// than matched as one of them would: equivalence classes, collating
// symbols, a class none of them has, a [: with no :], one after a -.
func TestCheckGlobRefuses(t *testing.T) {
	for _, tc := range []struct{ pattern, bad string }{
		{"[[:foo:]]", "[:foo:]"},
		{"d/x[[:ALPHA:]]", "[:ALPHA:]"},
		{"[[:foo:]", "[:foo:]"},
		{"[[::]]", "[::]"},
		{"[[=a=]]", "[=a=]"},
		{"[x[.a.]]", "[.a.]"},
		{"[[=]=]]", "[=]=]"},
		{"[[:a]", "[:a]"},
		{"[[:]]", "[:]"},
		{"[[.]", "[.]"},
		{"[a-[.z.]]", "-[."},
		{"[a-[:digit:]]", "-[:"},
		{"ok/[[:alpha:]]/[![=a=]]", "[=a=]"},
	} {
		err := checkGlob(tc.pattern)
		if err == nil || !strings.Contains(err.Error(), `"`+tc.bad+`" in a bracket expression is not supported`) {
			t.Errorf("checkGlob(%q) = %v, want it to refuse %q", tc.pattern, err, tc.bad)
		}
	}
	// A quoted [ or : is a character: nothing is refused.
	for _, in := range []string{`scp -f \[[:foo:]]`, `scp -f [\[:foo:]]`, `scp -f '[[=a=]]'`, `scp -t x/[[:alpha:]]`} {
		if _, ok, err := parseSCPCommand(in, testExpand); !ok || err != nil {
			t.Errorf("parseSCPCommand(%q) = ok %v, %v; want ok, nil", in, ok, err)
		}
	}
	for _, in := range []string{`scp -f [[:foo:]]`, `scp -t 'x'/[[=a=]]`, `scp -f ok $GLOB[[.a.]]`} {
		if _, ok, err := parseSCPCommand(in, testExpand); !ok || err == nil || !strings.Contains(err.Error(), "in a bracket expression is not supported") {
			t.Errorf("parseSCPCommand(%q) = ok %v, %v; want ok and the bracket expression refused", in, ok, err)
		}
	}
}

// TestSCPCharClassMatchesOpenSSH: scp -t and scp -f with a character class
// in the path do what OpenSSH's do through the shell: the file written is
// cls/b, not cls/a], and log.[[:digit:]] sends log.1.
func TestSCPCharClassMatchesOpenSSH(t *testing.T) {
	withUmask(t, 0o022)
	layout := func(t *testing.T) string {
		root := t.TempDir()
		os.Mkdir(filepath.Join(root, "cls"), 0o755)
		for name, data := range map[string]string{"cls/a]": "A", "cls/b": "B", "log.1": "L", "log.x": "X"} {
			writeFile(t, filepath.Join(root, name), data)
		}
		return root
	}
	for _, tc := range []struct{ cmd, stream string }{
		{"scp -t cls/[[:alpha:]]", "C0644 3 f\nnew\x00"},
		{"scp -t cls/[[:alpha:]]*", "C0644 3 f\nnew\x00"}, // a] and b: ambiguous
		{"scp -f log.[[:digit:]]", strings.Repeat("\x00", 5)},
		{"scp -f log.[![:digit:]] cls/[[:lower:]]", strings.Repeat("\x00", 5)},
	} {
		ours, theirs := layout(t), layout(t)
		got, status := scpInProcess(t, ours, tc.cmd, tc.stream)
		want, wantStatus := shellSCP(t, theirs, tc.cmd, tc.stream)
		if strings.Contains(want, "ambiguous target") { // \x01 from OpenSSH, \x02 here
			want = strings.Replace(want, "\x01", "\x02", 1)
		}
		if got != want || status != wantStatus {
			t.Errorf("%s: sent %q, status %d; OpenSSH's scp %q, %d", tc.cmd, got, status, want, wantStatus)
		}
		if diff := cmp.Diff(scpTree(t, theirs), scpTree(t, ours)); diff != "" {
			t.Errorf("%s: tree (-OpenSSH +ours):\n%s", tc.cmd, diff)
		}
	}
}

// TestOpenSSHSCPCharClass: the character class cases through OpenSSH's
// client (scp -O), as the reviewer found them, and a refusal it prints.
func TestOpenSSHSCPCharClass(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	scp := needProgram(t, "scp")
	base := append(o.opts(), "-P", o.port, "-O")
	home := o.home("root")
	os.Mkdir(filepath.Join(home, "cls"), 0o755)
	writeFile(t, filepath.Join(home, "cls", "a]"), "A")
	writeFile(t, filepath.Join(home, "cls", "b"), "B")
	writeFile(t, filepath.Join(home, "log.1"), "L")
	src := filepath.Join(o.dir, "new.txt")
	writeFile(t, src, "new")

	if _, errOut, code := o.run(t, nil, scp, append(base, src, "root@127.0.0.1:cls/[[:alpha:]]")...); code != 0 {
		t.Errorf("scp -O new.txt host:cls/[[:alpha:]]: exit %d, %q", code, errOut)
	}
	for name, want := range map[string]string{"a]": "A", "b": "new"} {
		if got, _ := os.ReadFile(filepath.Join(home, "cls", name)); string(got) != want {
			t.Errorf("cls/%s after scp -O new.txt host:cls/[[:alpha:]]: %q, want %q", name, got, want)
		}
	}
	down := t.TempDir()
	if _, errOut, code := o.run(t, nil, scp, append(base, "root@127.0.0.1:log.[[:digit:]]", down)...); code != 0 {
		t.Errorf("scp -O host:log.[[:digit:]]: exit %d, %q", code, errOut)
	}
	if got, _ := os.ReadFile(filepath.Join(down, "log.1")); string(got) != "L" {
		t.Errorf("log.1 fetched with scp -O host:log.[[:digit:]]: %q, want L", got)
	}
	_, errOut, code := o.run(t, nil, scp, append(base, src, "root@127.0.0.1:cls/[[=a=]]")...)
	if want := `"[=a=]" in a bracket expression is not supported`; code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("scp -O new.txt host:cls/[[=a=]]: exit %d, %q; want 1 and %q", code, errOut, want)
	}
	if got, _ := os.ReadFile(filepath.Join(home, "cls", "a]")); string(got) != "A" {
		t.Errorf("cls/a] after scp -O new.txt host:cls/[[=a=]]: %q, want it untouched", got)
	}
}

// TestShellGlobQuotedInBrackets: a quoted !, ^, -, : or = in a bracket
// expression is a character, as in dash and bash: ['!'a] is ! or a, not
// "not a", [a'-'c] is a, - or c, [[\:alpha:]] is the set "[:alph" and a "]".
// (busybox ash with glibc takes a quoted ^ first and a quoted : after a [ as
// if unquoted.)
func TestShellGlobQuotedInBrackets(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b", "c", "!", "-", "^", "=", ":]", "a]", "b]"} {
		writeFile(t, filepath.Join(dir, n), "")
	}
	for _, tc := range []struct {
		word   string
		shells [][]string
	}{
		{`['!'a]`, shellGlobShells},
		{`[\!a]`, shellGlobShells},
		{`[a'-'c]`, shellGlobShells},
		{`[a\-c]`, shellGlobShells},
		{`["-"b]`, shellGlobShells},
		{`['^'a]`, shellGlobShells[:2]},
		{`[\^b]`, shellGlobShells},
		{`[[\:alpha:]]`, shellGlobShells[:2]},
		{`[[':'alpha:]]`, shellGlobShells[:2]},
		{`[['=']a=]`, shellGlobShells},
	} {
		words, err := splitShellWords(tc.word, nil)
		if err != nil || len(words) != 1 || !words[0].Glob {
			t.Fatalf("splitShellWords(%q) = %+v, %v; want one glob word", tc.word, words, err)
		}
		if err := checkGlob(words[0].Pattern); err != nil {
			t.Errorf("%s: checkGlob(%q) = %v, want nil", tc.word, words[0].Pattern, err)
		}
		var ours []string
		for _, m := range shellGlob(escapeGlob(dir) + "/" + words[0].Pattern) {
			ours = append(ours, strings.TrimPrefix(m, dir+"/"))
		}
		if len(ours) == 0 {
			ours = []string{words[0].Text}
		}
		for _, sh := range tc.shells {
			if diff := cmp.Diff(shellExpansion(t, sh, dir, tc.word), ours); diff != "" {
				t.Errorf("%s (-%s +shellGlob):\n%s", tc.word, sh, diff)
			}
		}
	}
}

// TestShellGlobBounded: shellGlob runs in the agent, in its memory and time,
// and goes on after the client has gone. Each "*/.." multiplied the paths it
// held by a directory's size (scp -f 'd/*/../*/../*/../*' over 40
// directories: 2.5 million paths, 2 GiB allocated), a long name after such a
// pattern their length (62,500 paths of 2 KB: 298 MiB), and "*/../d[0]"
// repeated read every directory again each time (62,500 reads per 8 bytes of
// pattern: hours on a router). Past maxGlobWork it is no match (scp then
// names the pattern as written).
func TestShellGlobBounded(t *testing.T) {
	dir := t.TempDir()
	for i := range 250 {
		if err := os.Mkdir(filepath.Join(dir, fmt.Sprintf("d%03d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(shellGlob(dir + "/d00*/../d01*")); got != 100 {
		t.Fatalf("a small pattern: %d matches, want 100", got)
	}
	for name, pattern := range map[string]string{
		"paths":            dir + "/*/../*/../*",
		"a long name":      dir + "/*/../*/" + strings.Repeat("x", 2000),
		"directories read": dir + "/*/../*/../d[0]*/../d[0]*/../d[0]*",
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		got := shellGlob(pattern)
		runtime.ReadMemStats(&after)
		if got != nil {
			t.Errorf("%s: %d matches, want none (past maxGlobWork)", name, len(got))
		}
		if mib := (after.TotalAlloc - before.TotalAlloc) >> 20; mib > 64 {
			t.Errorf("%s: %d MiB allocated, want the work bounded", name, mib)
		}
	}
}
