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

var (
	// ErrText is returned for a text message, which is not part of the protocol.
	ErrText = errors.New("text WebSocket message")
	// ErrTooBig is returned for a message over Stream.Limit.
	ErrTooBig = errors.New("WebSocket message over the read limit")
)

// Stream concatenates the binary messages of WS.
type Stream struct {
	Ctx context.Context // bounds every message reader
	WS  *websocket.Conn
	// Limit is the largest message Read accepts; 0 means the connection's own read
	// limit alone. Read returns ErrTooBig for a longer message before it returns any
	// byte past Limit. It reads the byte past Limit to know, which coder/websocket's
	// own read limit lets through: the connection's limit must be at least Limit.
	Limit int64
	// EndMessage, if not nil, is called by Read once a message has been read to
	// its end, before Read waits for the next one, so that the caller learns that
	// what it has read so far is whole messages (within Limit). An error it
	// returns is returned by Read.
	EndMessage func() error

	r     io.Reader
	left  int64 // bytes the current message may still have, with a Limit
	ended bool  // a message ended and EndMessage has not been called for it
}

// InMessage reports whether a message is being read.
func (s *Stream) InMessage() bool { return s.r != nil }

func (s *Stream) Read(p []byte) (int, error) {
	for {
		if s.r == nil {
			if s.ended {
				// Here rather than at the end of the message: the bytes that came
				// with io.EOF are the caller's before the message is over.
				s.ended = false
				if s.EndMessage != nil {
					if err := s.EndMessage(); err != nil {
						return 0, err
					}
				}
			}
			typ, r, err := s.WS.Reader(s.Ctx)
			if err != nil {
				return 0, err
			}
			if typ != websocket.MessageBinary {
				return 0, ErrText
			}
			s.r, s.left = r, s.Limit
		}
		if s.Limit > 0 && int64(len(p)) > s.left {
			p = p[:s.left+1] // one more byte tells whether the message goes on
		}
		n, err := s.r.Read(p)
		if s.Limit > 0 {
			if int64(n) > s.left {
				return 0, ErrTooBig
			}
			s.left -= int64(n)
		}
		if err == io.EOF {
			s.r, s.ended = nil, true
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}
