//go:build unix

package tunneld

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// LockDir takes an exclusive, non-blocking flock(2) on the directory dir, creating
// it if needed (mode 0700); while another holds it, the error wraps
// ErrDataDirInUse. New takes it on Config.DataDir, so that two servers never share
// one state file: each rewrites tunnels.json from its own memory, and the last
// writer would silently drop the other's tunnels, whose tokens were already handed
// out. (The lab takes it on its state directory.) The lock lasts until the returned
// file is closed, or the process ends; the file is close-on-exec, so children do
// not inherit it.
func LockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory %s: %w", dir, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("locking data directory %s: %w", dir, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, fmt.Errorf("locking data directory %s: %w", dir, ErrDataDirInUse)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking data directory %s: %w", dir, err)
	}
	return f, nil
}
