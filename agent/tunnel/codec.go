package tunnel

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The codec encodes and decodes Message with protowire instead of the generated
// protobuf type, which would link the ~1.5 MB reflection runtime into the device
// binary (PLATFORM.md). codec_test.go cross-checks both, field by field, including over
// the fuzz corpus; decoding follows protobuf-go's rules: unknown fields and known
// fields with an unexpected wire type are skipped, the last value of a scalar field
// wins, strings must be valid UTF-8.

// Field numbers of the schema (spec §1.4).
const (
	fieldType                protowire.Number = 1
	fieldStreamID            protowire.Number = 2
	fieldIgnorable           protowire.Number = 3
	fieldPayload             protowire.Number = 4
	fieldServiceID           protowire.Number = 5
	fieldAvailableServiceIDs protowire.Number = 6
	fieldConnectionID        protowire.Number = 7
)

// ErrProtocol is wrapped by every error that reports a malformed or invalid frame.
var ErrProtocol = errors.New("tunnel: protocol error")

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// marshalSize is the encoded size of m, without the length prefix.
func (m *Message) marshalSize() int {
	n := 0
	if m.Type != 0 {
		n += protowire.SizeTag(fieldType) + protowire.SizeVarint(uint64(int64(m.Type)))
	}
	if m.StreamID != 0 {
		n += protowire.SizeTag(fieldStreamID) + protowire.SizeVarint(uint64(int64(m.StreamID)))
	}
	if m.Ignorable {
		n += protowire.SizeTag(fieldIgnorable) + 1
	}
	if len(m.Payload) > 0 {
		n += protowire.SizeTag(fieldPayload) + protowire.SizeBytes(len(m.Payload))
	}
	if m.ServiceID != "" {
		n += protowire.SizeTag(fieldServiceID) + protowire.SizeBytes(len(m.ServiceID))
	}
	for _, s := range m.AvailableServiceIDs {
		n += protowire.SizeTag(fieldAvailableServiceIDs) + protowire.SizeBytes(len(s))
	}
	if m.ConnectionID != 0 {
		n += protowire.SizeTag(fieldConnectionID) + protowire.SizeVarint(uint64(m.ConnectionID))
	}
	return n
}

