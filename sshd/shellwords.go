package sshd

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode/utf8"
)

// shellWord is one word of a command line: its text after quote removal
// and, for the source's glob expansion, the same word as a pattern
// (matchGlob's) in which the characters that were quoted or escaped are
// escaped with \. Glob is set when the word has an unquoted *, ? or [.
type shellWord struct {
	_       [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Text    string
	Pattern string
	Glob    bool
}

// splitShellWords splits a command line into words as a POSIX shell does
// (XCU 2.2 Quoting, 2.6 Word Expansions): blanks separate words; a backslash
// quotes the next character and a backslash-newline is removed; '...'
// quotes everything up to the next '; "..." quotes everything, a backslash
// only before $ ` " \ and newline. The rest of the shell's syntax
// (operators, comments) is taken literally. An unterminated quote or a
// trailing backslash is an error.
//
// $NAME and ${NAME}, unquoted or in "...", are replaced by expand(NAME);
// unquoted, the value is split at blanks (the default IFS) and its *, ? and [
// glob. A word's leading unquoted ~ or ~user, up to the first /, is replaced
// by expand("~") or expand("~user"), as it is when expand knows it (else it is
// left as it is), and is neither split nor globbed. A name expand does not
// know, the shell's other expansions (command substitution, arithmetic,
// special parameters such as $1 and $?, ${NAME} with modifiers, ~+ and ~-)
// and $'...' and $"..." quoting are errors: the user's shell may set what
// expand does not know ($PPID, bash's $UID, a profile's variables), and taken
// as "" or literally, any of these would name a file other than the shell
// would, and scp -t would write to it.
// On an error, the words before it are returned. A nil expand knows nothing.
//
// OpenSSH's scp sends remote paths as typed ("scp host:'/d/\[ab\]' ." runs
// "scp -f /d/\[ab\]", "scp host:'$HOME/x' ." runs "scp -f $HOME/x"), so
// which metacharacters were quoted decides what the remote shell would have
// expanded and globbed.
func splitShellWords(s string, expand func(name string) (string, bool)) ([]shellWord, error) {
	if expand == nil {
		expand = func(string) (string, bool) { return "", false }
	}
	var (
		words     []shellWord
		text, pat strings.Builder
		inWord    bool // a word of the command line has begun (a ~ no longer expands)
		field     bool // the word being built is one even if empty (quotes, or text)
		glob      bool
	)
	end := func() {
		if field {
			words = append(words, shellWord{Text: text.String(), Pattern: pat.String(), Glob: glob})
		}
		text.Reset()
		pat.Reset()
		field, glob = false, false
	}
	quoted := func(c byte) {
		text.WriteByte(c)
		if strings.IndexByte(quotedMeta, c) >= 0 {
			pat.WriteByte('\\')
		}
		pat.WriteByte(c)
		field = true
	}
	// unquoted adds a character of the command line or of an unquoted
	// expansion's value, where a blank ends the word and a \ is literal.
	unquoted := func(c byte) {
		switch c {
		case ' ', '\t', '\n':
			end()
			return
		case '\\':
			quoted(c)
			return
		case '*', '?', '[':
			glob = true
		}
		text.WriteByte(c)
		pat.WriteByte(c)
		field = true
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n':
			end()
			inWord = false
			continue
		case '\\':
			i++
			if i == len(s) {
				return words, errors.New("trailing backslash")
			}
			if s[i] == '\n' {
				continue
			}
			quoted(s[i])
		case '\'':
			q := strings.IndexByte(s[i+1:], '\'')
			if q < 0 {
				return words, errors.New("unterminated '")
			}
			field = true
			for _, b := range []byte(s[i+1 : i+1+q]) {
				quoted(b)
			}
			i += 1 + q
		case '"':
			field = true
			for i++; ; i++ {
				if i == len(s) {
					return words, errors.New(`unterminated "`)
				}
				if s[i] == '"' {
					break
				}
				if s[i] == '$' || s[i] == '`' {
					v, n, err := param(s[i:], expand)
					if err != nil {
						return words, err
					}
					if n > 0 {
						for _, b := range []byte(v) {
							quoted(b)
						}
						i += n - 1
						continue
					}
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\\n", s[i+1]) >= 0 {
					i++
					if s[i] == '\n' {
						continue
					}
				}
				quoted(s[i])
			}
		case '$', '`':
			if strings.HasPrefix(s[i:], "$'") || strings.HasPrefix(s[i:], `$"`) {
				return words, errors.New(`$'...' and $"..." quoting are not supported`)
			}
			v, n, err := param(s[i:], expand)
			if err != nil {
				return words, err
			}
			if n == 0 {
				unquoted(c)
				break
			}
			for _, b := range []byte(v) {
				unquoted(b)
			}
			i += n - 1
		case '~':
			n := strings.IndexAny(s[i:]+"/", "/ \t\n")
			if !inWord && n > 1 && (s[i+1] == '+' || s[i+1] == '-') {
				return words, errors.New(s[i:i+n] + " is not supported: scp runs without the login's shell")
			}
			if !inWord && !strings.ContainsAny(s[i:i+n], "'\"\\$`") {
				if home, ok := expand(s[i : i+n]); ok {
					field = true
					for _, b := range []byte(home) {
						quoted(b)
					}
					i += n - 1
					break
				}
			}
			unquoted(c)
		default:
			unquoted(c)
		}
		inWord = true
	}
	end()
	return words, nil
}

