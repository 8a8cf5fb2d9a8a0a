package jsonlite

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// documents are the table tests' inputs and the fuzz target's seeds: each is
// checked against encoding/json by sameAsJSON.
var documents = []string{
	// Valid: every kind, white space, nesting, repeated keys.
	`null`, `true`, `false`, `0`, `-0`, `12`, `-1.5e+10`, `1E-2`, `0.0`, `1e400`,
	`""`, `"a"`, ` {} `, "\t[ ]\r\n", `[1,"x",true,null,{},[]]`,
	`{"a":1,"b":{"c":[1,{"d":"e"}]},"a":"again"}`,
	`{"a" : [ 1 , 2 ] , "b" : { } }`,
	`{"clientAccessToken":"AQGAAXiTcR","clientMode":"destination","region":"us-east-1","services":["SSH"]}`,
	// Strings: escapes, surrogates, invalid UTF-8, characters JSON allows raw.
	`"\"\\\/\b\f\n\r\t"`, `"\u0000\u001f\u007f\u00e9\u20AC"`,
	`"\ud83d\ude00"`, `"\uD83D\uDE00x"`, `"\ud83d"`, `"\ude00"`, `"\ud83dx"`,
	`"\ud83d\u0041"`, `"\ud83d\ud83d\ude00"`, `"\ude00\ud83d"`,
	"\"\xff\xfe\"", "\"a\xc3\"", "\"\xed\xa0\x80\"", "\"\xef\xbf\xbd\"", "\"é€😀\x7f\"",
	"{\"k\xff\":1,\"\\u006b\":2}",
	// Invalid, at every place the scanner can fail: Parse must return
	// json.Unmarshal's error, offset included.
	``, ` `, `{`, `[`, `"`, `"abc`, `"\`, `"\u12`, `"\u12x4"`, `"\x"`, `"\'"`, "\"a\nb\"",
	`t`, `tru`, `trux`, `f`, `fals`, `nul`, `nulL`, `True`,
	`-`, `-x`, `+1`, `01`, `1.`, `1.x`, `.5`, `1e`, `1e+`, `1ex`, `1.5e`, `-01`,
	`{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`, `{a:1}`, `{"a":1 "b":2}`, `{"a" 1}`, `{"a":1]`,
	`[1,]`, `[,1]`, `[1 2]`, `[1}`, `[}`, `{]`, `]`, `}`, `,`, `:`,
	`1 2`, `{} {}`, `nullx`, "{}\x00", "\x00", "1\x00", `"a"b`, "\ufeff{}",
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	strings.Repeat(`{"a":`, 9999) + `[]` + strings.Repeat("}", 9999),
	strings.Repeat(`{"a":`, 10000) + `[]` + strings.Repeat("}", 10000),
	strings.Repeat("[", 10001),
}

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`"plain"`, "plain"},
		{`"tab\there \"q\" \\ \/"`, "tab\there \"q\" \\ /"},
		{`"\u00e9\u20ac"`, "é€"},
		{`"\ud83d\ude00"`, "😀"},
		{`"\ud83d"`, "\ufffd"},
		{`"\ud83dA"`, "\ufffdA"},
		{`"\ude00\ud83d"`, "\ufffd\ufffd"},
		{`"\ud83d\u0041"`, "\ufffdA"},
		{"\"a\xffb\"", "a\ufffdb"},
		{"\"\xed\xa0\x80\"", "\ufffd\ufffd\ufffd"}, // an encoded surrogate is three bad bytes
		{"\"é\"", "é"},
		{`12`, ""},
	} {
		v, err := Parse([]byte(tc.in))
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.in, err)
		}
		if got := v.Text(); got != tc.want {
			t.Errorf("Parse(%q).Text() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestZeroValue: the zero Value is a missing value, null with nothing in it.
func TestZeroValue(t *testing.T) {
	var v Value
	if v.Kind() != Null || v.Text() != "" || v.Bytes() != nil {
		t.Errorf("zero Value: Kind %v, Text %q, Bytes %q; want null, empty, nil", v.Kind(), v.Text(), v.Bytes())
	}
	if v.Members() != nil || v.Elements() != nil {
		t.Error("zero Value has members or elements")
	}
}

func TestKindString(t *testing.T) {
	var got []string
	for k := Null; k <= Object; k++ {
		got = append(got, k.String())
	}
	if want := []string{"null", "bool", "number", "string", "array", "object"}; !cmp.Equal(got, want) {
		t.Errorf("Kind names = %q, want %q", got, want)
	}
}
