package tunnel_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// runSource runs src until the test ends and returns the address it listens on
// for service.
func runSource(t *testing.T, src *tunnel.Source, service string) string {
	t.Helper()
	ready := make(chan string, 4)
	src.OnListen = func(s string, a net.Addr) {
		if s == service {
			ready <- a.String()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-ready:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("source did not listen")
		return ""
	}
}

// waitUntil waits up to 30 s for cond, polling: a wait on what the test needs
// to have happened, not a guess at how long it takes on a slow machine (-race,
// qemu-user). It fails saying what did not happen.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %s has not happened", what)
		}
	}
}

// goroutines returns the stacks of all goroutines.
func goroutines() string {
	buf := make([]byte, 1<<20)
	for {
		if n := runtime.Stack(buf, true); n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitLogged waits until log has a line containing sub.
func waitLogged(t *testing.T, log *testlog.Lines, sub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for log.Count(sub) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q:\n%s", sub, log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A connection through a source whose device has not joined the tunnel gets no
// answer: the service drops its frames in silence. The source says so once per
// connection to the service, and keeps the connection open for a device that
// joins later (ssh hung with no word before).
func TestSourceSaysDeviceHasNotAnswered(t *testing.T) {
	srv := tunneltest.NewServer(t)
	srv.Logf = t.Logf
	tun := srv.OpenTunnel("SSH")
	var logged testlog.Lines
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
		Logger: slog.New(slog.NewTextHandler(&logged, nil))}, Listen: map[string]string{"SSH": "127.0.0.1:0"},
		AnswerWait: 10 * time.Millisecond}
	addr := runSource(t, src, "SSH")
	const hint = "the device has not answered yet"
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("SSH-2.0-test\r\n"))
		conns = append(conns, c)
	}
	waitLogged(t, &logged, hint)
	for _, want := range []string{"describe-tunnel", "destinationConnectionState", "service=SSH"} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("the hint does not say %q:\n%s", want, logged.String())
		}
	}
	time.Sleep(100 * time.Millisecond) // both connections' waits are long over
	if n := logged.Count(hint); n != 1 {
		t.Errorf("logged the hint %d times for one connection to the service, want 1:\n%s", n, logged.String())
	}
	conns[0].SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := conns[0].Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read from the waiting connection = %v, want it still open", err)
	}
}

// No hint when the device answers.
func TestSourceNoHintWhenDeviceAnswers(t *testing.T) {
	addr := echoServer(t, 0x51)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true})
	var logged testlog.Lines
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: h.srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, h.tun.SourceToken),
		Logger: slog.New(slog.NewTextHandler(&logged, nil))}, Listen: map[string]string{"SSH": "127.0.0.1:0"},
		AnswerWait: 200 * time.Millisecond}
	local := runSource(t, src, "SSH")
	c := openEcho(t, local, 0x51) // answered
	defer c.Close()
	time.Sleep(400 * time.Millisecond)
	if n := logged.Count("has not answered"); n != 0 {
		t.Errorf("hinted that a device that answered had not:\n%s", logged.String())
	}
}

// --stdio - on a tunnel of several services says that the service must be named,
// and which the tunnel has (it named an empty service before).
func TestStdioUnnamedServiceOnSeveralServices(t *testing.T) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH", "WEB")
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true,
		AccessToken: mustToken(t, tun.SourceToken), Logger: testLogger(t)}}
	inR, inW := io.Pipe()
	defer inW.Close()
	err := src.RunStdio(ctxTimeout(t, 10*time.Second), "", inR, io.Discard)
	if !errors.Is(err, tunnel.ErrConfig) || !strings.Contains(err.Error(), "one-service tunnel") ||
		!strings.Contains(err.Error(), `["SSH" "WEB"]`) || strings.Contains(err.Error(), `service ""`) {
		t.Fatalf("RunStdio(\"\") on a two-service tunnel = %v, want ErrConfig saying to name one of SSH and WEB", err)
	}
}

