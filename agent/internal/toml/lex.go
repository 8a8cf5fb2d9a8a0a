package toml

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxDepth bounds how deeply arrays and inline tables nest, so that a hostile
// file cannot grow the stack without bound; no struct this package decodes
// into needs more than a few levels.
const maxDepth = 32

// inlineTable is { k = v, ... } in the order written.
type inlineTable []keyValue

type keyValue struct {
	_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
	key  []string  // a dotted key's parts
	val  any
	line int
}

// scanner reads TOML's tokens from a document that is valid UTF-8.
type scanner struct {
	b     []byte
	pos   int
	line  int // 1-based line of b[pos]
	depth int // arrays and inline tables open around pos
}

func (s *scanner) errorf(format string, args ...any) *ParseError {
	return &ParseError{Line: s.line, Err: fmt.Errorf(format, args...)}
}

func (s *scanner) eof() bool { return s.pos >= len(s.b) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.b[s.pos]
}

func (s *scanner) hasPrefix(p string) bool { return bytes.HasPrefix(s.b[s.pos:], []byte(p)) }

// unexpected names the character at pos (never more: values may be secrets).
func (s *scanner) unexpected(what string) *ParseError {
	if s.eof() {
		return s.errorf("%s, got the end of the file", what)
	}
	r, _ := utf8.DecodeRune(s.b[s.pos:])
	return s.errorf("%s, got %q", what, r)
}

// isControl reports the characters TOML allows in no string or comment:
// U+0000 to U+001F except tab, and U+007F (TOML v1.0, "Comment" and "String").
func isControl(c byte) bool { return c < 0x20 && c != '\t' || c == 0x7f }

func (s *scanner) skipSpace() {
	for !s.eof() && (s.b[s.pos] == ' ' || s.b[s.pos] == '\t') {
		s.pos++
	}
}

// newline consumes LF or CRLF.
func (s *scanner) newline() bool {
	switch {
	case s.hasPrefix("\n"):
		s.pos++
	case s.hasPrefix("\r\n"):
		s.pos += 2
	default:
		return false
	}
	s.line++
	return true
}

// comment consumes a comment up to, not including, its line's end.
func (s *scanner) comment() error {
	if s.peek() != '#' {
		return nil
	}
	for ; !s.eof() && s.b[s.pos] != '\n' && !s.hasPrefix("\r\n"); s.pos++ {
		if isControl(s.b[s.pos]) {
			return s.errorf("control character %q in a comment", s.b[s.pos])
		}
	}
	return nil
}

// endOfLine consumes spaces, a comment and the newline that must end a table
// header or a key/value pair.
func (s *scanner) endOfLine() error {
	s.skipSpace()
	if err := s.comment(); err != nil {
		return err
	}
	if s.eof() || s.newline() {
		return nil
	}
	return s.unexpected("want the end of the line")
}

// blank consumes spaces, comments and newlines, as allowed between the
// elements of an array.
func (s *scanner) blank() error {
	for {
		s.skipSpace()
		if err := s.comment(); err != nil {
			return err
		}
		if !s.newline() {
			return nil
		}
	}
}

