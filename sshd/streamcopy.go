package sshd

// The file's name sorts after limits.go on purpose: go build compiles a
// package's files in name order and the linker lays their code out in that
// order, and the server's start-time code (accounts.go to limits.go) ends a
// few KB before a 64 KiB window that an idle agent does not touch (make
// idle-layout). Code that runs only with a connection, as the stream copies here,
// belongs after it (docs/size.md, "Thirty-fifth round").

import (
	"io"
	"sync"

	gossh "golang.org/x/crypto/ssh"
)

// Sizes of a copy's read buffer: quietRead while the source is quiet, busyRead
// (pooled) while reads fill the small one.
const (
	quietRead = 2 << 10
	busyRead  = 32 << 10
)

var busyBuffers = sync.Pool{New: func() any { b := make([]byte, busyRead); return &b }}

// readBuffer is the read buffer of one copy loop. Most of a session's streams are
// quiet most of the time (a shell waiting for a key, stderr, a forwarded
// connection at rest), and each is a goroutine blocked in Read on its buffer: ten
// sessions with io.Copy's 32 KiB per direction held ~1 MiB of the device's memory
// while doing nothing. A read that fills the small buffer switches to a pooled
// large one; a short read while busy gives it back.
type readBuffer struct {
	small []byte
	big   *[]byte
}

func newReadBuffer() *readBuffer { return &readBuffer{small: make([]byte, quietRead)} }

// buf is the buffer for the next read.
func (r *readBuffer) buf() []byte {
	if r.big != nil {
		return *r.big
	}
	return r.small
}

// adapt picks the buffer for the next read after a read of n octets.
func (r *readBuffer) adapt(n int) {
	switch {
	case r.big == nil && n == len(r.small):
		r.big = busyBuffers.Get().(*[]byte)
	case r.big != nil && n < quietRead:
		r.release()
	}
}

// release returns the pooled buffer, if it holds one.
func (r *readBuffer) release() {
	if r.big != nil {
		busyBuffers.Put(r.big)
		r.big = nil
	}
}

// copyStream copies src to dst until EOF or an error, as io.Copy does, with a
// readBuffer instead of io.Copy's 32 KiB.
func copyStream(dst io.Writer, src io.Reader) (written int64, err error) {
	rb := newReadBuffer()
	defer rb.release()
	for {
		n, rerr := src.Read(rb.buf())
		if n > 0 {
			m, werr := dst.Write(rb.buf()[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			if m < n {
				return written, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
		rb.adapt(n)
	}
}

// discardExtended reads and drops, until the channel ends, the extended data
// (stderr) the client sends on ch: no program of the server's reads it, and
// x/crypto/ssh keeps every packet it has not read as an allocation of its own.
// A client that sent its 2 MiB window as 1-byte packets of it to a program
// reading only its stdin made the agent hold ~110 MiB; read, the window goes
// back to the client as for data a program reads. (Data to a program that
// does not read its stdin is held the same way, and nothing here can bound
// it: docs/benchmarks.md, Memory.)
func discardExtended(ch gossh.Channel) {
	go func() {
		var b [512]byte
		for {
			if _, err := ch.Stderr().Read(b[:]); err != nil {
				return
			}
		}
	}()
}
