package sshd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// The agent's log is one stream: the SSH server's lines name an error with the
// key the tunnel's and the agent's lines use (error=), so that one grep, or
// one field of a log collector, finds every failure.
func TestLogErrorKey(t *testing.T) {
	needRoot(t)
	e := newEnv(t, nil)
	ak := filepath.Join(e.home("alice"), ".ssh", "authorized_keys")
	if err := os.WriteFile(ak, []byte("not-a-key-type AAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.refuse("alice", gossh.PublicKeys(newSigner(t)))
	lines := e.logs.logged("authorized keys line skipped")
	if len(lines) == 0 {
		t.Fatal("no line skipped logged")
	}
	for _, l := range lines {
		if !strings.Contains(l, " error=") || strings.Contains(l, " err=") {
			t.Errorf("want the error under the key error=: %s", l)
		}
	}
}

// TestLoginLineNamesWhatWasUsed: the login line names the key only for a key
// login and the certificate only for a certificate's, rather than key="" and
// cert="" on every other one.
func TestLoginLineNamesWhatWasUsed(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ca := newSigner(t)
	e := newEnv(t, func(e *testEnv, s *Server) {
		s.PasswordHashes = map[string]string{"root": string(hash)}
		caFile := filepath.Join(e.dir, "user_ca.pub")
		writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
		s.TrustedUserCAKeysFiles = []string{caFile}
	})
	for _, tc := range []struct {
		name      string
		auth      gossh.AuthMethod
		want, not []string
	}{
		{"password", gossh.Password("s3cret"), []string{" method=password"}, []string{" key=", " cert="}},
		{"key", gossh.PublicKeys(e.key), []string{" method=publickey", " key=SHA256:"}, []string{" cert="}},
		{"certificate", gossh.PublicKeys(newCert(t, ca, newSigner(t), nil)), []string{" key=SHA256:", " cert=test-cert serial=42"}, nil},
	} {
		before := len(e.logs.logged("msg=login "))
		c, err := e.dial("root", tc.auth)
		if err != nil {
			t.Fatalf("%s login: %v", tc.name, err)
		}
		c.Close()
		lines := e.logs.logged("msg=login ")
		if len(lines) != before+1 {
			t.Fatalf("%s login: %d login lines, want one more than %d", tc.name, len(lines), before)
		}
		l := lines[len(lines)-1]
		for _, w := range tc.want {
			if !strings.Contains(l, w) {
				t.Errorf("%s login line lacks %q: %s", tc.name, w, l)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(l, n) {
				t.Errorf("%s login line has %q: %s", tc.name, n, l)
			}
		}
	}
}

// TestSessionLinesSayHowLong: session-end says how long the session lasted, as
// its audit event does, and a session without a command (a shell, SFTP) has
// no command="" on its lines.
func TestSessionLinesSayHowLong(t *testing.T) {
	e := newEnv(t, nil)
	c, err := e.dial("root", gossh.PublicKeys(e.key))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if out, _, _ := run(t, c, "sleep 0.2; echo done", ""); out != "done\n" {
		t.Fatalf("exec: %q", out)
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	s.Stdin = strings.NewReader("exit\n")
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	s.Wait()
	waitFor(t, "the shell's session-end", func() bool { return len(e.logs.logged("msg=session-end ", "kind=shell")) == 1 })
	ends := e.logs.logged("msg=session-end ")
	if len(ends) != 2 {
		t.Fatalf("session-end lines: %q, want 2", ends)
	}
	for _, l := range ends {
		_, d, ok := strings.Cut(l, " duration=")
		if !ok {
			t.Errorf("session-end without a duration: %s", l)
			continue
		}
		if dur, err := time.ParseDuration(strings.Fields(d)[0]); err != nil || strings.Contains(l, "kind=exec") && dur < 200*time.Millisecond {
			t.Errorf("session-end duration %q (%v): %s", strings.Fields(d)[0], err, l)
		}
	}
	for _, l := range e.logs.logged("kind=shell") {
		if strings.Contains(l, "command=") {
			t.Errorf("a shell's line names a command: %s", l)
		}
	}
}
