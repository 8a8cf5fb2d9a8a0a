//go:build !goexperiment.jsonv2

// The differential tests compare with encoding/json as Go 1.26 has it, which
// the device build keeps (agent/cmd/porthole/device.goexperiment: nojsonv2).
// Go 1.27's encoding/json, a layer over encoding/json/v2, differs in details
// these tests check word for word (syntax error offsets, messages, escapes in
// time strings; docs/size.md): there, run them with GOEXPERIMENT=nojsonv2.

package jsonlite

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

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
