//go:build unix

package hostenv

import "syscall"

// Umask sets the process's umask to 022, most systems' default.
func Umask() { syscall.Umask(0o022) }
