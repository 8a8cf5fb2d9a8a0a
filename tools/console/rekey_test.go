//go:build unix

package console

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// newRekeyingDevice is a device's SSH server that accepts any key and echoes
// its shell's input, and starts a new key exchange every 256 bytes it writes
// (x/crypto's least RekeyThreshold): a long session's rekeys, made frequent.
func newRekeyingDevice(t *testing.T) (addr string, hostKey ssh.PublicKey) {
	t.Helper()
	cfg := &ssh.ServerConfig{PublicKeyCallback: anyKey}
	cfg.RekeyThreshold = 256
	var wg sync.WaitGroup
	return serveDevice(t, &wg, cfg, func(nch ssh.NewChannel) {
		ch, reqs, err := nch.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ch.Close()
			for r := range reqs {
				r.Reply(true, nil)
				if r.Type == "shell" {
					go ssh.DiscardRequests(reqs)
					io.Copy(ch, ch)
					return
				}
			}
		}()
	}, func() {}, nil)
}

// TestTerminalRekeyAfterLogin: a key exchange of a session (a long session's
// rekey, here every 256 bytes) holds the device's host key to the one the login
// verified, and does not check it in the store again: after the login's time
// (its context expired), the store's lock held by another login at that moment
// (here another console's) ended the session; and a login that accepted a
// changed key logged it again at every rekey.
func TestTerminalRekeyAfterLogin(t *testing.T) {
	dev, _ := newRekeyingDevice(t) // before the lab: its cleanup runs after the console's
	const loginTimeout = time.Second
	l := newTestLab(t, Config{loginTimeout: loginTimeout})
	w := l.keyTerminal("dev-rekey", dev)
	w.ready()
	w.input("before\n")
	w.output("before")
	time.Sleep(loginTimeout) // the login's deadline has passed
	unlock, err := lockFileForTest(l.console.cfg.HostKeys.Path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock) // before the lab's cleanup, which waits for the terminal
	// Each echo passes the device's threshold several times. The device
	// asks for a key exchange at its first write past it, which may be the
	// round's last line: that line goes before the exchange, and only a
	// later round's waits for it. Rounds past the first see its outcome.
	for i := range 3 {
		w.input(strings.Repeat("x", 2000) + "\n")
		w.input(fmt.Sprintf("after %d\n", i))
		w.output(fmt.Sprintf("after %d", i))
	}
}

// TestTerminalRekeyAcceptedKeyLoggedOnce: the operator's acceptance of a
// changed host key is logged once, at the login, not again at every rekey.
func TestTerminalRekeyAcceptedKeyLoggedOnce(t *testing.T) {
	dev, key := newRekeyingDevice(t) // before the lab: its cleanup runs after the console's
	l := newTestLab(t, Config{})
	if _, err := l.console.cfg.HostKeys.Check(context.Background(), "dev-rekey", newHostKey(t), ""); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.devices["dev-rekey"] = &testDevice{addr: dev}
	l.mu.Unlock()
	tv := l.openTunnel(l.client(), "dev-rekey")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key", AcceptHostKey: ssh.FingerprintSHA256(key)})
	w.ready()
	w.input(strings.Repeat("x", 2000) + "\n")
	w.input("after\n")
	w.output("after")
	if n := strings.Count(l.logs.String(), "changed host key accepted by the operator"); n != 1 {
		t.Errorf("the accepted key logged %d times, want once", n)
	}
}
