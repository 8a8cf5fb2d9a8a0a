// Package testenv holds what the tools' tests share about the machine they run
// on, without the weight of tools/internal/stack.
package testenv

import (
	"bufio"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
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

// IdleAfterGet sends GET / on a new keep-alive connection to addr, reads the
// answer, which must be 200 and keep the connection open, and returns the
// connection, left idle (the caller closes it).
func IdleAfterGet(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		tb.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		c.Close()
		tb.Fatalf("GET / = %s (close %v), want 200 on a keep-alive connection", resp.Status, resp.Close)
	}
	return c
}

// MustBeCut fails the test unless the server hangs up c, whatever it answers
// first, within 5 s past timeout, the server's.
func MustBeCut(tb testing.TB, c net.Conn, timeout time.Duration) {
	tb.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(timeout + 5*time.Second))
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		tb.Fatalf("connection still open after %v (read %q), want it cut after %v", time.Since(start), b, timeout)
	}
	tb.Logf("cut after %v: %q, %v", time.Since(start), b, err)
}

// TLS12AEADOnly checks the TLS server at addr, whose certificate roots trust:
// a TLS 1.2 client offering only ECDHE with AES-CBC and HMAC-SHA1 (Go's
// defaults had them; testssl.sh reports LUCKY13 for them) fails its handshake,
// and one offering only ECDHE with AES-GCM, or only with ChaCha20-Poly1305, is
// served over TLS 1.2 with it. Each list names the suite for ECDSA and for RSA
// certificates. certs are the client's certificates, for a server that asks
// for one.
func TLS12AEADOnly(tb testing.TB, addr string, roots *x509.CertPool, certs ...tls.Certificate) {
	tb.Helper()
	handshake := func(suites ...uint16) (tls.ConnectionState, error) {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: certs,
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, CipherSuites: suites})
		err = tc.Handshake()
		return tc.ConnectionState(), err
	}
	if st, err := handshake(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA); err == nil {
		tb.Errorf("a TLS 1.2 client offering only AES-CBC suites was served with %s, want a failed handshake",
			tls.CipherSuiteName(st.CipherSuite))
	} else {
		tb.Logf("a TLS 1.2 client offering only AES-CBC suites: %v", err)
	}
	for _, suites := range [][]uint16{
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384},
		{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256},
	} {
		st, err := handshake(suites...)
		if err != nil {
			tb.Errorf("a TLS 1.2 client offering only %s or %s: %v, want a handshake",
				tls.CipherSuiteName(suites[0]), tls.CipherSuiteName(suites[1]), err)
		} else if st.Version != tls.VersionTLS12 || !slices.Contains(suites, st.CipherSuite) {
			tb.Errorf("a TLS 1.2 client offering only %s or %s got %s with %s", tls.CipherSuiteName(suites[0]),
				tls.CipherSuiteName(suites[1]), tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		}
	}
}

// ProcessRunning reports whether process pid exists and is neither a zombie
// nor dead: the test's machine may have no init that reaps what a test
// detached or orphaned.
func ProcessRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	state := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(state) > 0 && state[0] != "Z" && state[0] != "X"
}
