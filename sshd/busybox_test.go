package sshd

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBusyBoxAsh logs in a user whose shell is BusyBox ash, as on OpenWrt
// and buildroot devices (Debian package busybox-static; under CI=true a
// missing busybox fails the test).
func TestBusyBoxAsh(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("busybox not found (install Debian's busybox-static; tools/deps.sh test does): %v", err)
		}
		t.Skip("busybox not found; install busybox-static to run this test")
	}
	var ash string
	e := newEnv(t, func(e *testEnv, s *Server) {
		// BusyBox picks the applet from argv[0]: a symlink named ash.
		ash = filepath.Join(e.dir, "bin", "ash")
		os.MkdirAll(filepath.Dir(ash), 0o755)
		if err := os.Symlink(bb, ash); err != nil {
			t.Fatal(err)
		}
		home := e.home("root")
		writeFile(t, s.PasswdFile, fmt.Sprintf("root:x:%d:%d:root:%s:%s\n", testRootUID(), testRootUID(), home, ash))
	})
	c := e.login("root")
	out, _, code := run(t, c, `echo "$0|$SHELL|${BASH_VERSION:-nobash}"; exit 9`, "")
	if want := "ash|" + ash + "|nobash\n"; out != want || code != 9 {
		t.Errorf("exec under ash = %q, exit %d; want %q, exit 9", out, code, want)
	}
	s := openSession(t, c)
	if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.WindowChange(33, 77); err != nil {
		t.Fatal(err)
	}
	in, _ := s.StdinPipe()
	stdout, _ := s.StdoutPipe()
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(in, "echo arg0=$0; stty size; exit 3\n")
	var all strings.Builder
	io.Copy(&all, bufio.NewReader(stdout))
	err = s.Wait()
	var ee interface{ ExitStatus() int }
	if e2, ok := err.(interface{ ExitStatus() int }); ok {
		ee = e2
	}
	if ee == nil || ee.ExitStatus() != 3 {
		t.Errorf("ash shell Wait = %v, want exit 3", err)
	}
	for _, w := range []string{"arg0=-ash", "33 77"} {
		if !strings.Contains(all.String(), w) {
			t.Errorf("ash login shell output %q lacks %q", all.String(), w)
		}
	}
}
