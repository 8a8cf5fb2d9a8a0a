package agent

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// stallProxy forwards TCP to a broker. stall makes every live connection a
// half-open link (a cellular uplink that went away: writes still succeed into
// the socket, nothing comes back); cut closes them, as the keepalive or the
// kernel eventually does, and new connections are forwarded again.
type stallProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	stalled bool
	conns   []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go p.pipe(c, u)
			go p.pipe(u, c)
		}
	}()
	return p
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		stalled := p.stalled
		p.mu.Unlock()
		if n > 0 && !stalled { // stalled: the bytes are lost on the way
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *stallProxy) stall() { p.mu.Lock(); p.stalled = true; p.mu.Unlock() }

func (p *stallProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns, p.stalled = nil, false
}

// An event published while the link to the broker is half-open is delivered
// once when the link is back. Listener.Publish gives up waiting for the PUBACK
// while paho keeps the PUBLISH in the session and sends it again on the next
// connection: the event queue, taking the timeout for a failure, published the
// same event again at each retry, each a new message with a new packet
// identifier, and one SSH login became several records in the audit trail.
func TestEventNotMultipliedByHalfOpenLink(t *testing.T) {
	m := mqtttest.StartMosquitto(t)
	const thing = "thing-a"
	topic := "porthole/events/" + thing
	got := m.Subscribe(t, thing, topic) // the ACL lets thing-a read its event topic
	proxy := newStallProxy(t, m.Addr)
	cert, key := m.PKI.Client(t, thing)
	l, err := notify.New(notify.Config{
		ThingName: thing, Broker: proxy.ln.Addr().String(), CAFile: m.PKI.CAFile, CertFile: cert, KeyFile: key,
		KeepAlive:       60 * time.Second, // the agent's default: a half-open link goes unnoticed for a minute or more
		ConnectRetryMin: 20 * time.Millisecond, ConnectRetryMax: 100 * time.Millisecond,
		// Shorter than the agent's 15 s (and the queue's 10 s) so that the
		// test takes seconds: several timeouts while the link is half-open.
		OperationTimeout: 500 * time.Millisecond,
		Logger:           slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); l.Run(ctx) }()
	defer func() { cancel(); <-runDone }()
	if err := l.AwaitConnection(ctxWithTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	q := newEventQueue(func(ctx context.Context, b []byte) error { return l.Publish(ctx, topic, b) },
		slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	qctx, qcancel := context.WithCancel(context.Background())
	qdone := make(chan struct{})
	go func() { defer close(qdone); q.run(qctx); q.finish(100 * time.Millisecond) }()
	defer func() { qcancel(); <-qdone }()

	proxy.stall()
	q.add(Event{Type: "ssh-login-success", Thing: thing, Reason: "the-one-login"})
	time.Sleep(3 * time.Second) // the link stays half-open a while
	proxy.cut()                 // the keepalive notices; the listener reconnects

	n := 0
	for deadline := time.After(5 * time.Second); ; {
		select {
		case b := <-got:
			if strings.Contains(string(b), "the-one-login") {
				n++
			}
			continue
		case <-deadline:
		}
		break
	}
	if n != 1 {
		t.Errorf("one event published while the link was half-open was delivered %d times, want once", n)
	}
}
