package e2e

import (
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// TestFaultClientTokenUnwritable: issue 8's "data directory read-only or full
// when ... the client token is written (clear error, no partial files)", for
// both places a client token is written: the agent's tunnels/ (read-only; the
// full case is TestFaultDataDirUnwritable) and porthole connect's client-token
// cache (read-only and full). The tunnel works anyway, a line says why the
// token is not kept, and nothing but what was there is left.
func TestFaultClientTokenUnwritable(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	t.Run("agent tunnel state read-only", func(t *testing.T) {
		tunnels := filepath.Join(s.DataDir, "tunnels")
		os.MkdirAll(tunnels, 0o700)
		mountTmpfs(t, tunnels, "ro,size=64k,mode=0700")
		from := s.AgentLog.Len()
		open := s.OpenTunnel("SSH")
		s.AgentLog.Wait(t, regexp.MustCompile(`cannot save tunnel state.*read-only file system`), from, 20*time.Second)
		port, _, stop := s.Connect(open)
		defer stop()
		if got := s.MustSSH(port, "echo still works"); got != "still works\n" {
			t.Fatalf("ssh: %q", got)
		}
		if ents, _ := os.ReadDir(tunnels); len(ents) != 0 {
			t.Errorf("tunnels directory holds %d entries, want none", len(ents))
		}
	})
	for _, tc := range []struct{ name, opts, cause string }{
		{"connect cache read-only", "ro,size=64k,mode=0700", "read-only file system"},
		{"connect cache full", "size=4k,mode=0700", "no space left on device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := filepath.Join(s.Dir, "cache", "porthole", "client-tokens")
			os.RemoveAll(cache)
			os.MkdirAll(cache, 0o700)
			mountTmpfs(t, cache, tc.opts)
			want := 0
			if tc.cause == "no space left on device" {
				f, _ := os.Create(filepath.Join(cache, "filler"))
				io.Copy(f, io.LimitReader(rand.Reader, 1<<20))
				f.Close()
				want = 1
			}
			open := s.OpenTunnel("SSH")
			port, log, stop := s.Connect(open)
			if got := s.MustSSH(port, "echo still works"); got != "still works\n" {
				t.Fatalf("ssh: %q", got)
			}
			stop()
			if !regexp.MustCompile(`client token cache unusable.*` + tc.cause).MatchString(log.String()) {
				t.Errorf("porthole connect does not say why the client token is not kept:\n%s", log)
			}
			ents, _ := os.ReadDir(cache)
			if len(ents) != want {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Errorf("cache holds %q, want %d entries", names, want)
			}
		})
	}
}
