package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// lateProxy is the agent's HTTPS proxy (tunnel.https_proxy, CONNECT). After
// hold, the next connection's first request, the WebSocket upgrade, is kept
// and the agent's side of that connection closed, as a path that lost the
// answer: the agent reconnects. release sends the request to tunneld late, on
// a connection of its own that nobody reads, as a network that delivered it
// after the agent had given up on it would.
type lateProxy struct {
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	hold   bool
	held   []byte // the upgrade request, with the CONNECT target below
	target string
	conns  []net.Conn
	heldCh chan struct{} // closed when a request is held
}

func newLateProxy(t *testing.T) *lateProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lateProxy{ln: ln, heldCh: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.track(c)
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	return p
}

func (p *lateProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *lateProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	p.mu.Lock()
	hold := p.hold
	p.hold = false
	p.mu.Unlock()
	if hold {
		var b []byte
		for !bytes.Contains(b, []byte("\r\n\r\n")) {
			line, err := br.ReadBytes('\n')
			b = append(b, line...)
			if err != nil {
				return
			}
		}
		p.mu.Lock()
		p.held, p.target = b, req.Host
		p.mu.Unlock()
		close(p.heldCh)
		return // closes the agent's side
	}
	u, err := net.Dial("tcp", req.Host)
	if err != nil {
		return
	}
	p.track(u)
	defer u.Close()
	done := make(chan struct{})
	go func() { io.Copy(c, u); c.Close(); close(done) }()
	io.Copy(u, br)
	u.Close()
	<-done
}

// release sends the held request to tunneld on a connection of its own, and
// discards what comes back.
func (p *lateProxy) release(t *testing.T) {
	p.mu.Lock()
	b, target := p.held, p.target
	p.mu.Unlock()
	u, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	p.track(u)
	if _, err := u.Write(b); err != nil {
		t.Fatal(err)
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); io.Copy(io.Discard, u) }()
}

// TestReplacedByALateHandshakeKeepsTheSession: a reconnect of the agent's
// with the same access and client tokens replaces the connection tunneld has
// for that side (spec §3.8), but the later handshake is not always the
// connection the agent uses: here a handshake the agent gave up on reaches
// tunneld after its next reconnect succeeded, and replaces the agent's live
// connection. tunneld cuts the replaced connection without a Close frame, so
// the agent reconnects and goes on; a Close frame would be the end of the
// tunnel to it (ErrClosedByService: tunnel-ended, the saved state forgotten).
func TestReplacedByALateHandshakeKeepsTheSession(t *testing.T) {
	if testing.Short() {
		t.Skip("builds porthole and runs Mosquitto and ssh")
	}
	topic := "porthole/events/" + stack.Thing
	proxy := newLateProxy(t)
	s := stack.Start(t, stack.Options{
		PlainWebSocket: true, // the proxy reads the upgrade request
		Tunnel:         []string{fmt.Sprintf("https_proxy = %q", "http://"+proxy.ln.Addr().String())},
		MQTT:           []string{fmt.Sprintf("event_topic = %q", topic)},
	})
	ev := collectEvents(t, s, topic)
	open := s.OpenTunnel("SSH")
	port, _, stopConnect := s.Connect(open)
	defer stopConnect()
	s.MustSSH(port, "true")
	dp := s.TD().Dataplane(open.TunnelID)

	proxy.mu.Lock()
	proxy.hold = true
	proxy.mu.Unlock()
	dp.Drop(dataplane.Destination) // the agent reconnects: its first try is held
	select {
	case <-proxy.heldCh:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not reconnect through the proxy")
	}
	if err := dp.WaitConnects(ctxTimeout(t, 30*time.Second), dataplane.Destination, 2); err != nil {
		t.Fatal(err)
	}
	proxy.release(t) // replaces the agent's live connection
	if err := dp.WaitConnects(ctxTimeout(t, 30*time.Second), dataplane.Destination, 3); err != nil {
		t.Fatal(err)
	}
	if err := dp.WaitConnects(ctxTimeout(t, 30*time.Second), dataplane.Destination, 4); err != nil {
		t.Fatalf("the agent did not reconnect after its live connection was replaced: %v\nagent log:\n%s", err, s.AgentLog)
	}
	if got := s.MustSSH(port, "echo still there"); got != "still there\n" {
		t.Fatalf("ssh after the replacement: %q", got)
	}
	ev.mu.Lock()
	seen := append([]string(nil), ev.list...)
	ev.mu.Unlock()
	for _, b := range seen {
		var e struct{ Type, Reason string }
		json.Unmarshal([]byte(b), &e)
		if e.Type == "tunnel-ended" {
			t.Errorf("the agent ended the tunnel: %s", b)
		}
	}
	if saved, _ := filepath.Glob(filepath.Join(s.DataDir, "tunnels", "*.json")); len(saved) != 1 {
		t.Errorf("%d saved tunnels, want 1", len(saved))
	}
}
