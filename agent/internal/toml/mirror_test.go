package toml_test

import (
	"reflect"
	"testing"

	"github.com/porthole-iot/porthole/agent"
	"github.com/porthole-iot/porthole/agent/internal/toml"
)

// TestMirrorHasConfigShape checks that the struct the decoder's tests and its
// differential fuzz targets decode into has every key of agent.Config, with a
// field of the same kind, so that they test what the agent reads. The mirror
// may have more (its extra table).
func TestMirrorHasConfigShape(t *testing.T) {
	var walk func(path string, want, got reflect.Type)
	walk = func(path string, want, got reflect.Type) {
		for i := range want.NumField() {
			wf := want.Field(i)
			key := wf.Tag.Get("toml")
			if key == "" {
				continue
			}
			gf, ok := fieldByKey(got, key)
			if !ok {
				t.Errorf("the mirror has no key %s%s", path, key)
				continue
			}
			if shape(wf.Type) != shape(gf.Type) {
				t.Errorf("key %s%s: agent.Config has %s, the mirror %s", path, key, wf.Type, gf.Type)
				continue
			}
			if wf.Type.Kind() == reflect.Struct && shape(wf.Type) == "table" {
				walk(path+key+".", wf.Type, gf.Type)
			}
		}
	}
	walk("", reflect.TypeFor[agent.Config](), reflect.TypeFor[toml.Mirror]())
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("toml") == key {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

// shape is what a field decodes from: a duration-like text type counts as
// itself, whatever its name.
func shape(t reflect.Type) string {
	if reflect.PointerTo(t).Implements(reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()) {
		return "text " + t.Kind().String()
	}
	if t.Kind() == reflect.Struct {
		return "table"
	}
	return t.String()
}
