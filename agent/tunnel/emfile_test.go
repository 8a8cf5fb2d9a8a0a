//go:build unix

package tunnel

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
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
	logged := new(testlog.Lines)
	src := &Source{
		Config: Config{Endpoint: "ws://127.0.0.1:1", AllowInsecureWebSocket: true, AccessToken: tok, ClientToken: GenerateClientToken(),
			Logger: slog.New(slog.NewTextHandler(logged, nil))},
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
	// The source's accept(2) fails with EMFILE meanwhile.
	for deadline := time.Now().Add(30 * time.Second); logged.Count("accepting local connections failed") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			for _, f := range fill {
				f.Close()
			}
			t.Fatalf("after 30 s out of descriptors, the source logged no failed accept(2):\n%s", logged.String())
		}
	}
	if n := logged.Count("too many open files"); n == 0 {
		t.Logf("the failed accept(2) was not EMFILE:\n%s", logged.String())
	}
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
	if _, err := io.ReadAll(c2); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("once descriptors are free again: the connection was not served (reset after ReadyWait, the tunnel down): %v", err)
	}
}

// alternatingListener fails every other Accept with EMFILE and hands out one
// end of a pipe on the others, max calls in all; then it waits for done and
// is closed.
type alternatingListener struct {
	net.Listener
	mu    sync.Mutex
	calls int
	max   int
	done  chan struct{}
}

func (l *alternatingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls++
	n := l.calls
	l.mu.Unlock()
	if n > l.max {
		<-l.done
		return nil, net.ErrClosed
	}
	if n%2 == 1 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	c, peer := net.Pipe()
	peer.Close()
	return c, nil
}

// TestSourceShortEMFILERunsRateLimited: out of descriptors while local
// connections come and go, every run of accept errors is one failure long;
// porthole connect logs them once per acceptWarnEvery, not once a connection.
func TestSourceShortEMFILERunsRateLimited(t *testing.T) {
	var log testlog.Lines
	src := &Source{Config: Config{Logger: slog.New(slog.NewTextHandler(&log, nil))}, ReadyWait: 10 * time.Millisecond}
	l := &alternatingListener{max: 10, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		src.acceptLoop(ctx, l, serviceRoute{name: "SSH", wire: "SSH"})
	}()
	for deadline := time.Now().Add(5 * time.Second); log.Count("tunnel not connected") < 5; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the 5 connections were not handled:\n%s", log.String())
		}
	}
	cancel()
	close(l.done)
	<-finished
	if n := log.Count("too many open files"); n != 1 {
		t.Errorf("5 runs of one EMFILE each logged %d lines, want 1:\n%s", n, log.String())
	}
}
