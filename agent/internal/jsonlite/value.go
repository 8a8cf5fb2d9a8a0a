package jsonlite

import (
	"unicode/utf16"
	"unicode/utf8"
)

// Kind is the kind of a JSON value (RFC 8259 §3).
type Kind uint8

// The kinds of JSON values.
const (
	Null Kind = iota
	Bool
	Number
	String
	Array
	Object
)

// String returns the kind's name as encoding/json's errors write it: "null",
// "bool", "number", "string", "array" or "object".
func (k Kind) String() string {
	switch k {
	case Bool:
		return "bool"
	case Number:
		return "number"
	case String:
		return "string"
	case Array:
		return "array"
	case Object:
		return "object"
	}
	return "null"
}

// A Value is one JSON value of a document that Parse accepted: its text,
// without the white space around it, like a json.RawMessage. The zero Value
// stands for a missing value: its Kind is Null and it has no text.
type Value struct {
	b []byte // checked by Parse; the methods rely on that
}

// Kind returns the value's kind.
func (v Value) Kind() Kind {
	if len(v.b) == 0 {
		return Null
	}
	switch v.b[0] {
	case '{':
		return Object
	case '[':
		return Array
	case '"':
		return String
	case 't', 'f':
		return Bool
	case 'n':
		return Null
	}
	return Number
}

// Bytes returns the value's JSON text, to hand to an UnmarshalJSON method.
// It aliases the document given to Parse.
func (v Value) Bytes() []byte { return v.b }

// A Member is one member of an object.
type Member struct {
	Key   string // decoded as Text decodes strings
	Value Value
}

// Members returns the members of an object in document order, repeated keys
// included; of a value of another kind, none.
func (v Value) Members() []Member {
	if v.Kind() != Object {
		return nil
	}
	var ms []Member
	b := v.b
	for i := skipSpace(b, 1); b[i] != '}'; i = next(b, i) {
		end := skipValue(b, i)
		key := text(b[i:end])
		i = skipSpace(b, skipSpace(b, end)+1) // past the colon
		end = skipValue(b, i)
		ms = append(ms, Member{key, Value{b[i:end]}})
		i = end
	}
	return ms
}

// Elements returns the elements of an array in order; of a value of another
// kind, none.
func (v Value) Elements() []Value {
	if v.Kind() != Array {
		return nil
	}
	var es []Value
	b := v.b
	for i := skipSpace(b, 1); b[i] != ']'; i = next(b, i) {
		end := skipValue(b, i)
		es = append(es, Value{b[i:end]})
		i = end
	}
	return es
}

// next returns where the member or element after the one that ends at b[i]
// starts, or where the container closes.
func next(b []byte, i int) int {
	if i = skipSpace(b, i); b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	return i
}

// skipValue returns the end of the value that starts at b[i]. b has passed
// Parse, so strings end and brackets match: this only counts them.
func skipValue(b []byte, i int) int {
	if c := b[i]; c != '"' && c != '{' && c != '[' {
		// A number or a literal runs to the next delimiter or the end.
		for i < len(b) && !isSpace(b[i]) && b[i] != ',' && b[i] != ']' && b[i] != '}' {
			i++
		}
		return i
	}
	depth := 0
	for {
		switch b[i] {
		case '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++ // the escaped byte cannot end the string
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		}
		i++
		if depth == 0 {
			return i
		}
	}
}

// Text returns the value of a JSON string, decoded as encoding/json decodes
// it: escapes are replaced by what they stand for, an escaped UTF-16
// surrogate pair by its character, and each byte of invalid UTF-8 and each
// lone escaped surrogate by U+FFFD. Of a value of another kind it returns "".
func (v Value) Text() string {
	if v.Kind() != String {
		return ""
	}
	return text(v.b)
}

// text decodes the string literal s, quotes included.
func text(s []byte) string {
	s = s[1 : len(s)-1]
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == '\\' && s[i+1] == 'u':
			r := hex4(s[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				// A high surrogate escaped right before a low one makes one
				// character; a surrogate alone is U+FFFD.
				next := rune(-1)
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					next = hex4(s[i+2:])
				}
				if r = utf16.DecodeRune(r, next); r != utf8.RuneError {
					i += 6
				}
			}
			out = utf8.AppendRune(out, r)
		case c == '\\':
			out = append(out, unescape(s[i+1]))
			i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, n := utf8.DecodeRune(s[i:]) // U+FFFD and 1 for a byte of invalid UTF-8
			out = utf8.AppendRune(out, r)
			i += n
		}
	}
	return string(out)
}

// unescape returns the byte the escape \c stands for; Parse has refused
// any c but these and u.
func unescape(c byte) byte {
	switch c {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return c // '"', '\\' or '/'
}

// hex4 returns the value of the four hex digits Parse checked at the start of s.
func hex4(s []byte) rune {
	var r rune
	for _, c := range s[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