// appendMarshal appends the protobuf encoding of m to b. Default values are omitted
// and no field outside 1–7 is ever written.
func (m *Message) appendMarshal(b []byte) []byte {
	if m.Type != 0 {
		b = protowire.AppendTag(b, fieldType, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(m.Type)))
	}
	if m.StreamID != 0 {
		b = protowire.AppendTag(b, fieldStreamID, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(m.StreamID)))
	}
	if m.Ignorable {
		b = protowire.AppendTag(b, fieldIgnorable, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if len(m.Payload) > 0 {
		b = protowire.AppendTag(b, fieldPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Payload)
	}
	if m.ServiceID != "" {
		b = protowire.AppendTag(b, fieldServiceID, protowire.BytesType)
		b = protowire.AppendString(b, m.ServiceID)
	}
	for _, s := range m.AvailableServiceIDs {
		b = protowire.AppendTag(b, fieldAvailableServiceIDs, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	if m.ConnectionID != 0 {
		b = protowire.AppendTag(b, fieldConnectionID, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.ConnectionID))
	}
	return b
}

// checkEncodable reports why m must not be sent: type 0, an oversized payload or
// message, a stream message without stream id, or a string that is not UTF-8.
func (m *Message) checkEncodable() error {
	if m.Type == TypeUnknown {
		return protocolErrorf("message type 0 (UNKNOWN) cannot be sent")
	}
	if len(m.Payload) > MaxPayload {
		return protocolErrorf("payload of %d bytes exceeds %d", len(m.Payload), MaxPayload)
	}
	if m.Type.streamScoped() && m.StreamID == 0 {
		return protocolErrorf("%v with stream id 0", m.Type)
	}
	if !utf8.ValidString(m.ServiceID) {
		return protocolErrorf("service id is not valid UTF-8")
	}
	for _, s := range m.AvailableServiceIDs {
		if !utf8.ValidString(s) {
			return protocolErrorf("available service id is not valid UTF-8")
		}
	}
	if n := m.marshalSize(); n > MaxMessageSize {
		return protocolErrorf("message of %d bytes exceeds %d", n, MaxMessageSize)
	}
	return nil
}

// AppendFrame appends m as one tunnel frame (2-byte big-endian length, then the
// protobuf body) to b. It refuses messages the service would reject.
func AppendFrame(b []byte, m *Message) ([]byte, error) {
	if err := m.checkEncodable(); err != nil {
		return b, err
	}
	n := m.marshalSize()
	b = append(b, byte(n>>8), byte(n))
	return m.appendMarshal(b), nil
}

// unmarshal decodes a protobuf body into m, replacing its contents. Payload aliases
// b. It reports wire-level damage only; validate checks the protocol rules.
func (m *Message) unmarshal(b []byte) error {
	*m = Message{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protocolErrorf("bad field tag: %v", protowire.ParseError(n))
		}
		if !num.IsValid() {
			return protocolErrorf("bad field tag: field number %d out of range", num)
		}
		b = b[n:]
		known := true
		switch {
		case (num == fieldType || num == fieldStreamID || num == fieldIgnorable || num == fieldConnectionID) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protocolErrorf("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldType:
				m.Type = Type(int32(v))
			case fieldStreamID:
				m.StreamID = int32(v)
			case fieldIgnorable:
				m.Ignorable = v != 0
			case fieldConnectionID:
				m.ConnectionID = uint32(v)
			}
		case (num == fieldPayload || num == fieldServiceID || num == fieldAvailableServiceIDs) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protocolErrorf("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldPayload:
				m.Payload = v
			case fieldServiceID:
				if !utf8.Valid(v) {
					return protocolErrorf("service id is not valid UTF-8")
				}
				m.ServiceID = string(v)
			case fieldAvailableServiceIDs:
				if !utf8.Valid(v) {
					return protocolErrorf("available service id is not valid UTF-8")
				}
				m.AvailableServiceIDs = append(m.AvailableServiceIDs, string(v))
			}
		default:
			known = false
		}
		if !known {
			// Unknown field, or a known one with another wire type: skip it, as
			// protobuf-go does.
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protocolErrorf("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if len(m.Payload) == 0 {
		m.Payload = nil
	}
	return nil
}

// validate applies the receiver's rules of spec §1.5/§1.6 to a decoded message.
// It returns errIgnore for an unknown type marked ignorable.
func (m *Message) validate() error {
	switch {
	case m.Type == TypeUnknown:
		return protocolErrorf("message type 0 (UNKNOWN)")
	case !m.Type.known():
		if m.Ignorable {
			return errIgnore
		}
		return protocolErrorf("unknown message type %d, not ignorable", int32(m.Type))
	case m.Type.streamScoped() && m.StreamID == 0:
		return &zeroStreamError{typ: m.Type}
	case len(m.Payload) > MaxPayload:
		return protocolErrorf("payload of %d bytes exceeds %d", len(m.Payload), MaxPayload)
	}
	return nil
}

// zeroStreamError is a stream message with stream id 0 (spec §1.5). The service
// closes a client's WebSocket for one (dataplane); a client drops it as stale
// (spec §3.2, as both reference clients do) and reads on: the only sender it has
// is the service, whose own STREAM_RESETs (on a peer's replacement) have fields
// the spec only infers, and tearing the session down for one would end every
// other stream of the tunnel with it.
type zeroStreamError struct{ typ Type }

func (e *zeroStreamError) Error() string {
	return fmt.Sprintf("%v: %v with stream id 0", ErrProtocol, e.typ)
}

func (e *zeroStreamError) Unwrap() error { return ErrProtocol }

// errIgnore marks a frame that is valid but must be dropped (unknown + ignorable).
var errIgnore = errors.New("tunnel: ignorable message")
