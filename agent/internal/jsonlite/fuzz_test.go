//go:build !goexperiment.jsonv2

// The differential tests compare with encoding/json as Go 1.26 has it, which
// the device build keeps (agent/cmd/porthole/device.goexperiment: nojsonv2).
// Go 1.27's encoding/json, a layer over encoding/json/v2, differs in details
// these tests check word for word (syntax error offsets, messages, escapes in
// time strings; docs/size.md): there, run them with GOEXPERIMENT=nojsonv2.

package jsonlite

import "testing"

// FuzzParse is the differential test: for any input, Parse fails with
// json.Unmarshal's syntax error, or returns what encoding/json decodes, token
// by token (see sameAsJSON).
func FuzzParse(f *testing.F) {
	for _, doc := range documents {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// sameAsJSON walks every level of a document, re-reading the levels
		// below each: a large deep input takes seconds (the fuzzer reports it
		// as hung over 10 s) and minimizing one stalls the search for a
		// minute. Nothing in Value depends on size; the nesting limit is
		// encoding/json's scanner's, and the table tests check it.
		if len(data) > 4<<10 {
			t.Skip("over 4 KiB")
		}
		sameAsJSON(t, data)
	})
}
