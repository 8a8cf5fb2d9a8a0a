package console

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/tools/tunneld"
)

// openTunnel opens a tunnel to thing through the console's API and waits until its
// source side listens.
func (l *testLab) openTunnel(c *http.Client, thing string) tunnelView {
	l.t.Helper()
	var v tunnelView
	l.api(c, http.MethodPost, "/api/tunnels", openRequest{Mode: "open", Thing: thing, Services: []string{"SSH"}, LifetimeMinutes: 5}, &v, http.StatusOK)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st stateView
		l.api(c, http.MethodGet, "/api/state", nil, &st, http.StatusOK)
		for _, t := range st.Tunnels {
			if t.ID == v.ID && t.State == stateReady {
				return t
			}
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("tunnel to %s not ready: %+v", thing, st.Tunnels)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *testLab) api(c *http.Client, method, path string, in, out any, want int) {
	l.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, l.base+path, body)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Origin", l.base)
	req.Header.Set("Authorization", "Bearer "+l.console.token)
	resp, err := c.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		l.t.Fatalf("%s %s = %s %s, want %d", method, path, resp.Status, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			l.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

// wsTerm is a terminal WebSocket as the page uses it.
type wsTerm struct {
	t      *testing.T
	c      *websocket.Conn
	screen bytes.Buffer
	msgs   []serverMessage
}

func (l *testLab) terminal(login loginRequest) *wsTerm {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := l.dialTerminal(ctx)
	for _, m := range []any{authMessage{Type: "auth", Token: l.console.token}, login} {
		b, _ := json.Marshal(m)
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			l.t.Fatal(err)
		}
	}
	return &wsTerm{t: l.t, c: c}
}

// dialTerminal opens the terminal WebSocket as the page does, without a message.
func (l *testLab) dialTerminal(ctx context.Context) *websocket.Conn {
	l.t.Helper()
	h := http.Header{"Origin": {l.base}}
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(l.base, "http")+"/api/terminal", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { c.CloseNow() })
	return c
}

// until reads until f is true of a message or the screen; it fails after 20 s.
func (w *wsTerm) until(what string, f func(m *serverMessage, screen string) bool) *serverMessage {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		typ, b, err := w.c.Read(ctx)
		if err != nil {
			w.t.Fatalf("waiting for %s: %v; messages %+v; screen %q", what, err, w.msgs, w.screen.String())
		}
		if typ == websocket.MessageBinary {
			w.screen.Write(b)
			if f(nil, w.screen.String()) {
				return nil
			}
			continue
		}
		var m serverMessage
		json.Unmarshal(b, &m)
		w.msgs = append(w.msgs, m)
		if f(&m, w.screen.String()) {
			return &m
		}
		if m.Type == "end" {
			w.t.Fatalf("waiting for %s: the terminal ended: %+v; screen %q", what, m, w.screen.String())
		}
	}
}

func (w *wsTerm) end() *serverMessage {
	w.t.Helper()
	return w.until("the end message", func(m *serverMessage, _ string) bool { return m != nil && m.Type == "end" })
}

func (w *wsTerm) ready() {
	w.t.Helper()
	w.until("ready", func(m *serverMessage, _ string) bool { return m != nil && m.Type == "ready" })
}

func (w *wsTerm) input(s string) {
	w.t.Helper()
	if err := w.c.Write(context.Background(), websocket.MessageBinary, []byte(s)); err != nil {
		w.t.Fatal(err)
	}
}

// output waits for a line that is s, once escape sequences are gone.
func (w *wsTerm) output(s string) {
	w.t.Helper()
	w.until("the line "+s, func(m *serverMessage, screen string) bool { return hasLine(screen, s) })
}

var escapes = regexp.MustCompile(`\x1b\[[0-9;?]*[a-zA-Z]|\r`)

func hasLine(screen, s string) bool {
	for _, line := range strings.Split(escapes.ReplaceAllString(screen, ""), "\n") {
		if strings.TrimSpace(line) == s {
			return true
		}
	}
	return false
}

