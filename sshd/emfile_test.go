package sshd

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// emfileListener fails its first n Accepts as accept(2) does when the process
// is out of descriptors, or with errno if set.
type emfileListener struct {
	net.Listener
	n     atomic.Int32
	errno syscall.Errno
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		errno := l.errno
		if errno == 0 {
			errno = syscall.EMFILE
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", errno)}
	}
	return l.Listener.Accept()
}

// TestServeSurvivesAConnectionsAcceptError: accept(2) passes a new
// connection's pending network error as its own (EPROTO, ENETDOWN,
// EHOSTUNREACH…: man 2 accept says to retry them as EAGAIN), and an LSM may
// refuse one connection with EPERM. Serve ended on them: ssh.listen logged "no
// longer accepting SSH connections" and refused every login until the agent
// restarted (strace -e inject=accept4:error=EPROTO:when=1).
func TestServeSurvivesAConnectionsAcceptError(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EPROTO, syscall.EPERM, syscall.ENETUNREACH} {
		t.Run(errno.Error(), func(t *testing.T) {
			e := newEnv(t, nil)
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := &emfileListener{Listener: inner, errno: errno}
			l.n.Store(1)
			served := make(chan error, 1)
			go func() { served <- e.srv.Serve(l) }()
			t.Cleanup(func() {
				e.srv.Close()
				<-served
			})
			wantBanner(t, inner.Addr().String(), "after accept's "+errno.Error())
		})
	}
}

// A process that runs out of descriptors for a moment (a burst of logins, a
// download holding many files, a low ulimit -n on a router) must not lose its
// listener for good: EMFILE is temporary, as net/http's Serve treats it.
func TestServeSurvivesEMFILE(t *testing.T) {
	e := newEnv(t, nil)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &emfileListener{Listener: inner}
	l.n.Store(3)
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(l) }()
	t.Cleanup(func() {
		e.srv.Close()
		<-served
	})
	select {
	case err := <-served:
		served <- err
		t.Fatalf("Serve returned %v after a transient EMFILE; the listener is gone for good", err)
	case <-time.After(300 * time.Millisecond):
	}
	wantBanner(t, inner.Addr().String(), "after EMFILE")
}

// wantBanner connects to addr and fails the test unless an SSH server's
// version line comes: the listener accepts again, when.
func wantBanner(t *testing.T, addr, when string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	banner, err := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(banner, "SSH-2.0-") {
		t.Fatalf("%s: banner %q, %v; want the server to accept again", when, banner, err)
	}
}

// TestServeRecoversFromRealEMFILE runs a server in a child process whose
// descriptor limit is low, uses up its descriptors, connects (so accept(2)
// fails with EMFILE), frees them and connects again: the second connection
// must be served. The limit is lowered in the child only.
func TestServeRecoversFromRealEMFILE(t *testing.T) {
	if inChild() {
		emfileChild(t)
		return
	}
	runChild(t, nil, nil)
}

func emfileChild(t *testing.T) {
	e := newEnv(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(l) }()
	defer func() {
		e.srv.Close()
		<-served
	}()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 64, Max: 64}); err != nil {
		t.Fatal(err)
	}
	// Use up every descriptor but one, which the client takes.
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
	c1, err := net.DialTimeout("tcp", l.Addr().String(), 2*time.Second)
	if err != nil {
		// The server may have given up its listener before the dial completed.
		t.Logf("dial with one descriptor left: %v", err)
	}
	if c1 != nil {
		// The server's accept(2) fails with EMFILE (logged, or Serve returns,
		// checked below): a fixed 300 ms could end before it did on a slow
		// machine, and the test then proved nothing.
		waitFor(t, "the server's accept(2) to fail with EMFILE", func() bool {
			return len(served) > 0 || len(e.logs.logged("accepting SSH connections failed", "too many open files")) > 0
		})
	}
	for _, f := range fill {
		f.Close()
	}
	select {
	case err := <-served:
		served <- err
		t.Errorf("Serve returned after EMFILE: %v", err)
	case <-time.After(1500 * time.Millisecond): // past the accept retry's backoff
	}
	if c1 != nil {
		c1.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	c2, err := d.DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("once descriptors are free again: %v", err)
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	banner, err := bufio.NewReader(c2).ReadString('\n')
	if !strings.HasPrefix(banner, "SSH-2.0-") {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = errors.New("no banner within 5s: nobody accepts on the listener any more")
		}
		t.Fatalf("once descriptors are free again: banner %q, %v", banner, err)
	}
}

// An ssh -R listener that meets EMFILE once must keep forwarding: before, its
// accept loop ended while the listener stayed open, so connections to the
// forwarded port queued up unanswered until the SSH connection ended.
func TestRemoteForwardSurvivesEMFILE(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.PermitRemoteForward = func(_, addr string, _ uint32) bool { return addr == "127.0.0.1" }
		s.listen = func(network, addr string) (net.Listener, error) {
			l, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			el := &emfileListener{Listener: l}
			el.n.Store(1)
			return el, nil
		}
	})
	c := e.login("root")
	l, err := c.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if fc, err := l.Accept(); err == nil {
			accepted <- fc
		}
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	select {
	case fc := <-accepted:
		fc.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("connection to the ssh -R port not forwarded after one EMFILE from accept")
	}
}

