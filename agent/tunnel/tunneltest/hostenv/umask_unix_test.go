//go:build unix

package hostenv

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestClearSetsUmask(t *testing.T) {
	old := syscall.Umask(0o002)
	defer syscall.Umask(old)
	Clear()
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("a directory made with 0777 after Clear: %v, %v; want mode 0755", fi.Mode(), err)
	}
}
