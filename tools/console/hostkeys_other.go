//go:build !unix

package console

import "context"

// lockFile does not lock where there is no flock(2): there, consoles that share a
// host key file can still lose each other's new keys (each change re-reads the
// file, which narrows the window to the moment of a write).
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	return func() {}, nil
}
