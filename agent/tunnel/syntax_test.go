package tunnel

import (
	"regexp"
	"strings"
	"testing"
)

// isName must agree with the regular expressions it replaces.
var syntaxRefs = []struct {
	re       *regexp.Regexp
	min, max int
	extra    string
}{
	{regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`), 1, 128, ":_-"},
	{regexp.MustCompile(`^[a-zA-Z0-9-]{32,128}$`), 32, 128, "-"},
	{regexp.MustCompile(`^[a-zA-Z0-9.:\[\]-]{1,253}$`), 1, 253, ".:[]-"},
}

func TestIsNameMatchesRegexp(t *testing.T) {
	for _, s := range []string{"", "SSH", "a:b_c-d", "bad name", "é", strings.Repeat("a", 128), strings.Repeat("a", 129),
		strings.Repeat("x-", 16), "[::1]:443", "host.example:8443", "a\x00b", "ß"} {
		for _, r := range syntaxRefs {
			if got, want := isName(s, r.min, r.max, r.extra), r.re.MatchString(s); got != want {
				t.Errorf("isName(%q, %d, %d, %q) = %v, regexp %v", s, r.min, r.max, r.extra, got, want)
			}
		}
	}
}

func FuzzIsName(f *testing.F) {
	f.Add("SSH")
	f.Add("[::1]:443")
	f.Fuzz(func(t *testing.T, s string) {
		for _, r := range syntaxRefs {
			if got, want := isName(s, r.min, r.max, r.extra), r.re.MatchString(s); got != want {
				t.Fatalf("isName(%q, %q) = %v, regexp %v", s, r.extra, got, want)
			}
		}
	})
}
