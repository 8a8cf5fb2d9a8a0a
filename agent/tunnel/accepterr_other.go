//go:build !windows

package tunnel

import (
	"errors"
	"syscall"
)

// acceptRetryable reports whether err, from Accept, goes away by itself
// (TemporaryAcceptError): every errno of accept(2) does, the moment's (the
// process or system out of descriptors or memory: EMFILE, ENFILE, ENOBUFS,
// ENOMEM) or one connection's (ECONNABORTED; EPROTO, ENETDOWN, EHOSTUNREACH
// and the like, which the man page says to retry as EAGAIN; an LSM's EPERM).
// One of those ended the accept loop for good, the port left listening with
// nobody accepting. A closed listener is net.ErrClosed, no errno.
func acceptRetryable(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno)
}

// errAddrInUse is bind's error for an address another socket holds.
var errAddrInUse error = syscall.EADDRINUSE

// errConnReset is a read's error on a connection its peer reset.
var errConnReset error = syscall.ECONNRESET
