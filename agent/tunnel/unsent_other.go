//go:build !linux

package tunnel

import "syscall"

// unsent cannot tell here: the link waits for the target's output to end, or
// for the drain timer.
func unsent(syscall.Conn) int { return -1 }

// boundUnsent does nothing here: a local connection's kernel holds what its
// send buffer takes, and a reader slower than that buffer drains within the
// stall timeout is reset as stalled (see unsent_linux.go).
func boundUnsent(any, bool) {}

// dialControl sets nothing here: a path that dies without a word is noticed
// when the system gives up on what was sent (see unsent_linux.go).
var dialControl func(network, address string, c syscall.RawConn) error
