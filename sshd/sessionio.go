package sshd

import (
	"io"
	"sync"
	"sync/atomic"

	gossh "golang.org/x/crypto/ssh"
)

// errOutputClosed is what writes to a session's channel return once the
// client has sent "eow@openssh.com".
var errOutputClosed error = &errorString{"sshd: the client reads no more output"}

// endOfWrite handles "eow@openssh.com", which OpenSSH's client sends when its
// stdout fails (ssh host cmd | head). Output the server has read but not yet
// sent is dropped (writes fail from now on), and the program's output is no
// longer read, so it gets SIGPIPE or EPIPE on its next write, as under sshd;
// its exit status is still sent. That is its stdout only: the client reads
// stderr on, and sshd's chan_rcvd_eow closes the stdout pipe alone, so a
// script goes on to its end after an "echo >&2" (its stderr had been closed
// too, and that echo killed it). In-process services (SFTP, scp) see their
// writes fail.
func (sess *session) endOfWrite() {
	select {
	case <-sess.outputGone:
		return // a repeated request; requests are handled by one goroutine
	default:
	}
	close(sess.outputGone)
	sess.mu.Lock()
	closeStdout := sess.closeStdout
	sess.mu.Unlock()
	if closeStdout != nil {
		closeStdout()
	}
}

// waitOutput waits until outDone is closed, or the client sends
// "eow@openssh.com": output then stuck in a write that the client's window
// does not let through is dropped, and finish's close ends that write.
func (sess *session) waitOutput(outDone <-chan struct{}) {
	select {
	case <-outDone:
	case <-sess.outputGone:
	}
}

// reader and writer count the session's bytes for the audit log; writer
// fails once the client has sent "eow@openssh.com".
func (sess *session) reader() io.Reader { return &countingReader{r: sess.ch, n: &sess.in} }

func (sess *session) writer(w io.Writer) io.Writer { return &outputWriter{w: w, sess: sess} }

// stderr is writer for the channel's extended data (stderr), which
// "eow@openssh.com" leaves open.
func (sess *session) stderr() io.Writer {
	return &outputWriter{w: sess.ch.Stderr(), sess: sess, stderr: true}
}

type countingReader struct {
	_ [0]func() // not comparable: no equality function in the binary (docs/size.md)
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

type outputWriter struct {
	_      [0]func() // not comparable: no equality function in the binary (docs/size.md)
	w      io.Writer
	sess   *session
	stderr bool // writes go on after "eow@openssh.com"
}

func (o *outputWriter) Write(b []byte) (int, error) {
	select {
	case <-o.sess.outputGone:
		if !o.stderr {
			return 0, errOutputClosed
		}
	default:
	}
	n, err := o.w.Write(b)
	o.sess.out.Add(int64(n))
	return n, err
}

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