func TestTerminalKeyLoginResizeExit(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-a")
	c := l.client()
	tv := l.openTunnel(c, "dev-a")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key", Cols: 80, Rows: 24})
	w.until("host key note", func(m *serverMessage, _ string) bool {
		return m != nil && m.Type == "info" && strings.Contains(m.Text, "recorded on first use")
	})
	w.ready()
	w.input("echo $((6*7))\r")
	w.output("42")
	w.input("stty size\r")
	w.output("24 80")
	w.c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"resize","cols":101,"rows":33}`))
	// The window-change is in force for the very next line (the console sends it
	// first, and the device's SSH server applies it first).
	w.screen.Reset()
	w.input("stty size\r")
	w.output("33 101")
	w.input("exit 3\r")
	if m := w.end(); m.Kind != "exit" || !strings.Contains(m.Text, "exit status 3") {
		t.Fatalf("end = %+v, want kind exit with exit status 3", m)
	}
	// The second login verifies the stored key.
	w = l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.until("verified host key", func(m *serverMessage, _ string) bool {
		return m != nil && m.Type == "info" && strings.Contains(m.Text, "verified")
	})
}

func TestTerminalWrongPasswordThenRight(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-b")
	c := l.client()
	tv := l.openTunnel(c, "dev-b")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "password", Password: "wrong"})
	if m := w.end(); m.Kind != "auth" || !strings.Contains(m.Text, "wrong password") {
		t.Fatalf("end = %+v, want kind auth saying wrong password", m)
	}
	w = l.terminal(loginRequest{Tunnel: tv.ID, Auth: "password", Password: testPassword})
	w.ready()
	w.input("echo pass-$((1+1))\r")
	w.output("pass-2")
}

func TestTerminalHostKeyChanged(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-c")
	c := l.client()
	tv := l.openTunnel(c, "dev-c")
	l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"}).ready()
	old, _ := l.console.cfg.HostKeys.Fingerprint("dev-c")

	l.addDevice("dev-c") // reinstalled: a new host key
	tv = l.openTunnel(c, "dev-c")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	warn := w.until("the host key warning", func(m *serverMessage, _ string) bool { return m != nil && m.Type == "hostkey-changed" })
	if warn.Stored != old || warn.Presented == old || warn.Thing != "dev-c" {
		t.Fatalf("warning %+v, want stored %s and another key", warn, old)
	}
	if m := w.end(); m.Kind != "hostkey" || !strings.Contains(m.Text, "WARNING") {
		t.Fatalf("end = %+v, want kind hostkey with a warning", m)
	}
	// Accepting another fingerprint changes nothing; accepting the presented one does.
	w = l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key", AcceptHostKey: old})
	w.until("the host key warning again", func(m *serverMessage, _ string) bool { return m != nil && m.Type == "hostkey-changed" })
	w = l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key", AcceptHostKey: warn.Presented})
	w.ready()
	if got, _ := l.console.cfg.HostKeys.Fingerprint("dev-c"); got != warn.Presented {
		t.Fatalf("stored fingerprint %s, want %s", got, warn.Presented)
	}
}

func TestTerminalTunnelClosed(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-d")
	c := l.client()
	tv := l.openTunnel(c, "dev-d")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.ready()
	w.input("echo before-close\r")
	w.output("before-close")
	var closed tunnelView
	l.api(c, http.MethodDelete, "/api/tunnels/"+tv.ID, nil, &closed, http.StatusOK)
	if closed.State != stateClosed || !strings.Contains(closed.Reason, "closed by the service") {
		t.Fatalf("after DELETE: %+v, want closed by the service", closed)
	}
	if m := w.end(); m.Kind != "tunnel" || !strings.Contains(m.Text, "tunnel is closed") {
		t.Fatalf("end = %+v, want kind tunnel", m)
	}
	// A new terminal on the closed tunnel says so at once.
	if m := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"}).end(); m.Kind != "tunnel" {
		t.Fatalf("terminal on a closed tunnel: %+v, want kind tunnel", m)
	}
	// Removing it from the list needs no control plane call.
	l.api(c, http.MethodDelete, "/api/tunnels/"+tv.ID+"?forget=1", nil, nil, http.StatusOK)
	var st stateView
	l.api(c, http.MethodGet, "/api/state", nil, &st, http.StatusOK)
	if len(st.Tunnels) != 0 {
		t.Fatalf("tunnels after removing the closed one: %+v", st.Tunnels)
	}
}

// pasteToken opens a tunnel to thing in tunneld, as an administrator would, and
// gives its source token to the console under label, as the operator would.
func (l *testLab) pasteToken(thing, label string) (*tunneld.OpenTunnelOutput, *http.Client, tunnelView) {
	l.t.Helper()
	out, err := l.td.OpenTunnel(context.Background(), &tunneld.OpenTunnelInput{
		DestinationConfig: &tunneld.DestinationConfig{ThingName: thing, Services: []string{"SSH"}}})
	if err != nil {
		l.t.Fatal(err)
	}
	c := l.client()
	var v tunnelView
	l.api(c, http.MethodPost, "/api/tunnels", openRequest{Mode: "token", Token: out.SourceAccessToken, Label: label,
		Endpoint: "ws://" + l.tdAddr}, &v, http.StatusOK)
	return out, c, v
}

// TestTerminalWaitsForTheDevice: a login started before the device's agent has
// joined the tunnel is not answered (the service drops the stream and resets it when
// the agent arrives); the console says so, tries again and logs in once it is there.
// What the page sent meanwhile (a resize, typing) reaches the shell.
func TestTerminalWaitsForTheDevice(t *testing.T) {
	l := newTestLab(t, Config{}) // no device yet: the notification reaches nobody
	out, _, v := l.pasteToken("dev-late", "dev-late")
	w := l.terminal(loginRequest{Tunnel: v.ID, Auth: "key", Key: "operator key"})
	w.until("the no-answer note", func(m *serverMessage, _ string) bool {
		return m != nil && m.Type == "info" && strings.Contains(m.Text, "no answer from dev-late yet")
	})
	w.c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"resize","cols":101,"rows":33}`))
	w.input("stty size\r")
	l.addDevice("dev-late")
	l.Notify(context.Background(), tunneld.Notification{ThingName: "dev-late", ClientAccessToken: out.DestinationAccessToken,
		Services: []string{"SSH"}})
	w.ready()
	w.output("33 101")
	w.input("echo late-$((40+2))\r")
	w.output("late-42")
}

