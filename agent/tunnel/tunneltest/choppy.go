package tunneltest

import (
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// Choppy cuts reads and writes at random sizes and stalls now and then, for
// tests that push data through a path in pieces of other sizes than its own: a
// buffer kept past the next read, or handed to a writer and reused before that
// writer is done with it, only shows so.
type Choppy struct{ rng *rand.Rand }

// NewChoppy returns a Choppy whose sizes and stalls follow seed.
func NewChoppy(seed uint64) *Choppy {
	return &Choppy{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Piece is a size from 1 up to a limit drawn from 16 B, 512 B, 8 KiB and 96 KiB.
func (c *Choppy) Piece() int {
	return 1 + c.rng.IntN([...]int{16, 512, 8 << 10, 96 << 10}[c.rng.IntN(4)])
}

// Stall sleeps for up to 3 ms one time in eight.
func (c *Choppy) Stall() {
	if c.rng.IntN(8) == 0 {
		time.Sleep(time.Duration(c.rng.IntN(3000)) * time.Microsecond)
	}
}

// Write writes b to w in pieces, stalling between them.
func (c *Choppy) Write(w io.Writer, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), c.Piece())
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		c.Stall()
	}
	return nil
}

// ReadFull fills b from r in pieces, stalling between them; the read buffer
// is reused and scribbled over between reads, so that a reader that kept it
// would see garbage.
func (c *Choppy) ReadFull(r io.Reader, b []byte) error {
	buf := make([]byte, 96<<10)
	for got := 0; got < len(b); {
		p := buf[:min(c.Piece(), len(b)-got)]
		n, err := r.Read(p)
		copy(b[got:], p[:n])
		got += n
		for i := range p[:n] {
			p[i] = 0xa5
		}
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", got, len(b), err)
		}
		c.Stall()
	}
	return nil
}