func isBare(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// key reads a bare, "basic" or 'literal' key.
func (s *scanner) key() (string, error) {
	switch s.peek() {
	case '"':
		return s.basicString()
	case '\'':
		return s.literalString()
	}
	start := s.pos
	for !s.eof() && isBare(s.b[s.pos]) {
		s.pos++
	}
	if s.pos == start {
		return "", s.unexpected("want a key")
	}
	return string(s.b[start:s.pos]), nil
}

// keyPath reads a key and any dotted parts after it: a . "b" . 'c'.
func (s *scanner) keyPath() ([]string, error) {
	var path []string
	for {
		s.skipSpace()
		k, err := s.key()
		if err != nil {
			return nil, err
		}
		path = append(path, k)
		s.skipSpace()
		if s.peek() != '.' {
			return path, nil
		}
		s.pos++
	}
}

// value reads the value of a key, an array element or an inline table entry.
func (s *scanner) value() (any, error) {
	switch c := s.peek(); {
	case s.hasPrefix(`"""`):
		return s.multiLineString(`"""`)
	case s.hasPrefix(`'''`):
		return s.multiLineString(`'''`)
	case c == '"':
		return s.basicString()
	case c == '\'':
		return s.literalString()
	case c == '[' || c == '{':
		if s.depth == maxDepth {
			return nil, s.errorf("arrays and inline tables nested too deeply")
		}
		s.depth++
		defer func() { s.depth-- }()
		if c == '[' {
			return s.array()
		}
		return s.inlineTable()
	}
	return s.bareValue()
}

// bareValue reads true, false or an integer, and names what else it finds:
// TOML's floats, dates and times are not supported.
func (s *scanner) bareValue() (any, error) {
	start := s.pos
	for !s.eof() && (isBare(s.b[s.pos]) || strings.IndexByte("+.:", s.b[s.pos]) >= 0) {
		s.pos++
	}
	tok := string(s.b[start:s.pos])
	switch tok {
	case "":
		return nil, s.unexpected("want a value")
	case "true", "false":
		return tok == "true", nil
	}
	if n, ok, err := parseInt(tok); ok {
		if err != nil {
			return nil, s.errorf("integer out of range (64 bits)")
		}
		return n, nil
	}
	// What it is written as decides the message: an address, a duration or a
	// name left unquoted (0.0.0.0:2222, 60s, 2024-router) needs quotes, and
	// is neither a date, a float nor a bad integer.
	unsigned := strings.TrimLeft(tok, "+-")
	numeric := unsigned != "" && '0' <= unsigned[0] && unsigned[0] <= '9'
	switch {
	case numeric && (shaped(tok, "dddd-dd-dd") || shaped(tok, "dd:dd:dd")):
		return nil, s.errorf("dates and times are not supported")
	case unsigned == "inf" || unsigned == "nan" || numeric && isFloat(unsigned):
		return nil, s.errorf("floats are not supported")
	case tok == "+" || tok == "-" || (numeric || unsigned != tok) && intChars(unsigned):
		return nil, s.errorf("invalid integer")
	}
	return nil, s.errorf("invalid value: strings need quotes, booleans are true or false")
}

// shaped reports whether tok starts as pattern, where d stands for a digit.
func shaped(tok, pattern string) bool {
	if len(tok) < len(pattern) {
		return false
	}
	for i := range len(pattern) {
		c := tok[i]
		if pattern[i] == 'd' && (c < '0' || c > '9') || pattern[i] != 'd' && c != pattern[i] {
			return false
		}
	}
	return true
}

// isFloat reports whether tok, without its sign, is written as a decimal
// float: digits, then a fraction (. and digits), an exponent (e or E, a sign,
// digits) or both; underscores aside. (Not strconv.ParseFloat: the device
// binary has no float parsing otherwise, 11 KB on armv7.)
func isFloat(tok string) bool {
	i := digitsFrom(tok, 0)
	if i == 0 {
		return false
	}
	frac, exp := false, false
	if i < len(tok) && tok[i] == '.' {
		j := digitsFrom(tok, i+1)
		if j == i+1 {
			return false
		}
		i, frac = j, true
	}
	if i < len(tok) && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		if i < len(tok) && (tok[i] == '+' || tok[i] == '-') {
			i++
		}
		j := digitsFrom(tok, i)
		if j == i {
			return false
		}
		i, exp = j, true
	}
	return i == len(tok) && (frac || exp)
}

// digitsFrom returns where the run of digits and underscores at tok[i:] ends.
func digitsFrom(tok string, i int) int {
	for i < len(tok) && ('0' <= tok[i] && tok[i] <= '9' || tok[i] == '_') {
		i++
	}
	return i
}

