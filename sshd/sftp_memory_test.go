package sshd

import (
	"encoding/binary"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// TestSFTPFrontBoundsRequestsInFlight: the front hands pkg/sftp at most
// maxSFTPInFlight requests not yet answered. pkg/sftp sends its answers in
// the order of the requests, so it keeps every answer behind one that has not
// finished: a client that kept one READ blocked (a file on a hung mount) and
// pipelined READs after it made a session hold 32 KiB per 45-byte request,
// without limit. Here nothing is answered after the INIT, as when pkg/sftp
// waits on such a READ: the front must stop reading there.
func TestSFTPFrontBoundsRequestsInFlight(t *testing.T) {
	in, client := io.Pipe()
	front := newSFTPFront(in, io.Discard, t.TempDir(), func(string) (string, bool) { return "", false }, nil)
	defer front.close()
	defer client.Close()
	const n = 1000
	go func() {
		client.Write(sftpPacket(1, uint32(3))) // INIT
		for i := range n {
			if _, err := client.Write(sftpPacket(sftpRead, uint32(1+i), "1", uint64(0), uint32(maxSFTPRead))); err != nil {
				return
			}
		}
	}()
	var handed atomic.Int64 // requests read from the front, as pkg/sftp reads them
	go func() {
		var size [4]byte
		for {
			if _, err := io.ReadFull(front, size[:]); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, front, int64(binary.BigEndian.Uint32(size[:]))); err != nil {
				return
			}
			if handed.Add(1) == 1 {
				// The VERSION: a READ waits for the INIT's answer.
				front.Write(sftpPacket(2, uint32(3)))
			}
		}
	}()
	// Until no more requests come (300 ms), at most 10 s: this bounds no speed.
	last := int64(-1)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		h := handed.Load()
		if h == last && h > 1 {
			break
		}
		last = h
	}
	if h := handed.Load(); h != 1+maxSFTPInFlight {
		t.Errorf("the front handed on %d requests with none answered after the INIT, want the INIT and %d READs", h, maxSFTPInFlight)
	}
}
