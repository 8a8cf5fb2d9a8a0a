//go:build !goexperiment.jsonv2

// The differential tests compare with encoding/json as Go 1.26 has it, which
// the device build keeps (agent/cmd/porthole/device.goexperiment: nojsonv2).
// Go 1.27's encoding/json, a layer over encoding/json/v2, differs in details
// these tests check word for word (syntax error offsets, messages, escapes in
// time strings; docs/size.md): there, run them with GOEXPERIMENT=nojsonv2.

package notify

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/porthole-iot/porthole/agent/internal/syntax"
)

// FuzzParseNotificationMatchesJSON is the differential test of the payload
// decoder: ParseNotification returns what it returned when encoding/json
// decoded payloads (parseWithEncodingJSON, kept below as the reference), the
// same notification or the same error, word for word.
func FuzzParseNotificationMatchesJSON(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.payload))
	}
	for _, in := range fuzzCorpus(f, "FuzzParseNotification") {
		f.Add(in)
	}
	for _, s := range []string{
		`{"clientAccessToken":"a","clientAccessToken":"b","clientMode":"destination","region":"r","services":["SSH"],"services":null}`,
		`{"clientAccessToken":"\u0061bc","clientMode":"\u0064estination","region":"r","services":["S\u0053H",null]}`,
		`{"clientAccessToken":"abc","clientMode":"destination","region":"r","services":["SSH",{},1]}`,
		`{"clientAccessToken":"abc","clientMode":"destination","region":"r","services":[true]}`,
		`{"clientAccessToken":{"x":1},"clientMode":"destination","region":"r","services":["SSH"]}`,
		`{"clientAccessToken":"abc","clientMode":"destination","region":[],"services":["SSH"]}`,
		`{"clientAccessToken":"abc","clientMode":false,"region":"r","services":["SSH"]}`,
		`{"clientAccessToken":"abc","clientMode":"destination","region":"r","services":{}}`,
		`{"clientAccessToken":"abc","clientMode":"destination","region":"r","services":["SSH"]} x`,
		"{\"clientAccessToken\":\"a\\ud83db\",\"clientMode\":\"destination\",\"region\":\"r\",\"services\":[\"SSH\"]}",
		`"payload"`, `12`, `true`, ` null `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := ParseNotification(payload)
		want, wantErr := parseWithEncodingJSON(payload)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("ParseNotification(%q) error = %v, want %v", payload, err, wantErr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("ParseNotification(%q) mismatch (-encoding/json +got):\n%s", payload, diff)
		}
	})
}

// fuzzCorpus returns the inputs of testdata/fuzz/target, a corpus of []byte
// inputs, so another target can start from them.
func fuzzCorpus(tb testing.TB, target string) [][]byte {
	paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
	if err != nil {
		tb.Fatal(err)
	}
	var ins [][]byte
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		// "go test fuzz v1" then one line: []byte("...")
		_, arg, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(arg, "[]byte("), ")"))
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		ins = append(ins, []byte(s))
	}
	return ins
}

// parseWithEncodingJSON is ParseNotification as it was when it decoded the
// payload with encoding/json: the reference for the differential test.
func parseWithEncodingJSON(payload []byte) (Notification, error) {
	if len(payload) > MaxPayloadSize {
		return Notification{}, invalid("payload is %d bytes, over the %d-byte limit", len(payload), MaxPayloadSize)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil {
		return Notification{}, refJSONError("payload", err)
	}
	if fields == nil {
		return Notification{}, invalid("payload is null, want a JSON object")
	}

	var n Notification
	var err error
	if n.ClientAccessToken, err = refStringField(fields, "clientAccessToken"); err != nil {
		return Notification{}, err
	}
	if err := checkToken(n.ClientAccessToken); err != nil {
		return Notification{}, err
	}
	if n.ClientMode, err = refStringField(fields, "clientMode"); err != nil {
		return Notification{}, err
	}
	if n.ClientMode != ModeDestination {
		return Notification{}, invalid("clientMode is %s, want %q", quoteShort(n.ClientMode), ModeDestination)
	}
	if n.Region, err = refStringField(fields, "region"); err != nil {
		return Notification{}, err
	}
	if !syntax.Name(n.Region, 1, 64, "._-") {
		return Notification{}, invalid("region %s is not a region name ([a-zA-Z0-9._-]{1,64})", quoteShort(n.Region))
	}
	raw, ok := fields["services"]
	if !ok || string(raw) == "null" {
		return Notification{}, invalid("services is missing")
	}
	var svcs []string
	if err := json.Unmarshal(raw, &svcs); err != nil {
		return Notification{}, refJSONError("services", err)
	}
	if len(svcs) == 0 || len(svcs) > MaxServices {
		return Notification{}, invalid("services has %d entries, want 1 to %d", len(svcs), MaxServices)
	}
	for i, s := range svcs {
		if !syntax.Name(s, 1, 128, ":_-") {
			return Notification{}, invalid("services[%d] %s is not a service identifier ([a-zA-Z0-9:_-]{1,128})", i, quoteShort(s))
		}
		for _, prev := range svcs[:i] {
			if prev == s {
				return Notification{}, invalid("services[%d] %q is a duplicate", i, s)
			}
		}
	}
	n.Services = svcs
	return n, nil
}

func refStringField(fields map[string]json.RawMessage, key string) (string, error) {
	raw, ok := fields[key]
	if !ok || string(raw) == "null" {
		return "", invalid("%s is missing", key)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", refJSONError(key, err)
	}
	if s == "" {
		return "", invalid("%s is empty", key)
	}
	return s, nil
}

func refJSONError(field string, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return invalid("%s is not valid JSON (syntax error at byte %d)", field, syn.Offset)
	case errors.As(err, &typ):
		want := typ.Type.String()
		switch want {
		case "map[string]json.RawMessage":
			want = "object"
		case "[]string":
			want = "array of strings"
		}
		return invalid("%s: got JSON %s, want %s", field, typ.Value, want)
	default:
		return invalid("%s is not valid JSON", field)
	}
}
