package sshd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	if c, err := e.dial("alice", gossh.PublicKeys(newSigner(t))); err == nil {
		c.Close()
		t.Fatal("alice logged in with a key that is in no file")
	}
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