// TestTerminalNoAnswer: a device that never joins ends the login with a clear
// message once the retry time is up.
func TestTerminalNoAnswer(t *testing.T) {
	l := newTestLab(t, Config{loginTimeout: 2 * time.Second})
	_, _, v := l.pasteToken("dev-away", "dev-away")
	w := l.terminal(loginRequest{Tunnel: v.ID, Auth: "key", Key: "operator key"})
	if m := w.end(); m.Kind != "error" || !strings.Contains(m.Text, "no answer in 2s: its agent is not connected to the tunnel") {
		t.Fatalf("end = %+v, want kind error saying the agent is not connected", m)
	}
}

// TestTerminalPastedToken: the operator has only a source token from an
// administrator (the control plane is not the console's).
func TestTerminalPastedToken(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-e")
	out, c, v := l.pasteToken("dev-e", "router-e")
	if v.Opened || v.Thing != "router-e" {
		t.Fatalf("pasted tunnel %+v", v)
	}
	w := l.terminal(loginRequest{Tunnel: v.ID, Auth: "key", Key: "operator key"})
	w.until("host key note", func(m *serverMessage, _ string) bool {
		return m != nil && m.Type == "info" && strings.Contains(m.Text, "host key of router-e recorded")
	})
	w.ready()
	w.input("echo pasted-$((40+2))\r")
	w.output("pasted-42")
	// Disconnecting a pasted tunnel stops the source side only: the tunnel stays open.
	l.api(c, http.MethodDelete, "/api/tunnels/"+v.ID, nil, nil, http.StatusOK)
	if m := w.end(); m.Kind != "tunnel" {
		t.Fatalf("end = %+v, want kind tunnel", m)
	}
	d, err := l.td.DescribeTunnel(context.Background(), &tunneld.DescribeTunnelInput{TunnelID: out.TunnelID})
	if err != nil || d.Tunnel.Status != tunneld.StatusOpen {
		t.Fatalf("the tunnel after disconnecting: %+v, %v; want still open", d, err)
	}
}

// TestTerminalShutdownSaysSo: a terminal open when the console shuts down gets the
// end message saying so, not just the end of the WebSocket.
func TestTerminalShutdownSaysSo(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-s")
	tv := l.openTunnel(l.client(), "dev-s")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.ready()
	if m := shutdownEnd(l, w); m.Kind != "error" || !strings.Contains(m.Text, "shutting down") {
		t.Fatalf("end = %+v, want kind error saying the console is shutting down", m)
	}
}

