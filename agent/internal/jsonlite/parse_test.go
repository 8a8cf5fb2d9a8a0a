package jsonlite

import (
	"bytes"
	"encoding/json"
	"errors"
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

func TestParseMatchesEncodingJSON(t *testing.T) {
	for _, doc := range documents {
		name := doc
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) { sameAsJSON(t, []byte(doc)) })
	}
}

// sameAsJSON checks Parse(data) against encoding/json: the same syntax error
// (message and offset) as json.Unmarshal, or the same value, token by token,
// with the same text for each member and for the whole.
func sameAsJSON(t *testing.T, data []byte) {
	t.Helper()
	v, err := Parse(data)
	var raw json.RawMessage // decoding into it checks the document and nothing else
	jerr := json.Unmarshal(data, &raw)
	if jerr != nil {
		var want *json.SyntaxError
		if !errors.As(jerr, &want) {
			t.Fatalf("json.Unmarshal(%q) = %v, not a syntax error", data, jerr)
		}
		var got *json.SyntaxError
		if !errors.As(err, &got) {
			t.Fatalf("Parse(%q) = %v, want syntax error %q at %d", data, err, want, want.Offset)
		}
		if got.Error() != want.Error() || got.Offset != want.Offset {
			t.Fatalf("Parse(%q) = %q at %d, want %q at %d", data, got, got.Offset, want, want.Offset)
		}
		return
	}
	if err != nil {
		t.Fatalf("Parse(%q) = %v, want success", data, err)
	}
	if !bytes.Equal(v.Bytes(), raw) {
		t.Fatalf("Parse(%q).Bytes() = %q, want %q", data, v.Bytes(), raw)
	}

	if diff := cmp.Diff(jsonTokens(t, data), tokens(nil, v)); diff != "" {
		t.Fatalf("Parse(%q) tokens differ (-encoding/json +jsonlite):\n%s", data, diff)
	}

	// The members' text, as a map of json.RawMessage holds it: the last of a
	// repeated key wins.
	if v.Kind() == Object {
		var want map[string]json.RawMessage
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		got := map[string]json.RawMessage{}
		for _, m := range v.Members() {
			got[m.Key] = m.Value.Bytes()
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Parse(%q) members differ (-encoding/json +jsonlite):\n%s", data, diff)
		}
	}
}

// jsonTokens returns encoding/json's tokens for data: json.Delim, string,
// json.Number, bool or nil.
func jsonTokens(t *testing.T, data []byte) []any {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var toks []any
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("json.Decoder.Token(%q): %v", data, err)
			}
			return toks
		}
		toks = append(toks, tok)
	}
}

// tokens appends v's tokens as jsonTokens returns them, walking v with Members
// and Elements.
func tokens(toks []any, v Value) []any {
	switch v.Kind() {
	case Object:
		toks = append(toks, json.Delim('{'))
		for _, m := range v.Members() {
			toks = tokens(append(toks, m.Key), m.Value)
		}
		return append(toks, json.Delim('}'))
	case Array:
		toks = append(toks, json.Delim('['))
		for _, e := range v.Elements() {
			toks = tokens(toks, e)
		}
		return append(toks, json.Delim(']'))
	case String:
		return append(toks, v.Text())
	case Number:
		return append(toks, json.Number(v.Bytes()))
	case Bool:
		return append(toks, v.Bytes()[0] == 't')
	}
	return append(toks, nil)
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
