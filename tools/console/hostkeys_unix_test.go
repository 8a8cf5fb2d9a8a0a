//go:build unix

package console

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestHostKeyCheckInterruptible: a login whose host-key check waits for the
// store's lock (another console holds it) ends as soon as the page goes, not once
// the lock is let go.
func TestHostKeyCheckInterruptible(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-locked")
	unlock, err := lockFileForTest(l.console.cfg.HostKeys.Path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock) // before the lab's cleanup, which waits for the terminal
	tv := l.openTunnel(l.client(), "dev-locked")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.until("the connecting note", func(m *serverMessage, _ string) bool {
		return m != nil && m.Type == "info" && strings.Contains(m.Text, "connecting to")
	})
	time.Sleep(time.Second)                  // the handshake reaches the host key
	w.c.Close(websocket.StatusGoingAway, "") // the tab is closed
	line, ok := l.loggedEnd(5 * time.Second)
	if !ok {
		t.Fatal("the login went on waiting for the host key store after the page had gone")
	}
	if !strings.Contains(line, " by=page ") {
		t.Errorf("terminal ended with %q, want by=page", line)
	}
}

// TestHostKeysCheckWaitsForTheLock: while another console holds the store's
// lock, Check waits for it until its context ends, and goes on once it is free.
func TestHostKeysCheckWaitsForTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hostkeys.json")
	unlock, err := lockFileForTest(path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	h := &HostKeys{Path: path}
	key := newHostKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := h.Check(ctx, "dev1", key, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Check with the lock held = %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Check took %v after its context ended", d)
	}
	done := make(chan error, 1)
	go func() {
		first, err := h.Check(context.Background(), "dev1", key, "")
		if err == nil && !first {
			err = errors.New("not first use")
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Check once the lock is free: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Check did not go on once the lock was free")
	}
}

// lockFileForTest takes the host key store's lock as another console would.
func lockFileForTest(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