// param expands the parameter at the start of s, which starts with $ or `,
// and returns its value and length in s: 0 for a $ that is taken literally
// (followed by none of a name, {, ( and a special parameter).
func param(s string, expand func(string) (string, bool)) (string, int, error) {
	n := 1 + nameLen(s[1:])
	name, bad := s[1:n], false
	switch {
	case s[0] == '`' || strings.HasPrefix(s, "$("):
		return "", 0, errors.New("command substitution and arithmetic expansion are not supported")
	case strings.HasPrefix(s, "${"):
		n = max(strings.IndexByte(s, '}')+1, 2)
		name = s[2:max(n-1, 2)]
		bad = name == "" || nameLen(name) != len(name)
	case name == "":
		n = min(len(s), 2)
		if n < 2 || strings.IndexByte("@*#?-$!0123456789", s[1]) < 0 {
			return "", 0, nil
		}
		bad = true
	}
	if bad {
		return "", 0, fmt.Errorf("parameter expansion %q is not supported: only $NAME and ${NAME} are", s[:n])
	}
	v, ok := expand(name)
	if !ok {
		// The login's shell may set it ($PPID, bash's $UID) or its profile may:
		// as "" it would name another file.
		return "", 0, errors.New("$" + name + " is not set here: scp runs without the login's shell, with its environment only")
	}
	return v, n, nil
}

// nameLen is the length of the name (letters, digits and _, not starting
// with a digit: XBD 3.216) at the start of s.
func nameLen(s string) int {
	n := 0
	for n < len(s) && (s[n] == '_' || 'a' <= s[n]|0x20 && s[n]|0x20 <= 'z' || n > 0 && '0' <= s[n] && s[n] <= '9') {
		n++
	}
	return n
}

