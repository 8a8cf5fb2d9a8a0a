//go:build !unix

package tunneld

import (
	"fmt"
	"os"
)

// LockDir only makes dir where flock(2) does not exist, and returns a nil file:
// two servers on one data directory are not detected there.
func LockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory %s: %w", dir, err)
	}
	return nil, nil
}

// checkDataDir checks nothing where file modes are not Unix ones.
func checkDataDir(dir string) (string, error) { return dir, nil }

// checkLocked checks nothing where checkDataDir checks nothing.
func checkLocked(f *os.File, dir string) error { return nil }
