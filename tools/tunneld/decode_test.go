package tunneld

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzDecodeRequest checks that the control-plane request decoder never panics, that
// it fails only with SerializationException (or UnknownOperationException, or
// InvalidRequestException for a required member left out), and that
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
	f.Fuzz(func(t *testing.T, opIndex uint8, body []byte) {
		op := ops[int(opIndex)%len(ops)]
		in, err := decodeRequest(op, body)
		if err != nil {
			var ae *APIError
			if !errors.As(err, &ae) || ae.Type != ErrTypeSerialization && (ae.Type != ErrTypeInvalidRequest || !strings.HasSuffix(ae.Message, " is required")) {
				t.Fatalf("decodeRequest(%s, %q) = %v, want a SerializationException or a missing member", op, body, err)
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

func TestDecodeRequestUnknownOperation(t *testing.T) {
	_, err := decodeRequest("DeleteTunnel", []byte(`{}`))
	var ae *APIError
	if !errors.As(err, &ae) || ae.Type != ErrTypeUnknownOperation {
		t.Errorf("decodeRequest(DeleteTunnel) = %v, want UnknownOperationException", err)
	}
}
