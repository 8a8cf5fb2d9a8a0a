package atomicfile

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// What a killed run or another user left beside the file is not written
// through: a leftover temporary file with wider modes, or a link planted where
// a fixed temporary name would be. The file gets the mode asked for, and no
// temporary file is left, after a success or a failure.
func TestWriteIgnoresWhatIsBesideIt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	elsewhere := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(elsewhere, []byte("theirs"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"key.tmp", ".key.tmp"} {
		if err := os.Symlink(elsewhere, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := Write(path, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(elsewhere); string(b) != "theirs" {
		t.Errorf("the file a planted link names now holds %q", b)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "secret" || fi.Mode() != 0o600 {
		t.Errorf("%s: %q, mode %v; want %q, -rw-------", path, b, fi.Mode(), "secret")
	}
	if err := Write(filepath.Join(dir, "pub"), []byte("public"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "pub")); err != nil || fi.Mode() != 0o644 {
		t.Errorf("pub: %v, %v; want -rw-r--r--", fi.Mode(), err)
	}

	// A failed write (the name is a directory) leaves the directory as it was.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "sub"), []byte("x"), 0o600); err == nil {
		t.Error("Write over a directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{".key.tmp", "key", "key.tmp", "pub", "sub"}; len(names) != len(want) {
		t.Errorf("the directory holds %q, want %q: a temporary file was left", names, want)
	}
}

// A WriteFunc whose write fails, after writing more than its buffer, leaves
// the file as it was and no temporary file; one that succeeds writes
// everything it was given, past the buffer.
func TestWriteFuncFailureLeavesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if err := Write(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB: ten buffers
	failed := errors.New("encoding failed")
	err := WriteFunc(path, 0o600, func(w io.Writer) error {
		if _, err := w.Write(big); err != nil {
			return err
		}
		return failed
	})
	if !errors.Is(err, failed) {
		t.Errorf("WriteFunc = %v, want %v", err, failed)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("after a failed WriteFunc, %s holds %d bytes, want %q", path, len(b), "old")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("after a failed WriteFunc, the directory holds %d files, want 1: a temporary file was left", len(entries))
	}
	err = WriteFunc(path, 0o600, func(w io.Writer) error {
		for i := 0; i < len(big); i += 1000 {
			if _, err := w.Write(big[i:min(i+1000, len(big))]); err != nil {
				return err
			}
		}
		return nil
	})
	if b, _ := os.ReadFile(path); err != nil || !bytes.Equal(b, big) {
		t.Errorf("WriteFunc = %v; %s holds %d bytes, want the %d written", err, path, len(b), len(big))
	}
}
