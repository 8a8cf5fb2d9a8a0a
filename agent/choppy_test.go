//go:build linux

package agent

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// TestAgentSSHChoppy moves data through the whole device path (service,
// destination engine, in-process Pipe, SSH server, a program and SFTP) with
// every write cut at a random size, stalls on both ends, and the service
// re-cutting its WebSocket messages, and compares every byte: three `cat`
// sessions at once, and an SFTP upload written in random pieces and read back
// the same way, alongside them.
func TestAgentSSHChoppy(t *testing.T) {
	e, tun := oneTunnelAgent(t)
	tun.Rechunk(11)
	client, stopSource := e.sshClient(t, tun)
	defer stopSource()
	defer client.Close()
	const size = 256 << 10
	random := func(seed uint64) []byte {
		r := rand.New(rand.NewPCG(seed, 3))
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	piece := func(r *rand.Rand) int { return 1 + r.IntN([...]int{16, 512, 8 << 10, 96 << 10}[r.IntN(4)]) }
	stall := func(r *rand.Rand) {
		if r.IntN(8) == 0 {
			time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
		}
	}
	writeChoppy := func(w io.Writer, b []byte, r *rand.Rand) error {
		for len(b) > 0 {
			n := min(len(b), piece(r))
			if _, err := w.Write(b[:n]); err != nil {
				return err
			}
			b = b[n:]
			stall(r)
		}
		return nil
	}
	readChoppy := func(rd io.Reader, n int, r *rand.Rand) ([]byte, error) {
		got := make([]byte, 0, n)
		buf := make([]byte, 96<<10)
		for len(got) < n {
			p := buf[:min(piece(r), n-len(got))]
			k, err := rd.Read(p)
			got = append(got, p[:k]...)
			if err != nil {
				return got, err
			}
			stall(r)
		}
		return got, nil
	}
	diff := func(got, want []byte) error {
		if bytes.Equal(got, want) {
			return nil
		}
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		return fmt.Errorf("got %d bytes, want %d: they differ from byte %d", len(got), len(want), i)
	}

	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess, err := client.NewSession()
			if err != nil {
				t.Errorf("cat %d: %v", i, err)
				return
			}
			defer sess.Close()
			in, _ := sess.StdinPipe()
			out, _ := sess.StdoutPipe()
			if err := sess.Start("cat"); err != nil {
				t.Errorf("cat %d: %v", i, err)
				return
			}
			data := random(uint64(i + 1))
			errc := make(chan error, 1)
			go func() {
				err := writeChoppy(in, data, rand.New(rand.NewPCG(uint64(i), 1)))
				in.Close()
				errc <- err
			}()
			got, rerr := readChoppy(out, size, rand.New(rand.NewPCG(uint64(i), 2)))
			if err := <-errc; err != nil {
				t.Errorf("cat %d: writing: %v", i, err)
			}
			if rerr != nil {
				t.Errorf("cat %d: reading after %d bytes: %v", i, len(got), rerr)
			} else if err := diff(got, data); err != nil {
				t.Errorf("cat %d: %v", i, err)
			}
			sess.Wait()
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Requests as large as OpenSSH sends them (limits@openssh.com), of the
		// random sizes of the writes.
		sc, err := sftp.NewClient(client, sftp.MaxPacketUnchecked(128<<10))
		if err != nil {
			t.Errorf("sftp: %v", err)
			return
		}
		defer sc.Close()
		p := filepath.Join(t.TempDir(), "up.bin")
		data := random(9)
		f, err := sc.Create(p)
		if err != nil {
			t.Errorf("sftp create: %v", err)
			return
		}
		werr := writeChoppy(f, data, rand.New(rand.NewPCG(9, 1)))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			t.Errorf("sftp upload: %v", werr)
			return
		}
		if disk, err := os.ReadFile(p); err != nil {
			t.Errorf("reading the upload: %v", err)
		} else if err := diff(disk, data); err != nil {
			t.Errorf("sftp upload on disk: %v", err)
		}
		f, err = sc.Open(p)
		if err != nil {
			t.Errorf("sftp open: %v", err)
			return
		}
		defer f.Close()
		got, err := readChoppy(f, size, rand.New(rand.NewPCG(9, 2)))
		if err != nil {
			t.Errorf("sftp download after %d bytes: %v", len(got), err)
		} else if err := diff(got, data); err != nil {
			t.Errorf("sftp download: %v", err)
		}
	}()
	wg.Wait()
}
