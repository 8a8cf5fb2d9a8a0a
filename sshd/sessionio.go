package sshd

import (
	"io"
	"sync/atomic"
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