// shutdownEnd shuts the console down while w's terminal is open, and returns
// the terminal's end message once the shutdown is over.
func shutdownEnd(l *testLab, w *wsTerm) *serverMessage {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l.console.Shutdown(ctx)
	}()
	m := w.end()
	w.c.Read(context.Background()) // answers the close, as a browser does
	<-done
	return m
}

// TestTerminalShutdownDuringLoginSaysSo: a terminal whose login is under way
// when the console shuts down (waiting for the tunnel's source side, or for
// the device to answer) gets the end message saying so too: it got the
// context's error, or the tunnel's close that the shutdown caused.
func TestTerminalShutdownDuringLoginSaysSo(t *testing.T) {
	for _, tc := range []struct {
		name     string
		endpoint string // of the pasted token; "" means tunneld's
		note     string // the info message of the step the login is in
	}{
		{"waiting for the tunnel", "ws://127.0.0.1:1", "waiting for the tunnel"},
		{"waiting for the device", "", "connecting to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLab(t, Config{}) // no device: the login waits
			out, err := l.td.OpenTunnel(context.Background(), &tunneld.OpenTunnelInput{
				DestinationConfig: &tunneld.DestinationConfig{ThingName: "dev-w", Services: []string{"SSH"}}})
			if err != nil {
				t.Fatal(err)
			}
			var v tunnelView
			l.api(l.client(), http.MethodPost, "/api/tunnels", openRequest{Mode: "token", Token: out.SourceAccessToken, Label: "dev-w",
				Endpoint: cmp.Or(tc.endpoint, "ws://"+l.tdAddr)}, &v, http.StatusOK)
			w := l.terminal(loginRequest{Tunnel: v.ID, Auth: "key", Key: "operator key"})
			w.until("the note "+tc.note, func(m *serverMessage, _ string) bool {
				return m != nil && m.Type == "info" && strings.HasPrefix(m.Text, tc.note)
			})
			if m := shutdownEnd(l, w); m.Kind != "error" || m.Text != "the console is shutting down" {
				t.Errorf("end = %+v, want kind error saying the console is shutting down", m)
			}
			if line, ok := l.loggedEnd(0); !ok || !strings.Contains(line, " by=shutdown ") {
				t.Errorf("terminal ended with %q, want by=shutdown", line)
			}
		})
	}
}

// TestTerminalMessageTooBig: a keystroke message over the read limit ends the
// terminal with a close status and reason the page shows (the page itself sends
// large pastes in pieces under the limit).
func TestTerminalMessageTooBig(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-big")
	tv := l.openTunnel(l.client(), "dev-big")
	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.ready()
	w.input(strings.Repeat("x", readLimit+1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := w.c.Read(ctx)
		if err == nil {
			continue // output
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusMessageTooBig || !strings.Contains(ce.Reason, "read limited") {
			t.Fatalf("Read = %v, want closed with %v and the limit as the reason", err, websocket.StatusMessageTooBig)
		}
		break
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(l.logs.String(), "over the limit"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the console did not log why it closed the terminal")
		}
	}
}

// TestTerminalEndLogged: the end of a terminal is one log line with the fields of
// the "logged in" line, how it ended (the device's session exited, the page went
// away, the console shut down) and how long it lasted; never what was typed.
func TestTerminalEndLogged(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-end")
	tv := l.openTunnel(l.client(), "dev-end")
	// ended waits for the n-th "terminal ended" line and checks it against the n-th
	// "logged in" line.
	ended := func(n int, by string) {
		t.Helper()
		var start, end []string
		for deadline := time.Now().Add(10 * time.Second); len(end) < n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no terminal-ended line %d (by %s) in the log", n, by)
			}
			start, end = nil, nil
			for _, line := range strings.Split(l.logs.String(), "\n") {
				if _, fields, ok := strings.Cut(line, `msg="logged in" `); ok {
					start = append(start, fields)
				}
				if _, fields, ok := strings.Cut(line, `msg="terminal ended" `); ok {
					end = append(end, fields)
				}
			}
		}
		if len(end) != n || len(start) != n {
			t.Fatalf("%d logins and %d ends logged, want %d each", len(start), len(end), n)
		}
		line := end[n-1]
		if !strings.HasPrefix(line, start[n-1]+" ") || !strings.Contains(start[n-1], "thing=dev-end tunnel="+tv.ID) ||
			!strings.Contains(start[n-1], "tunnel_id="+tv.TunnelID) {
			t.Errorf("terminal ended with %q, want the fields of the login, %q", line, start[n-1])
		}
		if !strings.Contains(line, " by="+by+" duration=") {
			t.Errorf("terminal ended with %q, want by=%s and a duration", line, by)
		}
	}

	w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.ready()
	w.input("echo typed-secret-$((6*7))\r")
	w.output("typed-secret-42")
	w.input("exit 3\r")
	w.end()
	w.c.Read(context.Background()) // answers the close, as a browser does
	ended(1, "device")

	w = l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.ready()
	w.c.Close(websocket.StatusGoingAway, "") // the tab is closed
	ended(2, "page")

	w = l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
	w.ready()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.c.Read(context.Background()) // the end message
		w.c.Read(context.Background()) // answers the close, as a browser does
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l.console.Shutdown(ctx)
	<-done
	ended(3, "shutdown")

	if strings.Contains(l.logs.String(), "typed-secret") {
		t.Error("typed input reached the log")
	}
}

