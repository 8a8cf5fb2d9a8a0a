package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/board"
	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// TestLabBoardAsAUserRunsIt runs porthole-lab --board qemu-aarch64-virt as a user
// would: the lab cross-builds porthole, builds the board's initramfs and boots it;
// the printed ssh line logs in to the board through the tunnel (uname -m is
// aarch64); SIGINT stops the lab and QEMU. Like the board tests it runs only with
// PORTHOLE_BOARD_TEST=1 (make test's board tier).
func TestLabBoardAsAUserRunsIt(t *testing.T) {
	if os.Getenv("PORTHOLE_BOARD_TEST") != "1" {
		t.Skip("set PORTHOLE_BOARD_TEST=1 to boot a QEMU board (make test's board tier does)")
	}
	const name = "qemu-aarch64-virt"
	ssh := stack.NeedProgram(t, "ssh")
	for _, p := range []string{"qemu-system-aarch64", "cpio", "readelf", "apt-get", "dpkg-deb", "go"} {
		stack.NeedProgram(t, p)
	}
	console := func(state string) string {
		return "\nboard console:\n" + tail(filepath.Join(state, "board-"+name+".log"), 30)
	}
	l := startLab(t, []string{"tools/lab/cmd/porthole-lab"}, 80*time.Second, console,
		"--board", name, "--ssh-port", "0", "--http-port", "0", "--console", "")
	state, info := l.state, l.info
	defer func() {
		l.cmd.Process.Kill()
		for _, pid := range qemuOf(state) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	if info.Board != name || info.BoardLog != filepath.Join(state, "board-"+name+".log") || info.User != "root" {
		t.Fatalf("lab.json: board %q, board_log %q, user %q", info.Board, info.BoardLog, info.User)
	}
	qemu := qemuOf(state)
	if len(qemu) != 1 {
		t.Fatalf("QEMU processes of this lab: %v, want one", qemu)
	}
	args := append([]string{"-o", "BatchMode=yes", "-o", "LogLevel=ERROR"}, strings.Fields(info.SSHCommand)[1:]...)
	got, err := exec.Command(ssh, append(args, "uname", "-m")...).CombinedOutput()
	if err != nil || string(got) != "aarch64\n" {
		t.Fatalf("ssh through the lab into the board: %v, %q\nboard console:\n%s", err, got, tail(info.BoardLog, 20))
	}

	l.stop(t)
	if err := syscall.Kill(qemu[0], 0); err == nil {
		t.Fatalf("QEMU (pid %d) is still running after the lab stopped", qemu[0])
	}
	if left := qemuOf(state); len(left) != 0 {
		t.Fatalf("processes of the board left after the lab stopped: %v", left)
	}
}

// qemuOf lists the processes whose command line names the state directory's board
// image: the lab's QEMU.
func qemuOf(state string) []int {
	var pids []int
	m, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range m {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte(filepath.Join(state, "board"))) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestServerCertificatesNameTheBoardsHost checks that the broker's and tunneld's
// certificates name 10.0.2.2 (the host as a QEMU board sees it), and that one
// from before --board, without it, is issued again.
func TestServerCertificatesNameTheBoardsHost(t *testing.T) {
	dir := t.TempDir()
	p, err := loadOrCreatePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	// An old-style server certificate: 127.0.0.1 only.
	issueLeaf(t, p, dir, "broker", &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: serverIPs[:1]})

	for _, name := range []string{"broker", "tunneld"} {
		certFile, keyFile, err := p.leaf(dir, name, true)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"127.0.0.1", "10.0.2.2", "localhost"} {
			if err := pair.Leaf.VerifyHostname(h); err != nil {
				t.Errorf("%s certificate: %v", name, err)
			}
		}
		again, _, _ := p.leaf(dir, name, true)
		if b1, b2 := mustRead(t, certFile), mustRead(t, again); !bytes.Equal(b1, b2) {
			t.Errorf("%s certificate issued again although it names every address", name)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBoardImageStopsWithItsChildren stops the lab (its context ends) while
// board/build.sh runs a child that writes to the script's output, as its
// fetch.sh's apt-get does on a first run: the lab must stop at once, and the
// child with it. Killing build.sh alone left the child running, and the lab
// waiting on the output pipe the child held until the child ended (on a
// SIGTERM from outside the terminal: Ctrl-C reaches the child too).
func TestBoardImageStopsWithItsChildren(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	info := Info{StateDir: state, CAFile: filepath.Join(state, "ca.pem"),
		DeviceCert: filepath.Join(state, "device", "dev.crt"), DeviceKey: filepath.Join(state, "device", "dev.key")}
	for _, p := range []string{info.CAFile, info.DeviceCert, info.DeviceKey, filepath.Join(state, "device", "authorized_keys")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	boardDir := filepath.Join(dir, "board")
	if err := os.MkdirAll(boardDir, 0o700); err != nil {
		t.Fatal(err)
	}
	childPID := filepath.Join(dir, "child.pid")
	script := "#!/bin/sh\nsleep 60 >&2 &\necho $! >" + childPID + "\nwait\n"
	if err := os.WriteFile(filepath.Join(boardDir, "build.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- buildImage(ctx, board.Conf{Dir: boardDir, Name: "test"}, newBoardFiles(state, "test"), info, "1", "2", "3")
	}()
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("build.sh did not start its child within 10s")
		}
		b, _ := os.ReadFile(childPID)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("buildImage = nil after its context ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("buildImage still waiting 5s after its context ended (for build.sh's child)")
	}
	// Gone, or a zombie that nobody has reaped yet.
	for deadline := time.Now().Add(2 * time.Second); testenv.ProcessRunning(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("build.sh's child (pid %d) is still running after the lab stopped", pid)
		}
	}
}
