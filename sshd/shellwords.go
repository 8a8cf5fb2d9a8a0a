package sshd

import (
	"errors"
	"strings"
)

// shellWord is one word of a command line: its text after quote removal
// and, for the source's glob expansion, the same word as a filepath.Match
// pattern in which the characters that were quoted or escaped are escaped
// with \. Glob is set when the word has an unquoted *, ? or [.
type shellWord struct {
	Text    string
	Pattern string
	Glob    bool
}

// splitShellWords splits a command line into words as a POSIX shell does
// (XCU 2.2 Quoting): blanks separate words; a backslash quotes the next
// character and a backslash-newline is removed; '...' quotes everything up
// to the next '; "..." quotes everything, a backslash only before $ ` " \
// and newline. The rest of the shell's syntax (variables, operators,
// comments) is taken literally, and a quoted ~ still means the home
// directory. An unterminated quote or a trailing backslash is an error.
//
// OpenSSH's scp sends remote paths as typed ("scp host:'/d/\[ab\]' ." runs
// "scp -f /d/\[ab\]"), so which metacharacters were quoted decides what
// the remote shell would have globbed.
func splitShellWords(s string) ([]shellWord, error) {
	var (
		words     []shellWord
		text, pat strings.Builder
		inWord    bool
		glob      bool
	)
	quoted := func(c byte) {
		text.WriteByte(c)
		if strings.IndexByte(globMeta, c) >= 0 {
			pat.WriteByte('\\')
		}
		pat.WriteByte(c)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n':
			if inWord {
				words = append(words, shellWord{Text: text.String(), Pattern: pat.String(), Glob: glob})
				text.Reset()
				pat.Reset()
				inWord, glob = false, false
			}
			continue
		case '\\':
			i++
			if i == len(s) {
				return nil, errors.New("trailing backslash")
			}
			if s[i] == '\n' {
				continue
			}
			quoted(s[i])
		case '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated '")
			}
			for _, q := range []byte(s[i+1 : i+1+end]) {
				quoted(q)
			}
			i += 1 + end
		case '"':
			for i++; ; i++ {
				if i == len(s) {
					return nil, errors.New(`unterminated "`)
				}
				if s[i] == '"' {
					break
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\\n", s[i+1]) >= 0 {
					i++
					if s[i] == '\n' {
						continue
					}
				}
				quoted(s[i])
			}
		default:
			text.WriteByte(c)
			pat.WriteByte(c)
			if c == '*' || c == '?' || c == '[' {
				glob = true
			}
		}
		inWord = true
	}
	if inWord {
		words = append(words, shellWord{Text: text.String(), Pattern: pat.String(), Glob: glob})
	}
	return words, nil
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
