// Package syntax checks names against the character rules of AWS IoT's APIs
// (thing names, service ids, regions, client tokens) without the regexp
// package, which costs about 260 KB in the device binary (docs/size.md).
// agent/notify and agent/tunnel share it; agent/tunnel's FuzzIsName and
// TestIsNameMatchesRegexp check it against the regular expressions it
// replaces.
package syntax

import "strings"

// Name reports whether s is min to max characters long, each an ASCII letter,
// a digit or one of extra: ^[a-zA-Z0-9<extra>]{min,max}$.
func Name(s string, min, max int, extra string) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}
