package sshd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// shellWord is one word of a command line: its text after quote removal
// and, for the source's glob expansion, the same word as a filepath.Match
// pattern in which the characters that were quoted or escaped are escaped
// with \. Glob is set when the word has an unquoted *, ? or [.
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
		if strings.IndexByte(globMeta, c) >= 0 {
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
				return words, fmt.Errorf("%s is not supported: scp runs without the login's shell", s[i:i+n])
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
		return "", 0, fmt.Errorf("$%s is not set here: scp runs without the login's shell, with its environment only", name)
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

// globMeta are the characters escapeGlob and splitShellWords escape.
const globMeta = `*?[]\`

// escapeGlob quotes the filepath.Match metacharacters in s.
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

// shellGlob expands pattern (a filepath.Match pattern whose quoted
// metacharacters are escaped with \, as shellWord.Pattern) as the shell's
// pathname expansion does (XCU 2.13): unlike filepath.Glob, a name's leading
// "." (a hidden file) is matched only by a "." at the start of the
// pattern's component, not by *, ? or [...], [!...] is a negated bracket
// expression (filepath.Match has [^...] only), and a match keeps the
// pattern's text where it has no metacharacters: "deep/../*" gives
// "deep/../a", which the kernel resolves through the link deep, where
// filepath.Glob's cleaned "a" named another file. The matches are sorted. It
// returns nil for no match or a pattern filepath.Match refuses.
func shellGlob(pattern string) []string {
	paths := []string{""}
	for i, comp := range strings.Split(pattern, "/") {
		sep := "/"
		if i == 0 {
			sep = ""
		}
		var next []string
		if !hasGlobMeta(comp) {
			name := unescapeGlob(comp)
			for _, p := range paths {
				next = append(next, p+sep+name)
			}
		} else {
			comp = negateBrackets(comp)
			for _, p := range paths {
				dir := p
				switch {
				case dir == "" && i == 0:
					dir = "." // a relative pattern
				case dir == "":
					dir = "/"
				}
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					name := e.Name()
					ok, err := filepath.Match(comp, name)
					if err != nil {
						return nil
					}
					if ok && (!strings.HasPrefix(name, ".") || strings.HasPrefix(comp, ".")) {
						next = append(next, p+sep+name)
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

// negateBrackets rewrites the shell's bracket expressions for
// filepath.Match: [!...] is its [^...], and a ] first in the brackets or a -
// first or last in them is a member, which filepath.Match wants escaped.
func negateBrackets(pattern string) string {
	var b strings.Builder
	inClass, first := false, false
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '\\' && i+1 < len(pattern):
			b.WriteByte(c)
			i++
			c = pattern[i]
		case !inClass && c == '[':
			inClass, first = true, true
			b.WriteByte(c)
			if i+1 < len(pattern) && pattern[i+1] == '!' {
				b.WriteByte('^')
				i++
			}
			continue
		case inClass && c == ']' && !first:
			inClass = false
		case inClass && (c == ']' || c == '-' && (first || i+1 < len(pattern) && pattern[i+1] == ']')):
			b.WriteByte('\\')
		}
		first = false
		b.WriteByte(c)
	}
	return b.String()
}
