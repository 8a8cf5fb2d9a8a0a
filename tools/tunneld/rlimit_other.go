//go:build !unix

package tunneld

// openFileLimit is not known where getrlimit(2) does not exist.
func openFileLimit() (uint64, bool) { return 0, false }
