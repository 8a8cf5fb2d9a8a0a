//go:build linux

package agent

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pkg/sftp"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
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
				err := tunneltest.NewChoppy(uint64(2*i)).Write(in, data)
				in.Close()
				errc <- err
			}()
			got := make([]byte, size)
			rerr := tunneltest.NewChoppy(uint64(2*i+1)).ReadFull(out, got)
			if err := <-errc; err != nil {
				t.Errorf("cat %d: writing: %v", i, err)
			}
			if rerr != nil {
				t.Errorf("cat %d: reading %v", i, rerr)
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
		werr := tunneltest.NewChoppy(18).Write(f, data)
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
		got := make([]byte, size)
		if err := tunneltest.NewChoppy(19).ReadFull(f, got); err != nil {
			t.Errorf("sftp download: %v", err)
		} else if err := diff(got, data); err != nil {
			t.Errorf("sftp download: %v", err)
		}
	}()
	wg.Wait()
}
