package dataplane

import (
	"bytes"
	"errors"
	"testing"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

func TestScanFields(t *testing.T) {
	tests := []struct {
		name    string
		body    []byte
		typ     tunnel.Type
		ign     bool
		wantErr string
	}{
		{"empty", nil, 0, false, ""},
		{"all fields", bytes.Join([][]byte{varintField(1, 1), varintField(2, 5), varintField(3, 1), bytesField(4, []byte("p")),
			bytesField(5, []byte("SSH")), bytesField(6, []byte("A")), bytesField(6, []byte("B")), varintField(7, 2)}, nil), 1, true, ""},
		{"last type wins", bytes.Join([][]byte{varintField(1, 1), varintField(1, 3)}, nil), 3, false, ""},
		{"field 8", varintField(8, 1), 0, false, "field 8 is not in the schema"},
		{"field 0", []byte{0x00, 0x01}, 0, false, "malformed field tag"},
		{"payload as varint", varintField(4, 1), 0, false, "field 4 has wire type 0, want 2"},
		{"truncated bytes", []byte{0x22, 0x05, 'a'}, 0, false, "malformed field 4"},
		{"truncated varint", []byte{0x08, 0x80}, 0, false, "malformed field 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			typ, ign, err := scanFields(tc.body)
			if tc.wantErr != "" {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.wantErr)) {
					t.Errorf("scanFields(%x) = %v, want error %q", tc.body, err, tc.wantErr)
				}
				return
			}
			if err != nil || typ != tc.typ || ign != tc.ign {
				t.Errorf("scanFields(%x) = %v, %v, %v; want %v, %v, nil", tc.body, typ, ign, err, tc.typ, tc.ign)
			}
		})
	}
}

// FuzzScanFields checks that scanFields never accepts a body the codec finds
// malformed, and that what both accept survives a round trip through AppendFrame.
func FuzzScanFields(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Join([][]byte{varintField(1, 1), varintField(2, 1), bytesField(4, []byte("x")), bytesField(5, []byte("SSH"))}, nil))
	f.Add(bytes.Join([][]byte{varintField(1, 5), bytesField(6, []byte("SSH")), bytesField(6, []byte("WEB"))}, nil))
	f.Add(bytes.Join([][]byte{varintField(3, 1), varintField(1, 42)}, nil))
	f.Add(varintField(9, 1))
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > tunnel.MaxMessageSize {
			return
		}
		typ, _, scanErr := scanFields(body)
		d := newDecoder()
		d.br.Reset(append([]byte{byte(len(body) >> 8), byte(len(body))}, body...))
		err := d.fr.Next(&d.m)
		if scanErr != nil || err != nil {
			return
		}
		if d.m.Type != typ {
			t.Fatalf("scanFields type %v, codec %v", typ, d.m.Type)
		}
		b, err := tunnel.AppendFrame(nil, &d.m)
		if err != nil {
			if errors.Is(err, tunnel.ErrProtocol) {
				return // valid to receive, refused to send (e.g. a non-UTF-8 service id)
			}
			t.Fatal(err)
		}
		if typ2, _, err := scanFields(b[2:]); err != nil || typ2 != typ {
			t.Fatalf("re-encoded %v: scanFields = %v, %v", &d.m, typ2, err)
		}
	})
}
