package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// pastingPage reads a terminal WebSocket all along, as the page does: the screen,
// and the "delivered" messages.
type pastingPage struct {
	w       *wsTerm
	mu      sync.Mutex
	screen  bytes.Buffer
	sent    int64         // keystroke bytes sent, as the console counts them: all since the login
	deliv   int64         // the console's last "delivered"
	changed chan struct{} // closed and replaced on every message
	err     error         // why reading ended
}

func newPastingPage(w *wsTerm) *pastingPage {
	p := &pastingPage{w: w, changed: make(chan struct{})}
	go func() {
		for {
			typ, b, err := w.c.Read(context.Background())
			p.mu.Lock()
			switch {
			case err != nil:
				p.err = err
			case typ == websocket.MessageBinary:
				p.screen.Write(b)
			default:
				var m serverMessage
				if json.Unmarshal(b, &m) == nil && m.Type == "delivered" {
					p.deliv = m.Bytes
				}
			}
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return p
}

// wait waits up to d for f, called with p.mu held, while the connection lasts.
func (p *pastingPage) wait(d time.Duration, f func() bool) bool {
	deadline := time.After(d)
	for {
		p.mu.Lock()
		ok, ch, err := f(), p.changed, p.err
		p.mu.Unlock()
		if ok || err != nil {
			return ok
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

// input types s.
func (p *pastingPage) input(t *testing.T, s string) {
	t.Helper()
	if err := p.w.c.Write(context.Background(), websocket.MessageBinary, []byte(s)); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.sent += int64(len(s))
	p.mu.Unlock()
}

// paste sends size bytes in 64 KiB pieces, as the page does: with at most
// maxHeld bytes not confirmed by the console. It returns how much it sent when
// a piece has waited d for room, or a write fails.
func (p *pastingPage) paste(size int, d time.Duration) (int, error) {
	piece := bytes.Repeat([]byte("x"), 64<<10)
	sent := 0
	for sent < size {
		n := min(len(piece), size-sent)
		if !p.wait(d, func() bool { return p.sent-p.deliv+int64(n) <= maxHeld }) {
			return sent, nil
		}
		if err := p.w.c.Write(context.Background(), websocket.MessageBinary, piece[:n]); err != nil {
			return sent, err
		}
		p.mu.Lock()
		p.sent += int64(n)
		p.mu.Unlock()
		sent += n
	}
	return sent, nil
}

// sees reports whether s is on the screen; p.mu is held.
func (p *pastingPage) sees(s string) bool { return strings.Contains(p.screen.String(), s) }

// String is the screen and the last "delivered", for failures.
func (p *pastingPage) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("screen %q, delivered %d", p.screen.String(), p.deliv)
}

// pasteTerminal is a terminal on a lab device, logged in, with a page to paste
// into it.
func pasteTerminal(t *testing.T) (*testLab, *wsTerm, *pastingPage) {
	l := newTestLab(t, Config{}, "dev-paste")
	tv := l.openTunnel(l.client(), "dev-paste")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.ready()
	return l, w, newPastingPage(w)
}

// TestTerminalPasteInStep: a paste of several MiB, more than the SSH channel's
// window and what the console holds, goes to a device that reads nothing for a
// while in step with it, as the page sends it: the console confirms what it has
// written to the channel, the page sends more, and the device gets all of it.
// Then, with another paste waiting for the device, the console notices at once
// that the page has gone: it reads the page all along.
func TestTerminalPasteInStep(t *testing.T) {
	const size = 6 << 20
	l, w, p := pasteTerminal(t)
	p.input(t, fmt.Sprintf("stty raw -echo; echo READY; sleep 2; head -c %d | wc -c | sed s/^/COUNT=/; echo READY2; sleep 60\r", size))
	if !p.wait(20*time.Second, func() bool { return p.sees("READY\n") }) {
		t.Fatalf("no READY on the screen: %v", p)
	}
	if sent, err := p.paste(size, 20*time.Second); sent != size {
		t.Fatalf("%d bytes of the paste sent, and no room for more in 20 s (%v): %v", sent, err, p)
	}
	if !p.wait(20*time.Second, func() bool { return p.sees(fmt.Sprint("COUNT=", size)) && p.sees("READY2\n") }) {
		t.Fatalf("the device did not count %d bytes: %v", size, p)
	}

	// The device reads nothing now: the page goes in the middle of a paste.
	pasted := make(chan int, 1)
	go func() {
		n, _ := p.paste(1<<30, 20*time.Second)
		pasted <- n
	}()
	time.Sleep(time.Second)
	w.c.CloseNow() // the tab is closed
	defer func() { t.Logf("%d bytes of the second paste sent", <-pasted) }()
	line, ok := l.loggedEnd(5 * time.Second)
	if !ok || !strings.Contains(line, " by=page ") {
		t.Fatalf("terminal ended with %q (%v), want by=page at once", line, ok)
	}
}

// TestTerminalPasteNotInStep: a client that sends a large paste at once, not in
// step, to a device that reads nothing for a while still gets all of it there:
// the console then reads it only as fast as the device takes it.
func TestTerminalPasteNotInStep(t *testing.T) {
	const size = 6 << 20
	_, w, p := pasteTerminal(t)
	w.input(fmt.Sprintf("stty raw -echo; echo READY; sleep 2; head -c %d | wc -c | sed s/^/COUNT=/\r", size))
	if !p.wait(20*time.Second, func() bool { return p.sees("READY\n") }) {
		t.Fatalf("no READY on the screen: %v", p)
	}
	piece := bytes.Repeat([]byte("x"), 64<<10)
	for sent := 0; sent < size; sent += len(piece) {
		if err := w.c.Write(context.Background(), websocket.MessageBinary, piece); err != nil {
			t.Fatalf("writing the paste at %d: %v", sent, err)
		}
	}
	if !p.wait(20*time.Second, func() bool { return p.sees(fmt.Sprint("COUNT=", size)) }) {
		t.Fatalf("the device did not count %d bytes: %v", size, p)
	}
}