// --stdio SERVICE on a tunnel without services is refused as -L SERVICE=port is
// (ErrConfig): its STREAM_START named a service the tunnel does not have, which
// the service answers by closing the connection (spec §1.5), and porthole
// connect said the tunnel was closed or its token rotated. The message says
// the tunnel has no services (it said "which has []").
func TestStdioNamedServiceOnServicelessTunnel(t *testing.T) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel()
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true,
		AccessToken: mustToken(t, tun.SourceToken), Logger: testLogger(t)}}
	inR, inW := io.Pipe()
	defer inW.Close()
	err := src.RunStdio(ctxTimeout(t, 10*time.Second), "SSH", inR, io.Discard)
	if !errors.Is(err, tunnel.ErrConfig) || !strings.Contains(err.Error(), `"SSH" is not in the tunnel, which has no services`) {
		t.Fatalf("RunStdio(\"SSH\") on a tunnel without services = %v, want ErrConfig naming SSH and saying the tunnel has none", err)
	}
}

// --stdio SERVICE over a V1 connection, which has no SERVICE_IDS to check the
// service against, is carried.
func TestStdioV1(t *testing.T) {
	addr := echoServer(t, 7)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, protocol: tunnel.V1, peer: tunnel.V1, noSource: true,
		dstTweak: func(d *tunnel.Destination) { d.DefaultService = "SSH" }})
	stdioEcho(t, &tunnel.Source{Config: h.Src.Config, PeerVersion: tunnel.V1}, "SSH", 7)
}

// Towards a V2 (or V1) destination a second local connection of a service ends the
// first: the source says so, instead of the first one just dropping.
func TestSourceSaysV2ConnectionReplaced(t *testing.T) {
	addr := echoServer(t, 0x52)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr}, noSource: true})
	var logged testlog.Lines
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: h.srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, h.tun.SourceToken),
		Logger: slog.New(slog.NewTextHandler(&logged, nil))}, Listen: map[string]string{"SSH": "127.0.0.1:0"}, PeerVersion: tunnel.V2}
	local := runSource(t, src, "SSH")
	first := openEcho(t, local, 0x52)
	defer first.Close()
	if n := logged.Count("replaces the open one"); n != 0 {
		t.Fatalf("warned of a replaced connection with one connection:\n%s", logged.String())
	}
	second := openEcho(t, local, 0x52)
	defer second.Close()
	waitClosed(t, first, 5*time.Second)
	waitLogged(t, &logged, "a new local connection replaces the open one: a V2 destination")
}

// CheckCAFile finds a missing CA file, or one without a certificate, before any
// dial; both wrap ErrCAFile, as Dial's error does.
func TestCheckCAFile(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate\n"), 0o600)
	for _, path := range []string{filepath.Join(dir, "missing.pem"), garbage, t.TempDir()} {
		if err := tunnel.CheckCAFile(path); !errors.Is(err, tunnel.ErrCAFile) {
			t.Errorf("CheckCAFile(%s) = %v, want ErrCAFile", path, err)
		}
		tok := mustToken(t, "t")
		_, err := tunnel.Dial(context.Background(), &tunnel.Config{Endpoint: "127.0.0.1:1", AccessToken: tok, CAFile: path}, tunnel.ModeSource)
		if !errors.Is(err, tunnel.ErrCAFile) {
			t.Errorf("Dial with CA file %s = %v, want ErrCAFile", path, err)
		}
	}
}

// A named service's port accepts before the tunnel is up: a connection made
// while the service cannot be reached is closed after ReadyWait with a line
// (it sat unseen in the listen backlog before, and the client hung), and with
// a reset: a plain end showed a raw download (nc > file) as a whole, empty
// one.
func TestSourceClosesConnectionsWhileNotConnected(t *testing.T) {
	addr, logged := downSource(t, 300*time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read from a connection while the tunnel is down = %v, want a reset", err)
	}
	waitLogged(t, logged, "tunnel not connected, closing local connection")
}

// Connections made while the tunnel is down wait for it side by side: each is
// closed ReadyWait after it came (the sixth of six was closed after 6 ×
// ReadyWait, each waiting for those before it), and past maxWaiting (64) they
// are closed at once with a line.
func TestSourceConnectionsWaitSideBySide(t *testing.T) {
	const wait = time.Second
	addr, _ := downSource(t, wait)
	const n = 6
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	// Side by side, all are closed about `wait` after they came; one after
	// another, the last would be open until n × wait.
	deadline := time.Now().Add(n / 2 * wait)
	for i, c := range conns {
		c.SetReadDeadline(deadline)
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("connection %d of %d, %v after they were made: read = %v, want a reset", i+1, n, n/2*wait, err)
		}
	}

	// 64 wait; the 65th is closed at once, with a reset.
	addr, logged := downSource(t, time.Minute)
	for i := range 65 {
		c, err := net.Dial("tcp", addr)
		if i == 64 && resetOnDial(err) {
			break // the reset came before the dial returned
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i == 64 {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("read from the 65th connection = %v, want a reset", err)
			}
		}
	}
	waitLogged(t, logged, "too many local connections waiting for the tunnel")
	if got := logged.Count("too many local connections waiting"); got != 1 {
		t.Errorf("%d lines about too many waiting connections, want 1:\n%s", got, logged.String())
	}
}