// slowDevice is a device's SSH server that keeps a login waiting until the test
// lets it go on, and notes the channels and requests it gets.
type slowDevice struct {
	addr   string
	asked  chan struct{} // closed when the console has offered its key
	answer chan struct{} // closed by release: the key is accepted
	ended  chan struct{} // closed when the first connection has ended
	wg     sync.WaitGroup

	mu  sync.Mutex
	got []string // channel types and request types, in order
}

func newSlowDevice(t *testing.T) *slowDevice {
	t.Helper()
	d := &slowDevice{asked: make(chan struct{}), answer: make(chan struct{}), ended: make(chan struct{})}
	var asked, ended sync.Once
	d.addr, _ = serveDevice(t, &d.wg, &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
		asked.Do(func() { close(d.asked) })
		<-d.answer
		return nil, nil
	}}, func(nch ssh.NewChannel) {
		d.note(nch.ChannelType())
		ch, reqs, err := nch.Accept()
		if err != nil {
			return
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer ch.Close()
			for r := range reqs {
				d.note(r.Type)
				r.Reply(true, nil)
			}
		}()
	}, func() { ended.Do(func() { close(d.ended) }) }, d.release)
	return d
}

// serveDevice runs a device's SSH server with cfg (a host key of its own
// added) on a loopback port and returns its address and host key: each
// connection's channels are handed to channel in turn, and ended runs once a
// connection is over. At the test's end release runs (if set), the listener
// closes and wg is waited for.
func serveDevice(t *testing.T, wg *sync.WaitGroup, cfg *ssh.ServerConfig,
	channel func(ssh.NewChannel), ended func(), release func()) (addr string, hostKey ssh.PublicKey) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer ended()
				defer nc.Close()
				_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for nch := range chans {
					channel(nch)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		if release != nil {
			release()
		}
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String(), signer.PublicKey()
}

func (d *slowDevice) note(what string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, what)
}

func (d *slowDevice) requests() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.got...)
}

func (d *slowDevice) release() {
	select {
	case <-d.answer:
	default:
		close(d.answer)
	}
}

// loggedEnd waits up to d for the "terminal ended" line and returns it.
func (l *testLab) loggedEnd(d time.Duration) (string, bool) {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(l.logs.String(), "\n") {
			if strings.Contains(line, `msg="terminal ended" `) {
				return line, true
			}
		}
		if time.Now().After(deadline) {
			return "", false
		}
	}
}

