//go:build !unix

package hostenv

// Umask does nothing where there is no umask.
func Umask() {}