// intChars reports whether tok has only an integer's characters: digits,
// underscores and signs, or a base prefix and anything after it.
func intChars(tok string) bool {
	if len(tok) > 1 && tok[0] == '0' && strings.IndexByte("xXoObB", tok[1]) >= 0 {
		return true
	}
	return strings.Trim(tok, "0123456789_+-") == ""
}

// parseInt parses a TOML integer: decimal with an optional sign and no leading
// zero, or 0x, 0o, 0b and digits (leading zeros allowed, no sign); an
// underscore only between two digits. ok is false if tok is not written as an
// integer; err is set if it is, but out of range.
func parseInt(tok string) (n int64, ok bool, err error) {
	base, sign, digits := 10, "", tok
	switch {
	case strings.HasPrefix(tok, "0x"):
		base, digits = 16, tok[2:]
	case strings.HasPrefix(tok, "0o"):
		base, digits = 8, tok[2:]
	case strings.HasPrefix(tok, "0b"):
		base, digits = 2, tok[2:]
	case strings.HasPrefix(tok, "+") || strings.HasPrefix(tok, "-"):
		sign, digits = tok[:1], tok[1:]
	}
	if base == 10 && len(digits) > 1 && digits[0] == '0' {
		return 0, false, nil
	}
	if digits == "" || digits[0] == '_' || digits[len(digits)-1] == '_' || strings.Contains(digits, "__") {
		return 0, false, nil
	}
	for _, c := range []byte(digits) {
		if c != '_' && digitValue(c) >= base {
			return 0, false, nil
		}
	}
	n, err = strconv.ParseInt(sign+strings.ReplaceAll(digits, "_", ""), base, 64)
	return n, true, err
}

func digitValue(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return 99
}

// basicString reads "..." with TOML's escapes.
func (s *scanner) basicString() (string, error) {
	s.pos++
	var b strings.Builder
	for {
		if s.eof() || s.b[s.pos] == '\n' || s.b[s.pos] == '\r' {
			return "", s.errorf("unterminated string")
		}
		switch c := s.b[s.pos]; {
		case c == '"':
			s.pos++
			return b.String(), nil
		case c == '\\':
			if err := s.escape(&b, false); err != nil {
				return "", err
			}
		case isControl(c):
			return "", s.errorf("control character %q in a string", c)
		default:
			b.WriteByte(c)
			s.pos++
		}
	}
}

// literalString reads '...', where nothing is escaped.
func (s *scanner) literalString() (string, error) {
	s.pos++
	start := s.pos
	for ; !s.eof() && s.b[s.pos] != '\''; s.pos++ {
		if c := s.b[s.pos]; c == '\n' || c == '\r' {
			return "", s.errorf("unterminated string")
		} else if isControl(c) {
			return "", s.errorf("control character %q in a string", c)
		}
	}
	if s.eof() {
		return "", s.errorf("unterminated string")
	}
	s.pos++
	return string(s.b[start : s.pos-1]), nil
}

// multiLineString reads a multi-line string: basic (delim is three double
// quotes; escapes work) or literal (three single quotes; no escapes). A
// newline right after the opening delimiter is not part of the string; up to
// two quotes may come right before the closing one (TOML v1.0, "String").
func (s *scanner) multiLineString(delim string) (string, error) {
	s.pos += 3
	s.newline()
	var b strings.Builder
	for {
		if s.eof() {
			return "", s.errorf("unterminated string")
		}
		switch c := s.b[s.pos]; {
		case c == delim[0]:
			n := 0
			for !s.eof() && s.b[s.pos] == c {
				n++
				s.pos++
			}
			if n < 3 {
				b.WriteString(delim[:n])
				continue
			}
			if n > 5 {
				return "", s.errorf("too many quotes at the end of a string")
			}
			b.WriteString(delim[:n-3])
			return b.String(), nil
		case c == '\\' && delim == `"""`:
			if err := s.escape(&b, true); err != nil {
				return "", err
			}
		case c == '\n' || c == '\r':
			start := s.pos
			if !s.newline() {
				return "", s.errorf("carriage return without a line feed in a string")
			}
			b.Write(s.b[start:s.pos])
		case isControl(c):
			return "", s.errorf("control character %q in a string", c)
		default:
			b.WriteByte(c)
			s.pos++
		}
	}
}