// resetOnDial reports whether err is a dial that a reset ended before it
// returned. Under qemu-user the errno connect reads back (SO_ERROR) is the
// host's, untranslated: 104, x86's ECONNRESET, where mips has 131.
func resetOnDial(err error) bool {
	var errno syscall.Errno
	return errors.Is(err, syscall.ECONNRESET) || os.Getenv("PORTHOLE_QEMU_USER") != "" && errors.As(err, &errno) && errno == 104
}

// downSource runs, until the test ends, a source whose tunnel's service refuses
// every handshake, listening for SSH with the given ReadyWait. It returns the
// address and the source's log.
func downSource(t *testing.T, wait time.Duration) (string, *testlog.Lines) {
	t.Helper()
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	srv.FailHandshakes(1000000, 503, "try later")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	logged := new(testlog.Lines)
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
		RetryMin: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logged, nil))},
		Listen: map[string]string{"SSH": addr}, ReadyWait: wait}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitLogged(t, logged, "msg=listening")
	return addr, logged
}

// v2Destination joins tun as a destination in V2 format, as localproxy 2.x,
// AWS IoT Device Client and Greengrass do (spec §3.3): it answers a
// STREAM_START with a greeting without a connection id (unless quiet: a
// service whose client speaks first, HTTP), echoes the DATA of the service's
// active stream, and answers a CONNECTION_START, which it does not know, with
// STREAM_RESET. It reports each CONNECTION_START on starts, and counts the
// STREAM_STARTs and STREAM_RESETs it has read.
func v2Destination(t *testing.T, srv *tunneltest.Server, tun *tunneltest.Tunnel, quiet bool) *v2Dest {
	ctx := ctxTimeout(t, 60*time.Second)
	dst, err := tunnel.Dial(ctx, &tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, Protocol: tunnel.V2,
		AccessToken: mustToken(t, tun.DestinationToken)}, tunnel.ModeDestination)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 64)
	d := &v2Dest{starts: ch}
	done := make(chan struct{})
	t.Cleanup(func() { dst.Close(); <-done })
	go func() {
		defer close(done)
		var m tunnel.Message
		active := map[string]int32{}
		for dst.ReadMessage(&m) == nil {
			switch m.Type {
			case tunnel.TypeStreamReset:
				d.streamResets.Add(1)
			case tunnel.TypeStreamStart:
				d.streamStarts.Add(1)
				active[m.ServiceID] = m.StreamID
				if !quiet {
					dst.WriteMessage(ctx, &tunnel.Message{Type: tunnel.TypeData, StreamID: m.StreamID, ServiceID: m.ServiceID, Payload: []byte("HELLO\n")})
				}
			case tunnel.TypeData:
				if active[m.ServiceID] == m.StreamID {
					dst.WriteMessage(ctx, &tunnel.Message{Type: tunnel.TypeData, StreamID: m.StreamID, ServiceID: m.ServiceID, Payload: append([]byte(nil), m.Payload...)})
				}
			case tunnel.TypeConnectionStart:
				select {
				case ch <- struct{}{}:
				default:
				}
				dst.WriteMessage(ctx, &tunnel.Message{Type: tunnel.TypeStreamReset, StreamID: m.StreamID, ServiceID: m.ServiceID})
				delete(active, m.ServiceID)
			}
		}
	}()
	if err := tun.WaitConnects(ctx, tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	return d
}

type v2Dest struct {
	starts       <-chan struct{}
	streamStarts atomic.Int32
	streamResets atomic.Int32
}

