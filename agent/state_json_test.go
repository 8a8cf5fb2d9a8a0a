//go:build !goexperiment.jsonv2

// The differential tests compare with encoding/json as Go 1.26 has it, which
// the device build keeps (agent/cmd/porthole/device.goexperiment: nojsonv2).
// Go 1.27's encoding/json, a layer over encoding/json/v2, differs in details
// these tests check word for word (syntax error offsets, messages, escapes in
// time strings; docs/size.md): there, run them with GOEXPERIMENT=nojsonv2.

package agent

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestSavedTunnelDecodeMatchesJSON(t *testing.T) {
	for _, in := range savedTunnelFiles {
		t.Run(in, func(t *testing.T) { decodesAsJSON(t, []byte(in)) })
	}
}

// FuzzSavedTunnelDecode is the differential test of the state file decoder:
// savedTunnel.decode refuses what json.Unmarshal refuses and decodes the rest
// to the same savedTunnel.
func FuzzSavedTunnelDecode(f *testing.F) {
	for _, in := range savedTunnelFiles {
		f.Add([]byte(in))
	}
	f.Fuzz(decodesAsJSON)
}

func decodesAsJSON(t *testing.T, in []byte) {
	var got, want savedTunnel
	err := got.decode(in)
	wantErr := json.Unmarshal(in, &want)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("decode(%q) error = %v, want %v", in, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("decode(%q) = %#v, want %#v", in, got, want)
	}
}