// escape reads an escape sequence at pos and writes what it stands for to b.
// In a multi-line string, a backslash that ends a line (spaces may follow it)
// stands for nothing and removes every space and newline after it.
func (s *scanner) escape(b *strings.Builder, multiLine bool) error {
	s.pos++
	if s.eof() {
		return s.errorf("unterminated string")
	}
	c := s.b[s.pos]
	if i := strings.IndexByte(`btnfr"\`, c); i >= 0 {
		b.WriteByte("\b\t\n\f\r\"\\"[i])
		s.pos++
		return nil
	}
	if c == 'u' || c == 'U' {
		n := 4
		if c == 'U' {
			n = 8
		}
		hex := string(s.b[s.pos+1 : min(s.pos+1+n, len(s.b))])
		r, err := strconv.ParseUint(hex, 16, 32)
		if len(hex) != n || err != nil || !utf8.ValidRune(rune(r)) {
			return s.errorf("invalid escape \\%c: want %d hex digits of a Unicode scalar value", c, n)
		}
		b.WriteRune(rune(r))
		s.pos += 1 + n
		return nil
	}
	if multiLine {
		at := s.pos
		s.skipSpace()
		if s.newline() {
			for {
				s.skipSpace()
				if !s.newline() {
					return nil
				}
			}
		}
		s.pos = at
	}
	r, _ := utf8.DecodeRune(s.b[s.pos:])
	return s.errorf("invalid escape: backslash and %q", r)
}

// array reads [ v, v, ... ], where newlines and comments may come between
// elements and a comma may follow the last one.
func (s *scanner) array() (any, error) {
	s.pos++
	arr := []any{}
	for {
		if err := s.blank(); err != nil {
			return nil, err
		}
		if s.peek() == ']' {
			s.pos++
			return arr, nil
		}
		v, err := s.value()
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		if err := s.blank(); err != nil {
			return nil, err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return arr, nil
		default:
			return nil, s.unexpected("want , or ] in an array")
		}
	}
}

// inlineTable reads { k = v, ... } on one line: TOML v1.0 allows no newline
// (except inside a value) and no comma after the last entry.
func (s *scanner) inlineTable() (any, error) {
	s.pos++
	t := inlineTable{}
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
		return t, nil
	}
	for {
		line := s.line
		k, err := s.keyPath()
		if err != nil {
			return nil, err
		}
		if err := s.equals(); err != nil {
			return nil, err
		}
		v, err := s.value()
		if err != nil {
			return nil, err
		}
		t = append(t, keyValue{key: k, val: v, line: line})
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return t, nil
		case '\n', '\r':
			return nil, s.errorf("newline in an inline table")
		default:
			return nil, s.unexpected("want , or } in an inline table")
		}
	}
}

// equals reads the = of a key/value pair and the spaces after it.
func (s *scanner) equals() error {
	if s.peek() != '=' {
		return s.unexpected("want = after a key")
	}
	s.pos++
	s.skipSpace()
	return nil
}

// keyString writes a key path as TOML does, quoting the parts that need it.
func keyString(path []string) string {
	var b strings.Builder
	for i, k := range path {
		if i > 0 {
			b.WriteByte('.')
		}
		bare := k != ""
		for _, c := range []byte(k) {
			bare = bare && isBare(c)
		}
		if bare {
			b.WriteString(k)
		} else {
			b.WriteString(strconv.Quote(k))
		}
	}
	return b.String()
}
