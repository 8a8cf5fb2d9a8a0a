package dataplane

import (
	"bytes"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// decoder decodes one raw frame at a time with the codec's FrameReader, so the
// fake applies the same rules the clients do.
type decoder struct {
	br bytes.Reader
	fr *tunnel.FrameReader
	m  tunnel.Message
}

func newDecoder() *decoder {
	d := new(decoder)
	d.fr = tunnel.NewFrameReader(&d.br)
	return d
}

// wireTypes are the wire types of the schema's fields 1–7 (spec §1.4).
var wireTypes = [...]protowire.Type{
	1: protowire.VarintType, // type
	2: protowire.VarintType, // streamId
	3: protowire.VarintType, // ignorable
	4: protowire.BytesType,  // payload
	5: protowire.BytesType,  // serviceId
	6: protowire.BytesType,  // availableServiceIds
	7: protowire.VarintType, // connectionId
}

// scanFields checks a frame body field by field, which the codec cannot do since it
// skips unknown fields as protobuf does: the service closes the WebSocket on any
// field outside 1–7 (spec §1.4) and, here, on a known field with the wrong wire
// type, and on a payload over tunnel.MaxPayload. It also returns the type and ignorable fields, which the codec does not
// report for a skipped ignorable message.
func scanFields(b []byte) (typ tunnel.Type, ignorable bool, err error) {
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return typ, ignorable, fmt.Errorf("malformed field tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		if num < 1 || int(num) >= len(wireTypes) {
			return typ, ignorable, fmt.Errorf("field %d is not in the schema (spec §1.4)", num)
		}
		if wt != wireTypes[num] {
			return typ, ignorable, fmt.Errorf("field %d has wire type %d, want %d", num, wt, wireTypes[num])
		}
		n = protowire.ConsumeFieldValue(num, wt, b)
		if n < 0 {
			return typ, ignorable, fmt.Errorf("malformed field %d: %v", num, protowire.ParseError(n))
		}
		switch num {
		case 1:
			v, _ := protowire.ConsumeVarint(b)
			typ = tunnel.Type(int32(v))
		case 3:
			v, _ := protowire.ConsumeVarint(b)
			ignorable = v != 0
		case 4:
			// Any message's, an unknown ignorable type's too (spec §1.5):
			// the codec does not look at a message it skips.
			if v, _ := protowire.ConsumeBytes(b); len(v) > tunnel.MaxPayload {
				return typ, ignorable, fmt.Errorf("payload of %d bytes exceeds %d", len(v), tunnel.MaxPayload)
			}
		}
		b = b[n:]
	}
	return typ, ignorable, nil
}
