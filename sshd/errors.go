package sshd

import "fmt"

// errorString is the error of the package's sentinels, as errors.New's:
// `var errX error = &errorString{"..."}` is laid out in the binary's data by
// the compiler, where `errors.New("...")`, not inlined in a package built
// with -l (agent/cmd/porthole/device.gcflags), is code run at start, some
// 90 bytes of it a sentinel on linux/mipsle.
//
// The idle agent calls Error: the file's name sorts it among the code that
// runs at start (accounts.go to limits.go), not into the untouched windows
// of the code that does not (docs/size.md, "Idle layout").
type errorString struct{ s string }

func (e *errorString) Error() string { return e.s }

// wrapErr is fmt.Errorf(what+": %w", err). One call at each place that wraps
// an error with a fixed prefix is less code than a fmt.Errorf at each
// (docs/size.md).
func wrapErr(what string, err error) error { return fmt.Errorf("%s: %w", what, err) }