// globMeta are the characters escapeGlob escapes.
const globMeta = `*?[]\`

// quotedMeta are the characters splitShellWords escapes where they were
// quoted: globMeta's, and those that mean something in a bracket expression
// only unquoted, in dash and bash (a ! or ^ first, a - between two
// characters, a : or = after a [).
const quotedMeta = globMeta + "!^-:="

// escapeGlob quotes the pattern metacharacters in s (matchGlob).
func escapeGlob(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(globMeta, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// maxGlobWork bounds what shellGlob does, in bytes: the paths it makes (each
// "*/.." in a pattern multiplies them by a directory's size,
// "/proc/*/../*/../*": a million; a long name after it, their length) and
// 4 KiB for each directory it reads ("*/../d[0]" repeated reads them all
// again, each time). It runs in the agent's memory and time, after the
// client has gone too; a shell's expansion runs in the shell.
const maxGlobWork = 8 << 20

// shellGlob expands pattern (a shellWord.Pattern: its quoted
// metacharacters are escaped with \) as the shell's pathname expansion does
// (XCU 2.13), each component matched by matchGlob: unlike filepath.Glob, a
// name's leading "." (a hidden file) is matched only by a "." at the start of
// the pattern's component, not by *, ? or [...], and a match keeps the
// pattern's text where it has no metacharacters: "deep/../*" gives
// "deep/../a", which the kernel resolves through the link deep, where
// filepath.Glob's cleaned "a" named another file. The matches are sorted. It
// returns nil for no match, and for a pattern past maxGlobWork.
func shellGlob(pattern string) []string {
	paths := []string{""}
	work := 0
	for i, comp := range strings.Split(pattern, "/") {
		sep := "/"
		if i == 0 {
			sep = ""
		}
		var next []string
		if !hasGlobMeta(comp) {
			name := unescapeGlob(comp)
			for _, p := range paths {
				q := p + sep + name
				if work += len(q); work > maxGlobWork {
					return nil
				}
				next = append(next, q)
			}
		} else {
			for _, p := range paths {
				dir := p
				switch {
				case dir == "" && i == 0:
					dir = "." // a relative pattern
				case dir == "":
					dir = "/"
				}
				if work += 4 << 10; work > maxGlobWork {
					return nil
				}
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					name := e.Name()
					if matchGlob(comp, name) && (!strings.HasPrefix(name, ".") || strings.HasPrefix(comp, ".")) {
						q := p + sep + name
						if work += len(q); work > maxGlobWork {
							return nil
						}
						next = append(next, q)
					}
				}
			}
		}
		if paths = next; len(paths) == 0 {
			return nil
		}
	}
	// Names after the last metacharacter were taken as written.
	out := paths[:0]
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil
	}
	slices.Sort(out)
	return out
}

// unescapeGlob undoes escapeGlob: a \ makes the character after it plain.
func unescapeGlob(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// hasGlobMeta tells whether pattern has an unescaped *, ? or [.
func hasGlobMeta(pattern string) bool {
	for i := 0; i < len(pattern); i++ {
		switch pattern[i] {
		case '\\':
			i++
		case '*', '?', '[':
			return true
		}
	}
	return false
}

// matchGlob tells whether name matches pattern, a component of a
// shellWord.Pattern, as the shell's pattern matching does (XCU 2.13.1): * is
// any string, ? any character, [...] a bracket expression (bracket), a [ that
// starts none is itself, and \ makes the character after it plain. ? and a
// bracket expression take a UTF-8 sequence (an invalid byte is one) for one
// character, and * may end within one, as filepath.Match did. A name's leading
// "." is shellGlob's to check.
func matchGlob(pattern, name string) bool {
	p, n := 0, 0
	star, starN := -1, 0 // what follows the last *, and where its match ends in name
	for {
		if p < len(pattern) && pattern[p] == '*' {
			p++
			star, starN = p, n
			continue
		}
		if p == len(pattern) && n == len(name) {
			return true
		}
		if p < len(pattern) && n < len(name) {
			if pl, nl := matchOne(pattern[p:], name[n:]); nl > 0 {
				p, n = p+pl, n+nl
				continue
			}
		}
		// The last * takes one more byte, if there is one.
		if star < 0 || starN == len(name) {
			return false
		}
		starN++
		p, n = star, starN
	}
}

// matchOne matches the start of pattern, which is not a *, against the start
// of name, which is not empty: it returns the length of the pattern's element
// and of what it matched in name (0 for no match).
func matchOne(pattern, name string) (pl, nl int) {
	switch pattern[0] {
	case '?':
		_, nl = utf8.DecodeRuneInString(name)
		return 1, nl
	case '[':
		r, w := utf8.DecodeRuneInString(name)
		if pl, in, _ := bracket(pattern, r); pl > 0 {
			if !in {
				w = 0
			}
			return pl, w
		}
	case '\\':
		if len(pattern) > 1 {
			pattern, pl = pattern[1:], 1
		}
	}
	if pattern[0] == name[0] {
		return pl + 1, 1
	}
	return pl + 1, 0
}

// bracket parses the bracket expression at the start of pattern (XCU
// 2.13.1, XBD 9.3.5) and tells whether r is in it; n is its length, or 0
// when pattern starts none (no ] closes it), its [ then being an ordinary
// character. A ! or ^ after the [ negates it (dash takes ^ as a member, bash
// and busybox ash negate), a ] first is a member, a - between two members
// makes a range, \ makes the character after it plain, and [:name:] is a
// character class of the C locale (inClass), as dash, bash and busybox ash
// have them.
//
// bad is set where those shells do not agree, for checkGlob to refuse the
// pattern: an equivalence class [=a=] or collating symbol [.a.] (dash takes
// each character as a member, bash and glibc's fnmatch the character itself,
// musl's fnmatch under OpenWrt's busybox nothing), a class name none of them
// has ([:foo:]), a [: [= or [. with no end in an expression that ends
// ("[:a]"), and one after a - ("-[."). n is then 0.
func bracket(pattern string, r rune) (n int, in bool, bad string) {
	i := 1
	neg := i < len(pattern) && (pattern[i] == '!' || pattern[i] == '^')
	if neg {
		i++
	}
	open := -1 // where the first [: [= or [. with no end is
	for first := i; i < len(pattern); {
		if pattern[i] == ']' && i > first {
			if open >= 0 {
				return 0, false, pattern[open : i+1]
			}
			return i + 1, in != neg, ""
		}
		if d := unitDelim(pattern[i:]); d != 0 {
			end := unitEnd(pattern[i:], d)
			if end < 0 {
				if open < 0 {
					open = i
				}
			} else {
				unit := pattern[i : i+end]
				m, known := inClass(unit[2:len(unit)-2], r)
				if d != ':' || !known {
					return 0, false, unit
				}
				in = in || m
				i += end
				continue
			}
		}
		lo, w := member(pattern[i:])
		i += w
		hi := lo
		if i+1 < len(pattern) && pattern[i] == '-' && pattern[i+1] != ']' {
			if unitDelim(pattern[i+1:]) != 0 {
				return 0, false, pattern[i : i+3]
			}
			hi, w = member(pattern[i+1:])
			i += 1 + w
		}
		in = in || lo <= r && r <= hi
	}
	return 0, false, ""
}

// unitDelim is the : = or . of a [: [= or [. at the start of s, else 0.
func unitDelim(s string) byte {
	if len(s) > 1 && s[0] == '[' && (s[1] == ':' || s[1] == '=' || s[1] == '.') {
		return s[1]
	}
	return 0
}

// unitEnd is the length of the [:name:] (d ':'), [=a=] or [.a.] at the
// start of s, or -1 when no :] (=] .]) ends it.
func unitEnd(s string, d byte) int {
	for j := 2; j+1 < len(s); j++ {
		if s[j] == d && s[j+1] == ']' {
			return j + 2
		}
	}
	return -1
}

// member is the character at the start of s, which is not empty, with a \
// before it making it plain, and its length in s.
func member(s string) (rune, int) {
	if s[0] == '\\' && len(s) > 1 {
		r, w := utf8.DecodeRuneInString(s[1:])
		return r, 1 + w
	}
	return utf8.DecodeRuneInString(s)
}

// classNames are the character classes of the C locale (XBD 7.3.1
// LC_CTYPE), each between colons, in classKinds' order.
const classNames = ":alnum:alpha:blank:cntrl:digit:graph:lower:print:punct:space:upper:xdigit:"

// The kinds of ASCII characters the classes are made of (charKind).
const (
	kindLowerHex = 1 << iota // a-f
	kindLower                // g-z
	kindUpperHex             // A-F
	kindUpper                // G-Z
	kindDigit
	kindPunct  // the other graphic characters
	kindSpace  // ' '
	kindTab    // '\t'
	kindVSpace // '\n', '\v', '\f', '\r'
	kindCntrl  // the other control characters, DEL

	kindAlpha = kindLowerHex | kindLower | kindUpperHex | kindUpper
	kindGraph = kindAlpha | kindDigit | kindPunct
)

// classKinds are the kinds of characters in each class of classNames: an
// array laid out in data, where a switch on the names was 1.7 KB of code on
// mipsle (docs/size.md).
var classKinds = [...]uint16{
	kindAlpha | kindDigit,                   // alnum
	kindAlpha,                               // alpha
	kindSpace | kindTab,                     // blank
	kindTab | kindVSpace | kindCntrl,        // cntrl
	kindDigit,                               // digit
	kindGraph,                               // graph
	kindLowerHex | kindLower,                // lower
	kindGraph | kindSpace,                   // print
	kindPunct,                               // punct
	kindSpace | kindTab | kindVSpace,        // space
	kindUpperHex | kindUpper,                // upper
	kindDigit | kindLowerHex | kindUpperHex, // xdigit
}

// charKind is the kind of r, 0 past ASCII (in no class, as in the C locale).
func charKind(r rune) uint16 {
	switch {
	case 'a' <= r && r <= 'f':
		return kindLowerHex
	case 'g' <= r && r <= 'z':
		return kindLower
	case 'A' <= r && r <= 'F':
		return kindUpperHex
	case 'G' <= r && r <= 'Z':
		return kindUpper
	case '0' <= r && r <= '9':
		return kindDigit
	case '!' <= r && r <= '~':
		return kindPunct
	case r == ' ':
		return kindSpace
	case r == '\t':
		return kindTab
	case '\n' <= r && r <= '\r':
		return kindVSpace
	case 0 <= r && r <= 0x7f:
		return kindCntrl
	}
	return 0
}

// inClass tells whether r is in the character class name of the C locale;
// known is false for a name that is not one.
func inClass(name string, r rune) (in, known bool) {
	i := strings.Index(classNames, ":"+name+":")
	if i < 0 || strings.IndexByte(name, ':') >= 0 {
		return false, false
	}
	return classKinds[strings.Count(classNames[:i], ":")]&charKind(r) != 0, true
}

// checkGlob refuses a pattern (a shellWord.Pattern) with a bracket
// expression that the shells take in different ways (bracket's bad), so
// that scp neither names nor writes another file than the user's shell
// would have.
func checkGlob(pattern string) error {
	for _, comp := range strings.Split(pattern, "/") {
		for i := 0; i < len(comp); i++ {
			switch comp[i] {
			case '\\':
				i++
			case '[':
				n, _, bad := bracket(comp[i:], 0)
				if bad != "" {
					return fmt.Errorf("%q in a bracket expression is not supported (only [:alpha:], [:digit:] and the other POSIX classes are; quote the [ to match it)", bad)
				}
				i += max(n-1, 0)
			}
		}
	}
	return nil
}