// sourceToV2Destination runs a V3 source (porthole connect's default) for the
// service SSH of a tunnel whose destination is v2Destination(quiet), logging
// at debug into logged, and returns the source's local address.
func sourceToV2Destination(t *testing.T, quiet bool) (addr string, dst *v2Dest, logged *testlog.Lines) {
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	dst = v2Destination(t, srv, tun, quiet)
	logged = new(testlog.Lines)
	src := &tunnel.Source{Config: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, tun.SourceToken),
		Logger: slog.New(slog.NewTextHandler(logged, &slog.HandlerOptions{Level: slog.LevelDebug}))}, Listen: map[string]string{"SSH": "127.0.0.1:0"}}
	return runSource(t, src, "SSH"), dst, logged
}

// A second ssh through porthole connect's default V3 to a destination that
// answers in V2 format (Device Client, Greengrass, localproxy 2.x): sent as
// CONNECTION_START, which such a destination answers with STREAM_RESET, it
// ended both sessions, with only "stream reset by peer" in the log. The source
// has seen the destination's format (DATA without a connection id), so it
// refuses the second connection, says why and what to do, and keeps the first.
func TestSourceV3RefusesSecondConnectionToV2Destination(t *testing.T) {
	addr, dst, logged := sourceToV2Destination(t, false)
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(first, make([]byte, 6)); err != nil {
		t.Fatalf("first connection: no greeting: %v", err)
	}
	for i := range 3 { // an ssh retrying: one line
		// Refused with a reset, which may come before the dial returns.
		if second, err := net.Dial("tcp", addr); err == nil {
			waitClosed(t, second, 5*time.Second)
			second.Close()
		} else if !resetOnDial(err) {
			t.Fatal(err)
		}
		if i == 0 {
			waitLogged(t, logged, "--destination-client-type V2")
		}
	}
	select {
	case <-dst.starts:
		t.Fatal("the second connection was sent as CONNECTION_START to a V2-format destination")
	default:
	}
	first.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := first.Write([]byte("ping\n")); err != nil {
		t.Fatalf("first connection after the second was refused: write: %v", err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(first, got); err != nil || string(got) != "ping\n" {
		t.Fatalf("first connection after the second was refused: read %q, %v; want the echo", got, err)
	}
	if n := logged.Count("the device answers in V2 format"); n != 1 {
		t.Errorf("%d lines about the V2-format device for 3 refused connections, want 1:\n%s", n, logged.String())
	}
	if !strings.Contains(logged.String(), "service=SSH") {
		t.Errorf("the line does not name the service:\n%s", logged.String())
	}
}

// TestSourceV3RemembersV2Destination: a V3 source that has seen the destination
// answer in V2 format refuses a second connection on a later stream too, before
// the destination has answered that stream: it knew the format per stream, and
// a stream ends with its last connection, so two connections opened together
// after the first had closed (a browser, two ssh) were sent as STREAM_START and
// CONNECTION_START, and the destination's STREAM_RESET ended both.
func TestSourceV3RemembersV2Destination(t *testing.T) {
	addr, dst, logged := sourceToV2Destination(t, true)

	// A first connection, answered by the destination in V2 format, then closed.
	c1, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c1.SetDeadline(time.Now().Add(10 * time.Second))
	c1.Write([]byte("one\n"))
	if _, err := io.ReadFull(c1, make([]byte, 4)); err != nil {
		t.Fatalf("first connection: no echo: %v", err)
	}
	c1.Close()
	waitLogged(t, logged, "connection closed locally")
	// Its stream ends with it: else c2 would be a second connection on it.
	waitUntil(t, "the first stream's STREAM_RESET at the destination", func() bool { return dst.streamResets.Load() >= 1 })

	// Later: two connections at once (a browser, two ssh started together).
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	// c2 has the stream: else c3 could be accepted first, and c2 refused.
	waitUntil(t, "c2's STREAM_START at the destination", func() bool { return dst.streamStarts.Load() >= 2 })
	// Refused with a reset, which may come before the dial returns.
	if c3, err := net.Dial("tcp", addr); err == nil {
		defer c3.Close()
	} else if !resetOnDial(err) {
		t.Fatal(err)
	}
	select {
	case <-dst.starts:
		t.Errorf("after the destination had answered in V2 format, a second connection was sent as CONNECTION_START (the destination resets the stream)")
	case <-time.After(2 * time.Second):
	}
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	c2.Write([]byte("two\n"))
	if _, err := io.ReadFull(c2, make([]byte, 4)); err != nil {
		t.Errorf("the open connection was ended by the second one: %v", err)
	}
}
