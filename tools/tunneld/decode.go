package tunneld

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// AWS JSON 1.1 member names are case-sensitive, and AWS ignores members it does not
// know. encoding/json folds case ({"TunnelId"} would fill tunnelId) and its errors
// name Go types, so requests are decoded member by member here: a member is known
// only by its exact name in the API, anything else is unknown and ignored, as AWS
// does, and a member of the wrong JSON type is a SerializationException naming the
// member as the API spells it. A required member left out is reported only once
// the whole body has decoded: AWS reports a body it cannot read before one that
// fails validation, and members are decoded in the order of their names, so a
// request always gets the same error.

// decodeRequest decodes the body of operation op. An empty body is an empty request;
// unknown members (a known name in another case is unknown) are ignored; a member of
// the wrong JSON type, trailing data or a body that is not one JSON object is a
// SerializationException; a required member that may be empty (a tag's value), left
// out or null, an InvalidRequestException, once the rest has decoded.
func decodeRequest(op string, body []byte) (any, error) {
	in, _, err := decodeRequestMembers(op, body)
	return in, err
}

// decodeRequestMembers is decodeRequest that also returns the paths of the members
// it ignored, sorted.
func decodeRequestMembers(op string, body []byte) (any, []string, error) {
	mk, ok := operations[op]
	if !ok {
		return nil, nil, &APIError{Type: ErrTypeUnknownOperation, Message: fmt.Sprintf("unknown operation %q", op)}
	}
	in := mk()
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return in, nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if err := d.Decode(&raw); err != nil {
		return nil, nil, serialization("%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, nil, serialization("data after the JSON object")
	}
	if trimmed[0] != '{' {
		return nil, nil, serialization("it must be a JSON object, got %s", jsonKind(trimmed))
	}
	var m members
	if err := decodeMembers(raw, reflect.ValueOf(in).Elem(), "", &m); err != nil {
		return nil, nil, err
	}
	if len(m.missing) > 0 {
		return nil, nil, invalid("%s is required", m.missing[0])
	}
	slices.Sort(m.unknown)
	return in, m.unknown, nil
}

// members collects the paths of the members a body's decoding ignored and of
// the required ones it lacked, in the order it met them.
type members struct {
	unknown, missing []string
}

func serialization(format string, args ...any) error {
	return &APIError{Type: ErrTypeSerialization, Message: "cannot decode the request body: " + fmt.Sprintf(format, args...)}
}

// decodeMembers decodes the JSON object raw into struct v, matching members to
// the fields' json names exactly. prefix is the path of v ("" at the top).
func decodeMembers(raw json.RawMessage, v reflect.Value, prefix string, m *members) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return typeError(prefix, v, raw)
	}
	t := v.Type()
	// In the order of their names, not the map's, which changes from one
	// call to the next: of two members of the wrong type, the same one is
	// named each time.
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		val := obj[name]
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		i := slices.IndexFunc(reflect.VisibleFields(t), func(f reflect.StructField) bool { return jsonName(f) == name })
		if i < 0 {
			m.unknown = append(m.unknown, path)
			continue
		}
		if err := decodeValue(val, v.Field(i), path, m); err != nil {
			return err
		}
	}
	// A required member that may be empty (a tag's value) cannot be told
	// missing from its zero value once decoded; the others are checked as
	// values (validate.go).
	for _, f := range reflect.VisibleFields(t) {
		name := jsonName(f)
		if val, ok := obj[name]; f.Tag.Get("aws") == "required" && (!ok || string(bytes.TrimSpace(val)) == "null") {
			if prefix != "" {
				name = prefix + "." + name
			}
			m.missing = append(m.missing, name)
		}
	}
	return nil
}

// decodeValue decodes raw into v, the field at path. null leaves v zero.
func decodeValue(raw json.RawMessage, v reflect.Value, path string, m *members) error {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		if err := decodeValue(raw, p.Elem(), path, m); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		if raw[0] != '{' {
			return typeError(path, v, raw)
		}
		return decodeMembers(raw, v, path, m)
	case reflect.Slice:
		var elems []json.RawMessage
		if raw[0] != '[' || json.Unmarshal(raw, &elems) != nil {
			return typeError(path, v, raw)
		}
		s := reflect.MakeSlice(v.Type(), len(elems), len(elems))
		for i, e := range elems {
			if err := decodeValue(e, s.Index(i), fmt.Sprintf("%s[%d]", path, i), m); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if err := json.Unmarshal(raw, v.Addr().Interface()); err != nil {
		return typeError(path, v, raw)
	}
	return nil
}

// typeError says that the member at path is not of the JSON type its field needs.
func typeError(path string, v reflect.Value, raw json.RawMessage) error {
	var want string
	switch v.Kind() {
	case reflect.String:
		want = "a string"
	case reflect.Int, reflect.Int32, reflect.Int64:
		want = "an integer"
	case reflect.Bool:
		want = "a boolean"
	case reflect.Slice:
		want = "a list"
	default:
		want = "an object"
	}
	got := jsonKind(raw)
	if got == "a number" && len(raw) <= 32 {
		got = "the number " + string(raw) // 0.5, 1e400: a number, but not one that fits
	}
	if path == "" {
		return serialization("it must be %s, got %s", want, got)
	}
	return serialization("%s must be %s, got %s", path, want, got)
}

// jsonKind names the JSON type of raw, a valid JSON value.
func jsonKind(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "a list"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// jsonName is the member name of field f.
func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}
