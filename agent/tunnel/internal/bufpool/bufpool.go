// Package bufpool recycles the copies that carry tunnel data from a reader that
// reuses its buffer to a writer in another goroutine. Allocating each copy made
// a transfer allocate its whole size again, and collecting that garbage was a
// good part of the CPU of the agent and of tunneld (docs/benchmarks.md).
package bufpool

import "sync"

// Pool copies byte slices of Min to Size octets into recycled buffers of
// capacity Size; others are copied to size and left to the garbage collector.
type Pool struct {
	size, min int
	p         sync.Pool
}

// New returns a pool of size-octet buffers for copies of at least min octets.
// It allocates nothing, so that a package-level pool needs no code run at
// start: the compiler lays the Pool out in the binary's data (agent/tunnel
// has no init function to run; agent/tunnel/internal/check says why that
// matters).
func New(size, min int) *Pool { return &Pool{size: size, min: min} }

// get is a pooled buffer, or a new one when the pool has none.
func (p *Pool) get() *[]byte {
	if b, ok := p.p.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, p.size)
	return &b
}

// Copy returns a copy of b that does not alias it.
func (p *Pool) Copy(b []byte) []byte {
	c := p.Make(len(b))
	copy(c, b)
	return c
}

// Make returns a buffer of n octets, to be filled and released like a copy:
// pooled for Min to Size octets, else made to size.
func (p *Pool) Make(n int) []byte {
	if n < p.min || n > p.size {
		return make([]byte, n)
	}
	return (*p.get())[:n]
}

// Get returns an empty pooled buffer of capacity Size, to be appended to and
// released like a copy.
func (p *Pool) Get() []byte { return (*p.get())[:0] }

// Release returns a copy made by Copy once it has been used; b must not be used
// afterwards. Copies that were not pooled are ignored: only pooled buffers have
// capacity Size (a copy to size below Min is smaller, one above Size larger).
func (p *Pool) Release(b []byte) {
	if cap(b) == p.size {
		b = b[:p.size]
		p.p.Put(&b)
	}
}
