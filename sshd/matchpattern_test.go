package sshd

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// matchPatternRecursive is matchPattern as it was until the sixty-third
// round, kept as a reference for FuzzMatchPattern and for
// BenchmarkMatchPattern's "before": each * tries every length in turn.
func matchPatternRecursive(s, pat string) bool {
	for len(pat) > 0 {
		switch pat[0] {
		case '*':
			for len(pat) > 0 && pat[0] == '*' {
				pat = pat[1:]
			}
			if pat == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if matchPatternRecursive(s[i:], pat) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
			s, pat = s[1:], pat[1:]
		default:
			if s == "" || s[0] != pat[0] {
				return false
			}
			s, pat = s[1:], pat[1:]
		}
	}
	return s == ""
}

// matchPatternRegexp is what matchPattern means, as a regular expression,
// which package regexp matches without backtracking. Each byte of s and pat
// stands for the rune of the same number (Latin-1), so that ?, one rune to
// regexp, is one byte, as it is to matchPattern.
func matchPatternRegexp(s, pat string) bool {
	var re strings.Builder
	re.WriteString(`(?s)^`)
	for i := 0; i < len(pat); i++ {
		switch pat[i] {
		case '*':
			re.WriteString(`.*`)
		case '?':
			re.WriteString(`.`)
		default:
			re.WriteString(regexp.QuoteMeta(string(rune(pat[i]))))
		}
	}
	re.WriteString(`$`)
	var subject strings.Builder
	for i := 0; i < len(s); i++ {
		subject.WriteRune(rune(s[i]))
	}
	return regexp.MustCompile(re.String()).MatchString(subject.String())
}

var matchPatternTests = []struct {
	s, pat string
	want   bool
}{
	{"LC_ALL", "LC_*", true}, {"LANG", "LC_*", false}, {"abc", "a?c", true},
	{"abc", "*", true}, {"", "*", true}, {"", "?", false}, {"abc", "abcd", false}, {"a*c", "a*c", true},
	{"", "", true}, {"a", "", false}, {"", "**", true}, {"abc", "abc*", true}, {"abc", "*abc", true},
	{"abcbc", "a*bc", true}, {"abcbd", "a*bc", false}, {"aXbYc", "a*b*c", true}, {"acb", "a*b*c", false},
	{"ab", "*?*?*", true}, {"a", "*?*?*", false}, {"mississippi", "*sip*", true}, {"mississippi", "m*iss*ppi", true},
	{"aaaa", "*a*a*a*a*", true}, {"aaa", "*a*a*a*a*", false}, {"host.example.com", "*.*.example.com", false},
	{"a.b.example.com", "*.*.example.com", true}, {"\xff\xfe", "??", true}, {"\xc3\xa9", "?", false},
	// ? and * take any byte, a "/" too (no path rules, unlike a shell's).
	{"10.0.0.0/8", "10.0.0.0?8", true}, {"a/b/c", "a*c", true},
}

func TestMatchPattern(t *testing.T) {
	for _, tc := range matchPatternTests {
		if got := matchPattern(tc.s, tc.pat); got != tc.want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", tc.s, tc.pat, got, tc.want)
		}
		if got := matchPatternRegexp(tc.s, tc.pat); got != tc.want {
			t.Errorf("matchPatternRegexp(%q, %q) = %v, want %v", tc.s, tc.pat, got, tc.want)
		}
	}
}

// A pattern with several * is matched in time the product of the lengths, not
// their power: a permitlisten= pattern an administrator may well write, with
// four *, against the bind address of a client's tcpip-forward request (which
// nothing checks first, and an SSH packet holds 256 KiB of) took the client's
// length to the fourth power: 0.6 s for 253 dots (BenchmarkMatchPattern),
// some ten hours of a CPU for the 4,000 here.
func TestMatchPatternManyStarsQuick(t *testing.T) {
	host := strings.Repeat(".", 4000)
	done := make(chan bool, 1)
	go func() { done <- permitListenMatch([]string{"*.*.*.*.example.com:8080"}, host, 8080) }()
	select {
	case m := <-done:
		if m {
			t.Errorf("permitListenMatch(*.*.*.*.example.com:8080, %d dots) = true, want false", len(host))
		}
	case <-time.After(10 * time.Second):
		// The match goes on spinning, and goleak reports it at the end.
		t.Fatalf("permitListenMatch(*.*.*.*.example.com:8080, %d dots) took over 10 s", len(host))
	}
}

// FuzzMatchPattern: matchPattern answers as the regular expression of the
// pattern does, and, where that is quick enough to wait for, as the recursive
// matcher it replaced.
func FuzzMatchPattern(f *testing.F) {
	for _, tc := range matchPatternTests {
		f.Add(tc.s, tc.pat)
	}
	f.Fuzz(func(t *testing.T, s, pat string) {
		if len(s) > 1024 || len(pat) > 256 {
			return // longer says no more, and the regexp takes longer
		}
		got := matchPattern(s, pat)
		if want := matchPatternRegexp(s, pat); got != want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v as a regular expression", s, pat, got, want)
		}
		// The recursive matcher tries some len(s)^stars splits.
		if stars := len(strings.FieldsFunc(pat, func(r rune) bool { return r != '*' })); stars <= 3 && len(s) <= 32 {
			if want := matchPatternRecursive(s, pat); got != want {
				t.Errorf("matchPattern(%q, %q) = %v, want %v as the recursive matcher", s, pat, got, want)
			}
		}
	})
}

// BenchmarkMatchPattern matches a host of n dots against the pattern
// "*.*.*.*.example.com", which fails only once every split is tried: with the
// greedy matcher and with the recursive one it replaced.
//
//	go test -run '^$' -bench 'BenchmarkMatchPattern' -benchtime 2s ./sshd/
func BenchmarkMatchPattern(b *testing.B) {
	const pat = "*.*.*.*.example.com"
	for _, m := range []struct {
		name  string
		match func(s, pat string) bool
	}{{"greedy", matchPattern}, {"recursive", matchPatternRecursive}} {
		for _, n := range []int{16, 64, 253} {
			host := strings.Repeat(".", n)
			b.Run(m.name+"/n="+strconv.Itoa(n), func(b *testing.B) {
				for b.Loop() {
					if m.match(host, pat) {
						b.Fatal("matched")
					}
				}
			})
		}
	}
}
