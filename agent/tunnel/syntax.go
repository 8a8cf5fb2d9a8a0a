package tunnel

import "strings"

// isName reports whether s is min to max characters long, each an ASCII letter, a
// digit or one of extra. It replaces patterns like ^[a-zA-Z0-9:_-]{1,128}$: the
// regexp package costs about 260 KB in the device binary (docs/size.md).
func isName(s string, min, max int, extra string) bool {
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