// TestTerminalPageGoneDuringLogin: a page that goes while its login is in progress
// (here the device takes its time to accept the key) stops the login: the console
// starts nothing on the device for a page that has gone, and logs the end by=page.
func TestTerminalPageGoneDuringLogin(t *testing.T) {
	dev := newSlowDevice(t) // before the lab: its cleanup runs after the console's
	l := newTestLab(t, Config{})
	w := l.keyTerminal("dev-slow", dev.addr)
	select {
	case <-dev.asked:
	case <-time.After(20 * time.Second):
		t.Fatal("the console did not offer its key to the device")
	}
	w.c.Close(websocket.StatusGoingAway, "") // the tab is closed
	line, ok := l.loggedEnd(10 * time.Second)
	if !ok {
		t.Error("no terminal-ended line while the login waited for the device")
	}
	dev.release()
	select {
	case <-dev.ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the device's connection did not end")
	}
	if got := dev.requests(); len(got) != 0 {
		t.Errorf("the device got %q after the page had gone, want nothing", got)
	}
	if !ok {
		line, _ = l.loggedEnd(10 * time.Second)
	}
	if !strings.Contains(line, " by=page ") || strings.Contains(l.logs.String(), `msg="logged in"`) {
		t.Errorf("terminal ended with %q (logged in: %v), want by=page and no login",
			line, strings.Contains(l.logs.String(), `msg="logged in"`))
	}
}

// TestTerminalPageGoneWaitingForTheDevice: a page that goes while the login waits
// for the device's agent to join the tunnel stops the login at once.
func TestTerminalPageGoneWaitingForTheDevice(t *testing.T) {
	l := newTestLab(t, Config{}) // no device: the login waits
	_, _, v := l.pasteToken("dev-never", "dev-never")
	w := l.terminal(loginRequest{Tunnel: v.ID, Auth: "key", Key: "operator key"})
	w.until("the connecting note", func(m *serverMessage, _ string) bool {
		return m != nil && m.Type == "info" && strings.Contains(m.Text, "connecting to")
	})
	w.c.Close(websocket.StatusGoingAway, "") // the tab is closed
	line, ok := l.loggedEnd(10 * time.Second)
	if !ok || !strings.Contains(line, " by=page ") || !strings.Contains(line, "thing=dev-never") {
		t.Fatalf("terminal ended with %q, want by=page", line)
	}
}

// stuckDevice is a device's SSH server that accepts any key and the session
// channel, and then never answers a request on it (pty-req, shell): a device
// that hangs after the login (a wedged sshd, a stream that stalls).
type stuckDevice struct {
	// session, if set, runs each accepted session channel instead of leaving
	// its requests unanswered.
	session func(ch ssh.Channel, reqs <-chan *ssh.Request)

	addr    string
	stalled chan struct{} // closed when a request went unanswered
	ended   chan struct{} // closed when the first connection has ended
	wg      sync.WaitGroup
}

func newStuckDevice(t *testing.T) *stuckDevice { return newScriptedDevice(t, nil) }

// anyKey is a device's check that lets every key in.
func anyKey(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }

func newScriptedDevice(t *testing.T, session func(ch ssh.Channel, reqs <-chan *ssh.Request)) *stuckDevice {
	t.Helper()
	d := &stuckDevice{stalled: make(chan struct{}), ended: make(chan struct{}), session: session}
	var stalled, ended sync.Once
	d.addr, _ = serveDevice(t, &d.wg, &ssh.ServerConfig{PublicKeyCallback: anyKey},
		func(nch ssh.NewChannel) {
			ch, reqs, err := nch.Accept()
			if err != nil {
				return
			}
			if d.session != nil {
				d.wg.Add(1)
				go func() { defer d.wg.Done(); defer ch.Close(); d.session(ch, reqs) }()
				return
			}
			go func() {
				for range reqs { // never answered
					stalled.Do(func() { close(d.stalled) })
				}
			}()
		}, func() { ended.Do(func() { close(d.ended) }) }, nil)
	return d
}

// TestPageGoneWhileTheDeviceHangs: a device that logs the operator in and
// then does not answer the pty request. The operator closes the tab: the
// terminal must end (and with it the SSH connection and the tunnel's stream), and
// the console must still shut down.
func TestPageGoneWhileTheDeviceHangs(t *testing.T) {
	dev := newStuckDevice(t) // before the lab: its cleanup runs after the console's
	l := newTestLab(t, Config{})
	w := l.keyTerminal("dev-stuck", dev.addr)
	select {
	case <-dev.stalled:
	case <-time.After(20 * time.Second):
		t.Fatal("the console sent the device no request")
	}
	w.c.Close(websocket.StatusGoingAway, "") // the tab is closed
	line, ok := l.loggedEnd(5 * time.Second)
	if !ok || !strings.Contains(line, " by=page") {
		t.Errorf("no terminal-ended line by=page 5 s after the page went (%q)", line)
	}
	select {
	case <-dev.ended:
	case <-time.After(5 * time.Second):
		t.Error("the device's SSH connection is still open 5 s after the page went")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); l.console.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown with a 3 s context has not returned after 10 s")
	}
}

