//go:build unix

package tunneld

import "syscall"

// openFileLimit is the process's limit of open descriptors (RLIMIT_NOFILE,
// as Go raised it at start), if known; unlimited is the largest number.
func openFileLimit() (uint64, bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	return uint64(r.Cur), true
}
