// Package wsstream reads the binary messages of a coder/websocket connection as one
// byte stream, the way tunnel frames travel (spec §1.2). It serves the service side
// of the data plane and its tests; the device's client has its own WebSocket code.
package wsstream

import (
	"context"
	"errors"
	"io"

	"github.com/coder/websocket"
)

// ErrText is returned for a text message, which is not part of the protocol.
var ErrText = errors.New("text WebSocket message")

// Stream concatenates the binary messages of WS.
type Stream struct {
	Ctx context.Context // bounds every message reader
	WS  *websocket.Conn
	r   io.Reader
}

// InMessage reports whether a message is being read.
func (s *Stream) InMessage() bool { return s.r != nil }

func (s *Stream) Read(p []byte) (int, error) {
	for {
		if s.r == nil {
			typ, r, err := s.WS.Reader(s.Ctx)
			if err != nil {
				return 0, err
			}
			if typ != websocket.MessageBinary {
				return 0, ErrText
			}
			s.r = r
		}
		n, err := s.r.Read(p)
		if err == io.EOF {
			s.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}