// TestStderrShown: what the device's SSH server sends as the session's
// stderr (extended data, which servers such as gliderlabs/ssh and Go-based
// device shells use even with a pty) reaches the terminal, as with OpenSSH's
// client.
func TestStderrShown(t *testing.T) {
	dev := newScriptedDevice(t, func(ch ssh.Channel, reqs <-chan *ssh.Request) {
		for r := range reqs {
			r.Reply(true, nil)
			if r.Type == "shell" {
				ch.Write([]byte("on-stdout\r\n"))
				ch.Stderr().Write([]byte("on-stderr\r\n"))
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{1}))
				return
			}
		}
	})
	l := newTestLab(t, Config{})
	w := l.keyTerminal("dev-stderr", dev.addr)
	m := w.end()
	if !hasLine(w.screen.String(), "on-stdout") || !hasLine(w.screen.String(), "on-stderr") {
		t.Fatalf("screen %q (end %+v), want both on-stdout and on-stderr", w.screen.String(), m)
	}
}

// TestSessionEndedWithoutExitStatus: a device whose SSH server closes the
// session without an exit status (its agent stopping) gets a sentence, not
// x/crypto's words.
func TestSessionEndedWithoutExitStatus(t *testing.T) {
	dev := newScriptedDevice(t, func(ch ssh.Channel, reqs <-chan *ssh.Request) {
		for r := range reqs {
			r.Reply(true, nil)
			if r.Type == "shell" {
				ch.Write([]byte("going\r\n"))
				return // the channel closes, without exit-status
			}
		}
	})
	l := newTestLab(t, Config{})
	w := l.keyTerminal("dev-gone", dev.addr)
	m := w.end()
	if m.Kind != "error" || !strings.Contains(m.Text, "the session on dev-gone ended without an exit status: the device closed it") ||
		strings.Contains(m.Text, "remote command") {
		t.Errorf("end = %+v, want the session's end explained", m)
	}
}

// TestTerminalOutlivesTimeouts guards the request timeouts' known hazard: the
// terminal WebSocket is a hijacked request that lives for hours, and must not
// be cut by a timeout meant for one request. It passes without the timeouts
// too; it fails if they are ever enforced in a way the hijack does not undo (a
// listener that times its connections, say), or if net/http stops clearing
// deadlines in http.Hijacker (conn.hijackLocked).
func TestTerminalOutlivesTimeouts(t *testing.T) {
	const timeout = 300 * time.Millisecond
	l := newTestLab(t, Config{readTimeout: timeout, writeTimeout: timeout, idleTimeout: timeout}, "dev-long")

	t.Run("session", func(t *testing.T) {
		tv := l.openTunnel(l.client(), "dev-long")
		w := l.terminal(loginRequest{Tunnel: tv.ID, Auth: "key", Key: "operator key"})
		w.ready()
		time.Sleep(3 * timeout) // the page and the shell both quiet
		w.input("echo still-$((2+3))\r")
		w.output("still-5")
	})

	// An upgrade with a body (Content-Length: 1) that the handler does not read:
	// net/http then has no background read to abort at the hijack (which also
	// clears the read deadline), so only the clearing of deadlines in
	// http.Hijacker stands between the WebSocket and the read timeout. (net/http
	// reads the body before it writes the 101: one that never came would be
	// cut by the read timeout, the upgrade with it.)
	t.Run("no background read", func(t *testing.T) {
		addr := strings.TrimPrefix(l.base, "http://")
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /api/terminal HTTP/1.1\r\nHost: "+addr+"\r\nOrigin: "+l.base+"\r\n"+
			"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 1\r\n\r\n."); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		// Within the auth timeout (5 s), the console says nothing after its 101.
		c.SetReadDeadline(start.Add(4 * timeout))
		b, err := io.ReadAll(c)
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 101 ")) {
			t.Fatalf("handshake answered %q, %v", b, err)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("WebSocket cut after %v (%v), want it open past the request timeouts of %v", time.Since(start), err, timeout)
		}
	})
}
