package tunnel

import (
	"fmt"
	"log/slog"
	"strconv"
)

// Type is Message.Type of the wire schema (spec §1.4).
type Type int32

// Message types. Values are the wire contract.
const (
	TypeUnknown         Type = 0 // invalid on the wire
	TypeData            Type = 1
	TypeStreamStart     Type = 2 // source → destination only
	TypeStreamReset     Type = 3
	TypeSessionReset    Type = 4 // service only
	TypeServiceIDs      Type = 5 // service only (V2+)
	TypeConnectionStart Type = 6 // V3, source → destination
	TypeConnectionReset Type = 7 // V3
)

var typeNames = [...]string{"UNKNOWN", "DATA", "STREAM_START", "STREAM_RESET", "SESSION_RESET", "SERVICE_IDS", "CONNECTION_START", "CONNECTION_RESET"}

func (t Type) String() string {
	if t >= 0 && int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// known reports whether t is one of the types this package understands.
func (t Type) known() bool { return t > TypeUnknown && t <= TypeConnectionReset }

// streamScoped reports whether messages of type t belong to a stream and so must
// carry a non-zero stream id (spec §1.5).
func (t Type) streamScoped() bool {
	switch t {
	case TypeData, TypeStreamStart, TypeStreamReset, TypeConnectionStart, TypeConnectionReset:
		return true
	}
	return false
}

// Message is one tunnel frame's body, field for field the protobuf Message of
// spec §1.4. The zero value of each field is "absent" (proto3).
type Message struct {
	Type                Type
	StreamID            int32
	Ignorable           bool
	Payload             []byte
	ServiceID           string
	AvailableServiceIDs []string
	ConnectionID        uint32
}

// Size limits of the protocol (spec §1.3).
const (
	// MaxPayload is the largest DATA payload either side may send.
	MaxPayload = 64512
	// MaxMessageSize is the largest serialized Message: the 2-byte prefix's range.
	MaxMessageSize = 65535
	// MaxWebSocketMessage is the read limit for one WebSocket message, 2 × (65536 + 2).
	MaxWebSocketMessage = 131076
	// lengthPrefixSize is the size of a frame's big-endian length prefix.
	lengthPrefixSize = 2
)

func (m *Message) String() string {
	s := fmt.Sprintf("%v stream=%d", m.Type, m.StreamID)
	if m.ServiceID != "" {
		s += " service=" + loggedName(m.ServiceID)
	}
	if m.ConnectionID != 0 {
		s += " conn=" + strconv.FormatUint(uint64(m.ConnectionID), 10)
	}
	if len(m.Payload) > 0 {
		s += " payload=" + strconv.Itoa(len(m.Payload))
	}
	if len(m.AvailableServiceIDs) > 0 {
		s += fmt.Sprintf(" services=%q", loggedServices(m.AvailableServiceIDs))
	}
	if m.Ignorable {
		s += " ignorable"
	}
	return s
}

// LogValue is the frame as String has it, in every log format: a JSON
// handler would otherwise marshal the struct, the stream's data (Payload)
// with it, and a frame's identifiers uncut.
func (m *Message) LogValue() slog.Value { return slog.StringValue(m.String()) }
