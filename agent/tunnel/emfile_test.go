//go:build unix

package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestSourceListenerRecoversFromEMFILE runs a source in a child process whose
// descriptor limit is low (the limit is lowered there only), uses up its
// descriptors so that accept(2) fails with EMFILE, frees them and connects
// again: that connection must be accepted (and, the tunnel being down, closed
// after ReadyWait), not left in the listen backlog for good.
func TestSourceListenerRecoversFromEMFILE(t *testing.T) {
	if os.Getenv("PORTHOLE_EMFILE_CHILD") == "1" {
		sourceEMFILEChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSourceListenerRecoversFromEMFILE$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "PORTHOLE_EMFILE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if errors.Is(err, syscall.ENOEXEC) {
		// go test -exec qemu-ARCH-static (tools/qemu-test.sh) without binfmt_misc:
		// the foreign test binary cannot run itself again. The native run covers it.
		t.Skipf("the test binary cannot re-exec itself here (qemu-user without binfmt_misc): %v", err)
	}
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
}

func sourceEMFILEChild(t *testing.T) {
	tok, _ := NewAccessToken("AQGAAXhM-source-token-for-emfile-test")
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	src := &Source{
		Config:    Config{Endpoint: "ws://127.0.0.1:1", AllowInsecureWebSocket: true, AccessToken: tok, ClientToken: GenerateClientToken()},
		Listen:    map[string]string{"SSH": addr},
		ReadyWait: 100 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// The named service's listener accepts before the tunnel is up.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("source not listening: %v", err)
		}
	}

	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 64, Max: 64}); err != nil {
		t.Fatal(err)
	}
	var fill []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		fill = append(fill, f)
	}
	fill[len(fill)-1].Close()
	fill = fill[:len(fill)-1]
	c1, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Logf("dial with one descriptor left: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // the source's accept(2) fails with EMFILE meanwhile
	for _, f := range fill {
		f.Close()
	}
	if c1 != nil {
		c1.Close()
	}
	time.Sleep(1500 * time.Millisecond) // past a retry's backoff
	c2, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("once descriptors are free again: %v", err)
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c2); err != nil {
		t.Fatalf("once descriptors are free again: the connection was not served (closed after ReadyWait): %v", err)
	}
}
