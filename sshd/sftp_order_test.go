package sshd

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pkg/sftp"
)

// An upload that runs out of space leaves a clean prefix of what was sent, as
// OpenSSH's sftp-server does: sftp's reput and put -a resume from the remote
// file's size and trust what is before it. pkg/sftp's default of 8 workers ran the
// pipelined writes out of order, so writes at later offsets landed after an
// earlier one had failed, leaving a hole that a resume then kept.
func TestSFTPFullDiskLeavesPrefix(t *testing.T) {
	dir := smallDisk(t)
	data := make([]byte, 4<<20)
	rand.Read(data)
	for i := range 3 {
		// Many writes in flight, as OpenSSH's sftp keeps them.
		_, cl := sftpClient(t, newEnv(t, nil), sftp.UseConcurrentWrites(true))
		path := filepath.Join(dir, "up")
		f, err := cl.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.ReadFrom(bytes.NewReader(data)); err == nil {
			t.Fatal("4 MiB fitted on a 1 MiB tmpfs")
		}
		f.Close()
		cl.Close()
		onDisk, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		syscall.Stat(path, &st)
		if len(onDisk) == 0 || !bytes.Equal(onDisk, data[:len(onDisk)]) || st.Blocks*512 < int64(len(onDisk)) {
			t.Fatalf("run %d: the failed upload left %d bytes (%d allocated) that are not a prefix of what was sent",
				i, len(onDisk), st.Blocks*512)
		}
		os.Remove(path)
	}
}

// smallDisk mounts a 1 MiB tmpfs for the test and returns its path. It needs
// root; elsewhere the test is skipped, except under CI=true (CI runs as root,
// which may mount).
func smallDisk(t *testing.T) string {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "small")
	os.Mkdir(dir, 0o755)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a 1 MiB tmpfs: %v", err)
		}
		t.Skipf("cannot mount a tmpfs here (%v): a full disk is not tested", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// BenchmarkSFTPUpload moves 32 MiB per iteration through the in-process SFTP
// server with many writes in flight, as OpenSSH's sftp does, to weigh handing
// pkg/sftp one WRITE at a time.
func BenchmarkSFTPUpload(b *testing.B) {
	_, cl := sftpClient(b, newEnv(b, nil), sftp.UseConcurrentWrites(true))
	defer cl.Close()
	data := make([]byte, 32<<20)
	rand.Read(data)
	path := filepath.Join(b.TempDir(), "up")
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		f, err := cl.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.ReadFrom(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
