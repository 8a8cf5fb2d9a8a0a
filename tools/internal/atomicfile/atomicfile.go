// Package atomicfile writes the tools' files whole or not at all: tunneld's
// state, the console's host keys, the lab's keys, certificates and configs.
package atomicfile

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Write writes b to path with mode, through a temporary file beside it, fsync
// and rename, then syncs the directory; it makes the directory (0700) if it is
// missing. The temporary file ("."+name+".*") is new (O_EXCL, mode 0600 until
// written), so it is never one left by a killed run, with other modes, nor a
// link someone planted. On an error, path is as it was and the temporary file
// is gone.
func Write(path string, b []byte, mode os.FileMode) error {
	return WriteFunc(path, mode, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// WriteFunc is Write of what write writes to w, a buffered writer to the
// temporary file: a large file is streamed, never held whole in memory.
// An error from write is returned as it is, and leaves path as it was.
func WriteFunc(path string, mode os.FileMode, write func(w io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename there is nothing to remove
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	// A write of a whole buffer or more, Write's b, goes to f directly.
	w := bufio.NewWriterSize(f, 64<<10)
	if err := write(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// RemoveLeftovers removes from dir the temporary files of writes to
// dir/name (of any file when name is "") that did not finish (a run killed
// between WriteFunc's temporary file and its rename): "."+name+"."+digits,
// os.CreateTemp's random part. No later write removes them, and each holds
// what was being written, a key or tokens. It returns the paths it removed,
// and stops at the first it cannot remove. Names are matched, not a glob: the
// directory's own name may hold * or [.
func RemoveLeftovers(dir, name string) (removed []string, err error) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !e.Type().IsRegular() || !isTemporary(e.Name(), name) {
			continue
		}
		f := filepath.Join(dir, e.Name())
		if err := os.Remove(f); err != nil {
			return removed, err
		}
		removed = append(removed, f)
	}
	return removed, nil
}

// isTemporary reports whether file is one of WriteFunc's temporary files for
// name (any name when ""): "."+name+"."+digits.
func isTemporary(file, name string) bool {
	i := strings.LastIndexByte(file, '.')
	digits := file[i+1:]
	return i > 1 && file[0] == '.' && (name == "" || file[1:i] == name) &&
		digits != "" && strings.Trim(digits, "0123456789") == ""
}
