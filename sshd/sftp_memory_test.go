package sshd

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// A client that keeps one request blocked (an OPEN of a FIFO that no program
// opens from the other side, as in TestSFTPBlockedOpenEndsWithTheClient) and
// pipelines READs of a file after it:
// pkg/sftp answers those on its other workers, and keeps every answer (32 KiB)
// until the blocked one is out, to send them in order. What a session holds
// must stay bounded, whatever the client sends; it once grew by 32 KiB per
// 45-byte READ, without limit.
func TestSFTPPipelinedReadsBehindBlockedOneBounded(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), make([]byte, maxSFTPRead), 0o600); err != nil {
		t.Fatal(err)
	}
	in, client := io.Pipe()
	out := &lockedBuffer{}
	front := newSFTPFront(in, out, dir, func(string) (string, bool) { return dir, true }, nil)
	rw := &sftpChannel{front: front, close: func() error { front.close(); return nil }}
	srv, err := sftp.NewServer(rw, sftp.WithServerWorkingDirectory(dir), sftp.WithMaxTxPacket(maxSFTPRead))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve()
		front.closeDirs()
	}()
	defer func() {
		// Unblock the OPEN of the FIFO, then end the stream.
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			time.Sleep(100 * time.Millisecond)
			f.Close()
		}
		client.Close()
		front.close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Error("the session did not end")
		}
	}()
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapInuse)
	}
	write := func(p []byte) bool {
		ok := make(chan bool, 1)
		go func() { _, err := client.Write(p); ok <- err == nil }()
		select {
		case r := <-ok:
			return r
		case <-time.After(2 * time.Second):
			return false // the session has stopped reading: back-pressure
		}
	}
	write(sftpPacket(1, uint32(3)))                                      // INIT
	write(sftpPacket(sftpOpen, uint32(1), "file", uint32(1), uint32(0))) // handle "1"
	time.Sleep(200 * time.Millisecond)
	base := heap()
	write(sftpPacket(sftpOpen, uint32(2), "fifo", uint32(1), uint32(0))) // blocks in open(2)
	const readFile = 5                                                   // SSH_FXP_READ
	const n = 1000
	sent := 0
	for i := range n {
		if !write(sftpPacket(readFile, uint32(3+i), "1", uint32(0), uint32(0), uint32(maxSFTPRead))) {
			break
		}
		sent++
	}
	time.Sleep(300 * time.Millisecond)
	grew := heap() - base
	t.Logf("%d READs taken behind a blocked one: heap grew by %.1f MiB", sent, float64(grew)/(1<<20))
	if grew > 8<<20 {
		t.Errorf("heap grew by %.1f MiB for %d pipelined READs behind a blocked one; want it bounded", float64(grew)/(1<<20), sent)
	}
}
