package acceptretry

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// failingListener fails every Accept with EMFILE until closed, and tells
// failed of each failure.
type failingListener struct {
	net.Listener
	failed chan struct{}
	mu     sync.Mutex
	closed bool
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, net.ErrClosed
	}
	l.failed <- struct{}{}
	return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

func (l *failingListener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.Listener.Close()
}

// syncBuffer collects a logger's output for the test to read.
type syncBuffer = testenv.SyncBuffer

// TestCloseEndsWait: a listener out of descriptors is retried, logged once for
// the run, and Close ends the wait between attempts at once (Shutdown of the
// server over it must not wait up to a second), with net.ErrClosed.
func TestCloseEndsWait(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: inner, failed: make(chan struct{}, 16)}
	var log syncBuffer
	l := Wrap(fl, slog.New(slog.NewTextHandler(&log, nil)))
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	for range 8 { // 5+10+...+320 ms of waits; the wrapper now waits 640 ms
		<-fl.failed
	}
	start := time.Now()
	l.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("Accept returned %v after Close, in the middle of a 640 ms wait", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	if n := strings.Count(log.String(), "too many open files"); n != 1 {
		t.Errorf("8 failures in a row logged %d times, want once:\n%s", n, log.String())
	}
}

// alternatingListener fails every other Accept with EMFILE and gives one end
// of a pipe on the others: a server at its descriptor limit while connections
// come and go.
type alternatingListener struct {
	net.Listener
	calls int
}

func (l *alternatingListener) Accept() (net.Conn, error) {
	l.calls++
	if l.calls%2 == 1 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	c, peer := net.Pipe()
	peer.Close()
	return c, nil
}

// TestShortRunsLoggedOncePerWindow: out of descriptors while connections come
// and go, every run of failures is one failure long; they are logged once per
// warnEvery, not once a connection, and the next line counts those not logged.
func TestShortRunsLoggedOncePerWindow(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	l := Wrap(&alternatingListener{Listener: inner}, slog.New(slog.NewTextHandler(&log, nil)))
	defer l.Close()
	accept := func() {
		t.Helper()
		c, err := l.Accept()
		if err != nil {
			t.Fatalf("Accept: %v", err)
		}
		c.Close()
	}
	for range 5 {
		accept()
	}
	if n := strings.Count(log.String(), "too many open files"); n != 1 {
		t.Errorf("5 runs of one failure within a minute logged %d times, want once:\n%s", n, log.String())
	}
	defer func(d time.Duration) { warnEvery = d }(warnEvery)
	warnEvery = 0
	accept()
	if n := strings.Count(log.String(), "too many open files"); n != 2 {
		t.Errorf("a run after the window logged %d lines in all, want 2:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "runs_not_logged=4") {
		t.Errorf("the line after the window does not count the 4 runs not logged:\n%s", log.String())
	}
}
