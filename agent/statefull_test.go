package agent

import (
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// fillTunnelsDir makes e's data_dir/tunnels a full file system, as a device's
// flash filled up by logs: a 4 KiB tmpfs with a filler written until ENOSPC.
// free removes the filler, as an operator does. It needs root, as the agent's
// tests do, and a kernel that lets it mount (CI's does).
func fillTunnelsDir(t *testing.T, e *agentEnv) (free func()) {
	t.Helper()
	tunnels := filepath.Join(e.dataDir, "tunnels")
	mountForTest(t, "tmpfs", tunnels, "tmpfs", 0, "size=4k,mode=0700")
	filler := filepath.Join(tunnels, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(f, io.LimitReader(rand.Reader, 1<<20)) // until ENOSPC
	f.Close()
	return func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
}

// A tunnel notified while data_dir was full is saved at the stop once space
// has been freed, and the next start resumes it. Its save was tried once, and
// the stop rewrote existing files only: the restarted agent did not rejoin the
// tunnel, whose access token cannot be used again without the client token
// that was never saved.
func TestUnsavedTunnelSavedAtStop(t *testing.T) {
	e := newAgentEnv(t)
	_, stop := e.start(t)
	stop() // the host key is made: only tunnels/ will be full
	free := fillTunnelsDir(t, e)
	var logs testlog.Lines
	a, stop := e.startLogging(t, io.MultiWriter(&logs, testWriter{t}))
	tun := notifyTunnel(t, e, a)
	if n := logs.Count("cannot save tunnel state"); n != 1 {
		t.Fatalf("%d lines say the tunnel's state cannot be saved, want 1", n)
	}
	free()
	stop()
	path := stateStore{dir: filepath.Join(e.dataDir, "tunnels")}.path(tokenKey(tun.DestinationToken))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("the stop did not save the tunnel whose save failed while data_dir was full: %v", err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("state file mode %04o, want 0600", m)
	}
	if n := logs.Count("tunnel state saved; a restart will resume this tunnel"); n != 1 {
		t.Errorf("%d lines say the state was saved, want 1", n)
	}
	if strings.Contains(logs.String(), tun.DestinationToken) {
		t.Error("the log holds the access token")
	}
	e.start(t)
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 2); err != nil {
		t.Errorf("the restarted agent did not resume the tunnel: %v", err)
	}
}

// A tunnel notified while data_dir was full is saved while it runs, at the
// next clock check once space has been freed (an operator frees it through
// that tunnel), so that an agent that then dies without a stop (a power cut,
// the watchdog) resumes it too. Failed tries are not logged every check.
func TestUnsavedTunnelSavedWhileRunning(t *testing.T) {
	// Restored after the agents the test starts have stopped (cleanups run
	// last in, first out).
	d := clockCheckInterval
	t.Cleanup(func() { clockCheckInterval = d })
	clockCheckInterval = 20 * time.Millisecond
	e := newAgentEnv(t)
	_, stop := e.start(t)
	stop()
	free := fillTunnelsDir(t, e)
	var logs testlog.Lines
	a, stop := e.startLogging(t, io.MultiWriter(&logs, testWriter{t}))
	tun := notifyTunnel(t, e, a)
	time.Sleep(10 * clockCheckInterval) // checks that fail to save
	if n := logs.Count("cannot save tunnel state"); n != 1 {
		t.Errorf("%d lines say the tunnel's state cannot be saved while data_dir is full, want 1", n)
	}
	free()
	path := stateStore{dir: filepath.Join(e.dataDir, "tunnels")}.path(tokenKey(tun.DestinationToken))
	var left []byte // what the agent leaves if it dies now
	for deadline := time.Now().Add(10 * time.Second); left == nil && time.Now().Before(deadline); time.Sleep(clockCheckInterval) {
		left, _ = os.ReadFile(path)
	}
	if left == nil {
		t.Fatal("the running agent did not save the tunnel once data_dir had space again")
	}
	time.Sleep(10 * clockCheckInterval) // checks after the save
	if n := logs.Count("tunnel state saved; a restart will resume this tunnel"); n != 1 {
		t.Errorf("%d lines say the state was saved, want 1", n)
	}
	stop()
	// The start after a crash: the file as it was while the agent ran.
	if err := os.WriteFile(path, left, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 2); err != nil {
		t.Errorf("a start after the agent died did not resume the tunnel: %v", err)
	}
}

// A saved tunnel the agent gives up at its start (no service it serves now, an
// access token it cannot use) is forgotten; when its file cannot be removed
// (data_dir read-only), the log says so and why, as a removal at a tunnel's end
// does: else every start warns about the same tunnel again, with no word on why
// its file is still there.
func TestForgetFailureLogged(t *testing.T) {
	e := newAgentEnv(t) // [services] SSH only
	tunnels := filepath.Join(e.dataDir, "tunnels")
	mountForTest(t, "tmpfs", tunnels, "tmpfs", 0, "size=64k,mode=0700")
	store := stateStore{dir: tunnels}
	vnc := e.fake.OpenTunnel("VNC")
	unusable := "AQGAAX\x01unusable" // a control character
	for tok, service := range map[string]string{vnc.DestinationToken: "VNC", unusable: "SSH"} {
		if err := store.save(savedTunnel{AccessToken: tok, ClientToken: tunnel.GenerateClientToken().Reveal(), Region: testRegion,
			Services: []string{service}, Received: time.Now().Add(-time.Hour).UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mount("tmpfs", tunnels, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	var logs testlog.Lines
	e.startLogging(t, io.MultiWriter(&logs, testWriter{t}))
	for _, fp := range []string{fingerprint(vnc.DestinationToken), fingerprint(unusable)} {
		want := "removing tunnel state\" tunnel=" + fp + " error=\"remove " // the cause follows
		for deadline := time.Now().Add(10 * time.Second); logs.Count(want) == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no line %q in 10 s", want)
			}
		}
	}
	if n := logs.Count("read-only file system"); n != 2 {
		t.Errorf("%d lines give the cause (read-only file system), want 2", n)
	}
}
