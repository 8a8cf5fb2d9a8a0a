package tunneld

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzDecodeRequest checks that the control-plane request decoder never panics, that
// it fails only with SerializationException (or UnknownOperationException, or
// InvalidRequestException for a required member left out, and then only when the
// rest decodes: the body with every such member given decodes), and that
// what it accepts survives a round trip through JSON. Validation (tags and tag
// keys included) must not panic either.
func FuzzDecodeRequest(f *testing.F) {
	ops := make([]string, 0, len(operations))
	for op := range operations {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	seeds := []string{
		``, `{}`, `null`, `[]`, `{"x":1}`, `{} {}`,
		`{"description":"d","tags":[{"key":"k","value":"v"}],"destinationConfig":{"thingName":"dev1","services":["SSH","WEB"]},"timeoutConfig":{"maxLifetimeTimeoutMinutes":30}}`,
		`{"tunnelId":"abc","delete":true}`,
		`{"thingName":"dev1","maxResults":5,"nextToken":"10"}`,
		`{"tunnelId":"abc","clientMode":"ALL","destinationConfig":{"services":["SSH"]}}`,
		`{"resourceArn":"arn:aws:iot:us-east-1:123456789012:tunnel/abc","tagKeys":["k"]}`,
		`{"resourceArn":"arn:aws:iot:us-east-1:123456789012:tunnel/abc","tags":[{"key":"a","value":"1"},{"key":"a","value":"2"}]}`,
		`{"resourceArn":"arn:aws:iot:us-east-1:123456789012:tunnel/abc","tags":[{"key":"AwS:x","value":""}]}`,
		`{"tags":[{"key":"k"},{"key":"l","value":null}]}`,
		`{"timeoutConfig":{"maxLifetimeTimeoutMinutes":1e400}}`,
		`{"destinationConfig":{"services":"SSH"}}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	f.Add(uint8(slices.Index(ops, "ListTunnels")), []byte(`{"maxResults":-0}`))
	f.Add(uint8(slices.Index(ops, "OpenTunnel")), []byte(`{"timeoutConfig":{"maxLifetimeTimeoutMinutes":-0}}`))
	f.Add(uint8(slices.Index(ops, "OpenTunnel")), []byte(`{"tags":[{"key":"d"}],"description":5}`))
	f.Add(uint8(slices.Index(ops, "TagResource")), []byte(`{"tags":[{"key":"c"},{"key":"d","value":null}],"resourceArn":"x"}`))
	f.Fuzz(func(t *testing.T, opIndex uint8, body []byte) {
		op := ops[int(opIndex)%len(ops)]
		in, err := decodeRequest(op, body)
		if err != nil {
			var ae *APIError
			if !errors.As(err, &ae) || ae.Type != ErrTypeSerialization && (ae.Type != ErrTypeInvalidRequest || !strings.HasSuffix(ae.Message, " is required")) {
				t.Fatalf("decodeRequest(%s, %q) = %v, want a SerializationException or a missing member", op, body, err)
			}
			if ae.Type == ErrTypeInvalidRequest {
				// Given the members it lacks, one at a time, the body
				// decodes: a member of the wrong type is named first.
				given := body
				for range 1000 {
					path := strings.TrimSuffix(ae.Message, " is required")
					if given = giveMember(t, given, path); given == nil {
						t.Fatalf("decodeRequest(%s, %q) = %v, a member not in the body", op, body, err)
					}
					if _, err = decodeRequest(op, given); err == nil {
						break
					}
					if !errors.As(err, &ae) || ae.Type != ErrTypeInvalidRequest || !strings.HasSuffix(ae.Message, " is required") {
						t.Fatalf("decodeRequest(%s, %q) = a missing member, but with it given, %q: %v", op, body, given, err)
					}
				}
				if err != nil {
					t.Fatalf("decodeRequest(%s, %q): still %v with every missing member given", op, body, err)
				}
			}
			return
		}
		if checkGivenEmpty(op, body) == nil {
			// A minimum-1 number that passed was not given as a zero: its
			// zero means "not given" from here on.
			switch v := in.(type) {
			case *ListTunnelsInput:
				if v.MaxResults == 0 && memberGiven(body, "maxResults") {
					t.Fatalf("ListTunnels %q: maxResults given, decoded as 0, not refused", body)
				}
			case *OpenTunnelInput:
				if v.TimeoutConfig != nil && v.TimeoutConfig.MaxLifetimeTimeoutMinutes == 0 && memberGiven(body, "timeoutConfig", "maxLifetimeTimeoutMinutes") {
					t.Fatalf("OpenTunnel %q: maxLifetimeTimeoutMinutes given, decoded as 0, not refused", body)
				}
			}
		}
		switch v := in.(type) {
		case *OpenTunnelInput:
			_ = v.validate()
		case *RotateTunnelAccessTokenInput:
			_ = v.validate()
		case *ListTunnelsInput:
			_ = v.validate()
		case *TagResourceInput:
			_ = checkTags(v.Tags, true)
		case *UntagResourceInput:
			_ = checkTagKeys(v.TagKeys)
		}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatalf("re-encoding %#v: %v", in, err)
		}
		again, err := decodeRequest(op, b)
		if err != nil {
			t.Fatalf("decoding the re-encoded %s: %v", b, err)
		}
		if !reflect.DeepEqual(normalize(in), normalize(again)) {
			t.Fatalf("round trip of %q: %#v, then %#v", body, in, again)
		}
	})
}

// giveMember returns the JSON object body with the string member at path
// (tags[1].value) set to "", or nil if path's parent is not in it.
func giveMember(t *testing.T, body []byte, path string) []byte {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber() // 1e400 stays as it is
	var doc any
	if err := d.Decode(&doc); err != nil {
		t.Fatalf("%q decoded as a JSON object, not now: %v", body, err)
	}
	// tags[1].value: tags, [1], value.
	steps := strings.Split(strings.ReplaceAll(path, "[", ".["), ".")
	parent := doc
	for _, step := range steps[:len(steps)-1] {
		if index, ok := strings.CutPrefix(step, "["); ok {
			i, err := strconv.Atoi(strings.TrimSuffix(index, "]"))
			if err != nil {
				t.Fatalf("path %q: %v", path, err)
			}
			list, ok := parent.([]any)
			if !ok || i >= len(list) {
				return nil
			}
			parent = list[i]
			continue
		}
		obj, ok := parent.(map[string]any)
		if !ok {
			return nil
		}
		parent = obj[step]
	}
	obj, ok := parent.(map[string]any)
	if !ok {
		return nil
	}
	obj[steps[len(steps)-1]] = ""
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// memberGiven reports whether the JSON object body has the member at path,
// other than null.
func memberGiven(body []byte, path ...string) bool {
	raw := json.RawMessage(body)
	for _, name := range path {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return false
		}
		raw = obj[name]
	}
	return raw != nil && string(raw) != "null"
}

// normalize makes empty and nil slices equal, which JSON does not distinguish.
func normalize(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestDecodeRequestErrorOrder: members were decoded in the random order of a
// map, and a tag without its value was refused as soon as it was met, so a body
// with one and a member of the wrong type got InvalidRequestException or
// SerializationException at random; AWS reports the body it cannot read first.
// Of two members of the wrong type, the same one is named each time.
func TestDecodeRequestErrorOrder(t *testing.T) {
	for _, tc := range []struct {
		op, body, want string
	}{
		{"OpenTunnel", `{"tags":[{"key":"d"}],"description":5}`,
			"SerializationException: cannot decode the request body: description must be a string, got the number 5"},
		{"TagResource", `{"tags":[{"key":"d"}],"resourceArn":5}`,
			"SerializationException: cannot decode the request body: resourceArn must be a string, got the number 5"},
		{"TagResource", `{"tags":[{"key":"c","value":"1"},{"key":"d"}],"resourceArn":5}`,
			"SerializationException: cannot decode the request body: resourceArn must be a string, got the number 5"},
		{"OpenTunnel", `{"tags":7,"timeoutConfig":[],"description":5,"destinationConfig":"x"}`,
			"SerializationException: cannot decode the request body: description must be a string, got the number 5"},
		{"TagResource", `{"tags":[{"key":"c"},{"key":"d","value":null}],"resourceArn":"arn:aws:iot:us-east-1:123456789012:tunnel/abc"}`,
			"InvalidRequestException: tags[0].value is required"},
	} {
		for range 50 {
			_, err := decodeRequest(tc.op, []byte(tc.body))
			var ae *APIError
			if !errors.As(err, &ae) || ae.Type+": "+ae.Message != tc.want {
				t.Errorf("decodeRequest(%s, %s) = %v, want %s", tc.op, tc.body, err, tc.want)
				break
			}
		}
	}
}

func TestDecodeRequestUnknownOperation(t *testing.T) {
	_, err := decodeRequest("DeleteTunnel", []byte(`{}`))
	var ae *APIError
	if !errors.As(err, &ae) || ae.Type != ErrTypeUnknownOperation {
		t.Errorf("decodeRequest(DeleteTunnel) = %v, want UnknownOperationException", err)
	}
}
