// Package testenv holds what the tools' tests share about the machine they run
// on, without the weight of tools/internal/stack.
package testenv

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// NeedProgram finds name on PATH; it skips the test when missing, or fails it
// under CI=true, where make test has installed it.
func NeedProgram(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s is required (make test installs it): %v", name, err)
		}
		tb.Skipf("%s not installed; `make test` installs it", name)
	}
	return p
}

// StartWithoutLogReader builds the command at import path pkg and starts it
// with args, its stderr a pipe whose reader goes away once the command has
// printed its first line to stdout, as when the reader of `cmd 2>&1 | logger`
// is restarted or killed. It returns that line, trimmed, and alive, which is
// nil while the command runs and otherwise says how it ended. The command
// gets SIGTERM at the test's end.
func StartWithoutLogReader(tb testing.TB, pkg string, args ...string) (line string, alive func() error) {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), path.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		errR.Close()
		tb.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-done
	})
	line, err = bufio.NewReader(outR).ReadString('\n')
	// Whatever was logged so far stays in the pipe; the next write fails
	// with EPIPE.
	errR.Close()
	if err != nil {
		tb.Fatalf("%s printed no line: %v", pkg, err)
	}
	return strings.TrimSpace(line), func() error {
		select {
		case <-done:
			return fmt.Errorf("%s ended: %v", path.Base(pkg), cmp.Or(waitErr, errors.New("exit status 0")))
		default:
			return nil
		}
	}
}

// GetWhileAlive GETs url three times (each request logged by the command
// StartWithoutLogReader started: a write to its gone reader) and fails tb if a
// request fails or the command has ended (alive, from StartWithoutLogReader).
func GetWhileAlive(tb testing.TB, url string, alive func() error) {
	tb.Helper()
	for i := range 3 {
		resp, err := http.Get(url)
		if err != nil {
			time.Sleep(100 * time.Millisecond) // its end, if that is why
			tb.Fatalf("request %d: %v (%v)", i, err, alive())
		}
		resp.Body.Close()
		time.Sleep(50 * time.Millisecond)
	}
	if err := alive(); err != nil {
		tb.Fatalf("once its log's reader had gone: %v", err)
	}
}

// SyncBuffer is a strings.Builder safe for a writer and a reader at once (a
// logger's output read by the test).
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ErrnoListener is l whose first n Accepts fail with errno, as accept(2) does
// when the process is out of descriptors (EMFILE) or the kernel out of socket
// buffers (ENOBUFS, ENOMEM).
func ErrnoListener(l net.Listener, errno syscall.Errno, n int) net.Listener {
	el := &errnoListener{Listener: l, errno: errno}
	el.n.Store(int32(n))
	return el
}

type errnoListener struct {
	net.Listener
	errno syscall.Errno
	n     atomic.Int32
}

func (l *errnoListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.errno)}
	}
	return l.Listener.Accept()
}
