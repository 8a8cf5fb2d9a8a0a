package tunnel

import (
	"errors"
	"fmt"
	"io"
)

// FrameReader reads tunnel frames from the byte stream formed by concatenating the
// WebSocket messages of one connection (spec §1.2): a frame may straddle messages and a
// message may hold several frames. It validates each frame (spec §1.5) and drops
// unknown ignorable types.
type FrameReader struct {
	r   io.Reader
	hdr [lengthPrefixSize]byte
	buf []byte
}

// NewFrameReader returns a FrameReader that reads from r.
func NewFrameReader(r io.Reader) *FrameReader { return &FrameReader{r: r} }

// Next decodes the next frame into m. m.Payload aliases an internal buffer that is
// reused by the next call. At a clean end of the stream between frames it returns
// io.EOF; a stream that ends inside a frame gives io.ErrUnexpectedEOF. Bad frames give
// an error wrapping ErrProtocol.
func (fr *FrameReader) Next(m *Message) error {
	for {
		if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
			return err
		}
		n := int(fr.hdr[0])<<8 | int(fr.hdr[1])
		if cap(fr.buf) < n {
			fr.buf = make([]byte, n, max(n, 4096))
		}
		body := fr.buf[:n]
		if _, err := io.ReadFull(fr.r, body); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("reading %d-byte frame: %w", n, err)
		}
		if err := m.unmarshal(body); err != nil {
			return err
		}
		switch err := m.validate(); err {
		case nil:
			return nil
		case errIgnore:
			continue
		default:
			return err
		}
	}
}
