//go:build !windows

package tunnel

import "syscall"

// acceptRetryErrnos are the accept(2) failures that go away by themselves
// (TemporaryAcceptError): the process or system out of descriptors or memory
// for the moment, or a connection aborted while it waited in the backlog.
var acceptRetryErrnos = []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED}

// errAddrInUse is bind's error for an address another socket holds.
var errAddrInUse error = syscall.EADDRINUSE
