// Package jsonlite reads JSON documents without reflection, for the agent's
// notify payload and its saved tunnel state. Parse checks a document and
// returns its top-level Value; callers then walk the members and elements
// they need and decode strings as encoding/json does.
//
// It is not a general JSON library: it does not encode, and it does not map
// documents onto structs (callers do that for their few fields, with
// encoding/json's rules). It replaces encoding/json's reflection-based
// decoder, which cost about 78 KiB of the linux/mipsle device binary. The
// rest of encoding/json stays in that binary whatever the agent does:
// log/slog links its encoder, and the encoder its scanner. So Parse checks
// documents with that scanner (through json.Valid and json.Indent), and
// syntax errors are encoding/json's own. A differential fuzz test checks the
// rest against encoding/json.
package jsonlite

import (
	"bytes"
	"encoding/json"
)

// Parse checks that data is one JSON value (RFC 8259), with nothing but white
// space around it, and returns that value. Its error is the *json.SyntaxError
// that json.Unmarshal would return, Offset included; as there, a document
// nested over 10000 levels deep is one.
func Parse(data []byte) (Value, error) {
	if !json.Valid(data) {
		// Indent runs the same scanner and, unlike Valid, returns its error.
		return Value{}, json.Indent(new(bytes.Buffer), data, "", "")
	}
	start := skipSpace(data, 0)
	return Value{data[start:skipValue(data, start)]}, nil
}

// isSpace reports JSON's white space (RFC 8259 §2).
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}