// alternatingListener fails every other Accept with EMFILE: a server at its
// descriptor limit while connections come and go.
type alternatingListener struct {
	net.Listener
	calls atomic.Int32
}

func (l *alternatingListener) Accept() (net.Conn, error) {
	if l.calls.Add(1)%2 == 1 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestShortEMFILERunsRateLimited: each connection accepted after one EMFILE
// is a run of its own; the runs are logged as a refusal is, not once a
// connection, which on a router's small log would be a line per login.
func TestShortEMFILERunsRateLimited(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) {
		at := time.Unix(1_700_000_000, 0)
		s.now = func() time.Time { return at }
	})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(&alternatingListener{Listener: inner}) }()
	t.Cleanup(func() {
		e.srv.Close()
		<-served
	})
	for range 5 {
		c, err := net.DialTimeout("tcp", inner.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		banner, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(banner, "SSH-2.0-") {
			t.Fatalf("banner %q, %v; want the server to accept after one EMFILE", banner, err)
		}
	}
	if lines := e.logs.logged("too many open files"); len(lines) != 1 {
		t.Errorf("5 runs of one EMFILE each logged %d times, want once: %q", len(lines), lines)
	}
}

// Logins refused only because the server is out of descriptors (it cannot
// open /etc/passwd or authorized_keys) are the server's failure, not guesses
// of the client's: counted, ten of them locked the source out for the window
// after, once descriptors were free again, and a tunnel's streams share one
// source, so every operator of the tunnel. A connection that also had a key
// refused on its merits still counts. Each login here comes over a
// connection made beforehand, as a tunnel's stream needs no descriptor.
func TestLoginsRefusedForLackOfDescriptorsAreNotCounted(t *testing.T) {
	for _, method := range []string{"publickey", "password", "password then a wrong key"} {
		t.Run(method, func(t *testing.T) {
			if inChild() {
				refusedForLackOfChild(t, method)
				return
			}
			runChild(t, nil, nil)
		})
	}
}

func refusedForLackOfChild(t *testing.T, method string) {
	const limit = 3
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.MaxAuthFailures = limit
		s.PasswordHashes = map[string]string{"root": string(hash)}
	})
	var fill []*os.File
	free := func() {
		for _, f := range fill {
			f.Close()
		}
		fill = nil
	}
	auth := []gossh.AuthMethod{gossh.PublicKeys(e.key)}
	switch method {
	case "password":
		auth = []gossh.AuthMethod{gossh.Password("s3cret")}
	case "password then a wrong key":
		// The password refused for lack of descriptors, then, with them
		// free, a key that is not authorized.
		wrong := newSigner(t)
		auth = []gossh.AuthMethod{gossh.Password("s3cret"), gossh.PublicKeysCallback(func() ([]gossh.Signer, error) {
			free()
			return []gossh.Signer{wrong}, nil
		})}
	}
	type pair struct{ client, server net.Conn }
	var pairs []pair
	for range 2*limit + 1 {
		c, s := tcpPair(t)
		pairs = append(pairs, pair{c, s})
	}
	login := func(auth ...gossh.AuthMethod) error {
		p := pairs[0]
		pairs = pairs[1:]
		go e.srv.ServeConn(tunnelConn{p.server})
		c, chans, reqs, err := gossh.NewClientConn(p.client, "tunnel", e.clientConfig("root", auth...))
		if err != nil {
			p.client.Close()
			return err
		}
		gossh.NewClient(c, chans, reqs).Close()
		return nil
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 64, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for range 2 * limit {
		// Take what the last login freed once its end is done, and any
		// the runtime let go.
		time.Sleep(100 * time.Millisecond)
		for {
			f, err := os.Open(os.DevNull)
			if err != nil {
				break
			}
			fill = append(fill, f)
		}
		if login(auth...) != nil {
			failed++
		}
	}
	free()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	err = login(gossh.PublicKeys(e.key))
	if method == "password then a wrong key" {
		if err == nil || len(e.logs.logged("too many failed logins")) == 0 {
			t.Errorf("%d logins refused, each a wrong key's, then with descriptors free a login: %v; want the source blocked (MaxAuthFailures %d)",
				failed, err, limit)
		}
		return
	}
	if emfile := len(e.logs.logged("too many open files")); failed <= limit || emfile < failed {
		t.Fatalf("%d of %d logins refused with no descriptor free, %d logged with EMFILE; want over %d (MaxAuthFailures), each for EMFILE",
			failed, 2*limit, emfile, limit)
	}
	if err != nil {
		t.Errorf("once descriptors are free again, login: %v (the refusals were counted as failed logins: %q)",
			err, e.logs.logged("too many failed logins"))
	}
}
