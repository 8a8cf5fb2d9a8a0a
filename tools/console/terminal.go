package console

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"
)

// The terminal WebSocket (GET /api/terminal). The browser's first message is a
// JSON authMessage with the console's access token, its second a JSON
// loginRequest; then binary messages are keystrokes and text messages are
// {"type":"resize","cols","rows"}. The server sends binary terminal output and text
// serverMessages: "info", "hostkey-changed", "ready", "delivered" and, last, "end".
//
// Keystrokes go in step with the device, so that the server always reads the
// page and notices at once when it goes: the page keeps at most maxHeld bytes of
// them that the server has not confirmed, and the server confirms with
// {"type":"delivered","bytes":N}, N the keystroke bytes written to the SSH channel
// so far, each time another deliveredStep bytes or more have been written. The
// rest of a large paste waits in the page, which shows how much is left. A client that sends more is still read, but
// only as fast as the device takes it (TCP back-pressure): nothing is lost, but the
// server then notices late that such a client has gone.
//
// Why the token travels in the first message: a browser's WebSocket takes no
// Authorization header, and the other place, a Sec-WebSocket-Protocol value, is a
// request header that the server has to echo and that browser tools and proxies
// record as a protocol name, not as a credential. The first message is the same
// JSON path as the login, is read within a short time (Config.authTimeout, a timer) and a
// small size limit before the socket is tracked or anything else is read, and a
// socket that does not authenticate is closed with StatusPolicyViolation. Only
// same-origin pages get as far as the upgrade (the Origin check in ServeHTTP).

// readLimit is the largest message the page may send on a terminal WebSocket.
const readLimit = 256 << 10

// authMessage is the terminal WebSocket's first message: {"type":"auth","token":T}.
type authMessage struct {
	Type  string `json:"type"`
	Token string `json:"token"`
}

// loginRequest opens a terminal. Password, PEM and Passphrase are secrets: held for
// the login only, never logged.
type loginRequest struct {
	Tunnel     string `json:"tunnel"`
	Service    string `json:"service"` // "" means SSH, or the tunnel's only service
	User       string `json:"user"`
	Auth       string `json:"auth"` // "key", "pem" or "password"
	Key        string `json:"key"`  // Config.Keys name, with "key"
	PEM        string `json:"pem"`
	Passphrase string `json:"passphrase"`
	Password   string `json:"password"`
	Cols       int    `json:"cols"`
	Rows       int    `json:"rows"`
	// AcceptHostKey is the fingerprint of a changed host key the operator accepts.
	AcceptHostKey string `json:"acceptHostKey"`
}

// serverMessage is a text message to the page.
type serverMessage struct {
	Type string `json:"type"`
	// Kind of an "end": "exit" (the session ended), "auth" (login refused),
	// "tunnel" (the tunnel closed), "hostkey" (host key changed) or "error".
	Kind      string `json:"kind,omitempty"`
	Text      string `json:"text,omitempty"`
	Thing     string `json:"thing,omitempty"`
	Stored    string `json:"stored,omitempty"`
	Presented string `json:"presented,omitempty"`
	// Bytes of a "delivered": the keystroke bytes written to the SSH channel so far.
	Bytes int64 `json:"bytes,omitempty"`
}

type clientMessage struct {
	Type string `json:"type"`
	Cols int    `json:"cols"`
	Rows int    `json:"rows"`
}

// terminal is one running browser terminal.
type terminal struct {
	cancel context.CancelFunc
	// reader is the goroutine reading the page (read) from the login request on:
	// it ends when the WebSocket closes, which is after the end message is sent
	// (cancelling a Read's context would close the WebSocket first).
	reader sync.WaitGroup
	// in holds what the page sent that the relay has not taken yet; buffered to
	// 1, and only the reader sends on it.
	in chan pageInput
}

// pageMessage is a message from the page after its login request: keystrokes
// (binary) or a resize (text).
type pageMessage struct {
	typ websocket.MessageType
	b   []byte
}

// pageInput is what the page sent, in order.
type pageInput struct {
	msgs []pageMessage
	size int // bytes
}

// maxHeld is how much the reader holds for the relay (typing or pasting before the
// shell has started, or faster than the device reads), and how many keystroke
// bytes the page may have sent that the server has not confirmed (console.js's
// inputWindow). Past it, the reader waits for the relay to take what it holds,
// reading nothing: a page that goes then is noticed once the device reads.
const maxHeld = 1 << 20

// deliveredStep is how many keystroke bytes go to the device before the next
// "delivered" message: far below maxHeld, so that a page waiting for room always
// gets it once the device has taken what the server holds.
const deliveredStep = 64 << 10

// read reads the page until the WebSocket closes, so that a page that goes is
// noticed at any time, during the login too: then it calls gone, which ends ctx
// and with it the login. What the page sends waits in t.in for the relay.
func (t *terminal) read(ctx context.Context, c *websocket.Conn, gone context.CancelFunc, log *slog.Logger) {
	defer t.reader.Done()
	defer gone()
	for {
		// Not ctx: a cancelled Read closes the WebSocket, before the end message.
		// This Read ends when handleTerminal closes the socket.
		typ, b, err := c.Read(context.WithoutCancel(ctx))
		if err != nil {
			// Over the read limit, the WebSocket library has closed the socket with
			// StatusMessageTooBig and the limit as the reason, which the page
			// shows; the page sends pastes in pieces.
			if errors.Is(err, websocket.ErrMessageTooBig) {
				log.Warn("terminal closed: a message from the page was over the limit", "limit", readLimit)
			}
			return
		}
		in := pageInput{msgs: []pageMessage{{typ, b}}, size: len(b)}
		select {
		case held := <-t.in: // not taken yet: both go together, up to maxHeld
			if held.size < maxHeld {
				in = pageInput{msgs: append(held.msgs, in.msgs...), size: held.size + in.size}
			} else {
				t.in <- held // t.in is empty: this does not block
			}
		default:
		}
		select {
		case t.in <- in:
		case <-ctx.Done(): // nobody takes it any more
			return
		}
	}
}

func (s *Server) handleTerminal(w http.ResponseWriter, r *http.Request) {
	// ServeHTTP has checked the Origin (sameOrigin). Accept's own check would
	// compare its host with the Host header alone, which a reverse proxy may have
	// changed (Config.PublicURL).
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	if !s.authenticate(r.Context(), c) {
		return
	}
	c.SetReadLimit(readLimit)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	t := &terminal{cancel: cancel, in: make(chan pageInput, 1)}
	if err := s.track(t); err != nil {
		c.Close(websocket.StatusGoingAway, "console closing")
		return
	}
	defer s.untrack(t)
	end := s.runTerminal(ctx, c, t)
	// ctx is cancelled when the console shuts down: the end message saying so gets
	// a short time of its own.
	sendWithin(c, end, 2*time.Second)
	c.Close(websocket.StatusNormalClosure, "")
	c.CloseNow()
	t.reader.Wait()
}

// authenticate reads the auth message within s.cfg.authTimeout; without a right
// token it closes c.
func (s *Server) authenticate(ctx context.Context, c *websocket.Conn) bool {
	c.SetReadLimit(4 << 10)
	// A timer rather than a Read deadline: an expired Read closes the TCP
	// connection without a close frame, and the page would not learn why.
	late := make(chan struct{})
	timer := time.AfterFunc(s.cfg.authTimeout, func() {
		defer close(late)
		c.Close(websocket.StatusPolicyViolation, fmt.Sprintf("no access token within %v", s.cfg.authTimeout))
	})
	typ, b, err := c.Read(ctx)
	if !timer.Stop() {
		<-late
		s.log.Warn("terminal WebSocket without the access token closed")
		return false
	}
	var m authMessage
	if err == nil && typ == websocket.MessageText && json.Unmarshal(b, &m) == nil && m.Type == "auth" && s.tokenOK(m.Token) {
		return true
	}
	s.log.Warn("terminal WebSocket without the access token refused")
	c.Close(websocket.StatusPolicyViolation, "access token required: open the URL the console printed")
	return false
}

// send writes m to the page within 10 s (sendWithin).
func send(c *websocket.Conn, m serverMessage) error { return sendWithin(c, m, 10*time.Second) }

// sendWithin writes m to the page, giving up after d. Not bound to a
// terminal's context: the WebSocket library closes the socket when a
// Write's context ends during the write, and the end message saying why
// (the console shutting down, say) would not get through.
func sendWithin(c *websocket.Conn, m serverMessage, d time.Duration) error {
	b, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, b)
}

func endMsg(kind, format string, args ...any) serverMessage {
	return serverMessage{Type: "end", Kind: kind, Text: fmt.Sprintf(format, args...)}
}

// runTerminal logs in and relays until the session ends; it returns the final
// message for the page.
func (s *Server) runTerminal(ctx context.Context, c *websocket.Conn, term *terminal) serverMessage {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	typ, b, err := c.Read(rctx)
	cancel()
	if err != nil {
		return endMsg("error", "no login request: %v", err)
	}
	var req loginRequest
	if typ != websocket.MessageText || json.Unmarshal(b, &req) != nil {
		return endMsg("error", "the first message must be a JSON login request")
	}
	// From here the page is read all along, the login included: a page that goes
	// ends pctx, which stops the login, and nothing is started on the device for
	// it. pctx also ends with ctx.
	pctx, gone := context.WithCancel(ctx)
	defer gone()
	term.reader.Add(1)
	go term.read(pctx, c, gone, s.log)
	begin := time.Now()
	t := s.tunnels.get(req.Tunnel)
	if t == nil {
		return endMsg("error", "no such tunnel")
	}
	if req.User == "" {
		req.User = s.cfg.User
	}
	log := s.log.With("thing", t.spec.Thing, "tunnel", t.id, "user", req.User, "auth", req.Auth)
	if t.spec.TunnelID != "" { // the service's id, when the console opened the tunnel
		log = log.With("tunnel_id", t.spec.TunnelID)
	}
	// abandoned ends a login the page has given up on.
	abandoned := func() serverMessage {
		log.Info("terminal ended", "by", endedByPage, "duration", time.Since(begin).Round(time.Millisecond), "end", closedByPage.Text)
		return closedByPage
	}
	// shutdown ends a login the console's shutdown has stopped: the error the
	// login got then (a context cancelled, the tunnel the shutdown closed)
	// would not say so.
	shutdown := func() serverMessage {
		end := endMsg("error", "the console is shutting down")
		log.Info("terminal ended", "by", endedByShutdown, "duration", time.Since(begin).Round(time.Millisecond), "end", end.Text)
		return end
	}
	auth, err := s.authMethod(&req)
	if err != nil {
		return endMsg("error", "%v", err)
	}

	send(c, serverMessage{Type: "info", Text: "waiting for the tunnel to " + t.spec.Thing + " …"})
	actx, cancel := context.WithTimeout(pctx, 60*time.Second)
	service, _, err := t.addr(actx, req.Service)
	cancel()
	if pageGone(ctx, pctx) {
		return abandoned()
	}
	if err != nil && ctx.Err() != nil {
		return shutdown()
	}
	if err != nil {
		var ce *tunnelClosedError
		if errors.As(err, &ce) {
			return endMsg("tunnel", "%v", err)
		}
		return endMsg("error", "%v", err)
	}
	send(c, serverMessage{Type: "info", Text: fmt.Sprintf("connecting to %s of %s as %s …", service, t.spec.Thing, req.User)})

	// The device has s.cfg.loginTimeout to answer and finish the handshake. One
	// whose agent has not joined the tunnel yet does not answer: the service drops
	// the stream's frames, and resets the stream when the agent arrives; then the
	// login starts again on a new stream.
	deadline := time.Now().Add(s.cfg.loginTimeout)
	// The host-key check may wait for the store's lock, which another console
	// holds: it stops when the page goes, as the rest of the login does (closing
	// the connection does not end a callback of the handshake).
	hctx, hcancel := context.WithDeadline(pctx, deadline)
	defer hcancel()
	var hostNote string
	// x/crypto calls the callback at every key exchange: the login's, and
	// then each rekey of the session (after a GiB or so, or as often as the
	// device asks). A rekey's key is held to the one the login verified, as
	// OpenSSH's client does, and not checked in the store again: by then
	// hctx has expired, and a store whose lock another login held at that
	// moment ended the session; the login's note and log line were made again.
	var verifiedMu sync.Mutex
	var verified ssh.PublicKey // the login's host key, once it passed
	cfg := &ssh.ClientConfig{User: req.User, Auth: auth,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			verifiedMu.Lock()
			defer verifiedMu.Unlock()
			if verified != nil {
				if !bytes.Equal(verified.Marshal(), key.Marshal()) {
					return fmt.Errorf("the host key of %s changed during the session: %s, then %s",
						t.spec.Thing, ssh.FingerprintSHA256(verified), ssh.FingerprintSHA256(key))
				}
				return nil
			}
			first, err := s.cfg.HostKeys.Check(hctx, t.spec.Thing, key, req.AcceptHostKey)
			if err != nil {
				return err
			}
			verified = key
			fp := ssh.FingerprintSHA256(key)
			switch {
			case first:
				hostNote = "host key of " + t.spec.Thing + " recorded on first use: " + fp
				log.Info("host key recorded on first use", "fingerprint", fp)
			case req.AcceptHostKey == fp:
				hostNote = "the new host key of " + t.spec.Thing + " was accepted and stored: " + fp
				log.Warn("changed host key accepted by the operator", "fingerprint", fp)
			default:
				hostNote = "host key of " + t.spec.Thing + " verified: " + fp
			}
			return nil
		}}
	var noted sync.Once
	quiet := func() {
		noted.Do(func() {
			send(c, serverMessage{Type: "info", Text: "no answer from " + t.spec.Thing + " yet (is its agent connected to the tunnel?) …"})
		})
	}
	client, err := dialSSH(pctx, t, service, cfg, deadline, quiet)
retry:
	for errors.Is(err, errNoAnswer) && time.Until(deadline) > time.Second {
		quiet()
		select {
		case <-pctx.Done():
			if pageGone(ctx, pctx) {
				return abandoned()
			}
			return shutdown()
		case <-t.done: // reported below
			break retry
		case <-time.After(time.Second):
		}
		client, err = dialSSH(pctx, t, service, cfg, deadline, quiet)
	}
	if err != nil && pageGone(ctx, pctx) {
		return abandoned()
	}
	if err != nil {
		var hk *HostKeyChangedError
		switch {
		case errors.As(err, &hk):
			log.Warn("host key changed: login stopped", "stored", hk.Stored, "presented", hk.Presented)
			send(c, serverMessage{Type: "hostkey-changed", Thing: hk.Thing, Stored: hk.Stored, Presented: hk.Presented})
			return endMsg("hostkey", "WARNING: the host key of %s has changed (stored %s, presented %s). "+
				"Someone may be impersonating the device, or it was reinstalled. Not logged in.", hk.Thing, hk.Stored, hk.Presented)
		case strings.Contains(err.Error(), "unable to authenticate"): // x/crypto/ssh has no typed error for it
			log.Info("login refused")
			if req.Auth == "password" {
				return endMsg("auth", "login refused: wrong password for %s (or the device does not accept passwords)", req.User)
			}
			return endMsg("auth", "login refused: the device does not accept this key for %s", req.User)
		case ctx.Err() != nil:
			return shutdown()
		}
		if reason, ok := t.closedReason(2 * time.Second); ok {
			return endMsg("tunnel", "the tunnel is closed: %s", reason)
		}
		log.Info("ssh connection failed", "err", err)
		if errors.Is(err, errNoAnswer) {
			return endMsg("error", "SSH to %s: no answer in %v: its agent is not connected to the tunnel, or its %s service refused the connection",
				t.spec.Thing, s.cfg.loginTimeout, service)
		}
		return endMsg("error", "SSH to %s: %v", t.spec.Thing, err)
	}
	defer client.Close()
	log.Info("logged in")
	start := time.Now()
	end, by := s.relay(ctx, pctx, c, term, client, t, &req, hostNote)
	// The end message's text says how, never what was typed.
	log.Info("terminal ended", "by", by, "duration", time.Since(start).Round(time.Millisecond), "end", end.Text)
	return end
}

// How a terminal ended, for the log.
const (
	endedByPage     = "page"     // the page closed its WebSocket
	endedByDevice   = "device"   // the session on the device ended (exit)
	endedByShutdown = "shutdown" // the console is shutting down
	endedByTunnel   = "tunnel"   // the tunnel closed
	endedByError    = "error"    // the session could not start, or the connection was lost
)

// closedByPage is the end of a terminal whose page has gone; nobody reads it.
var closedByPage = endMsg("exit", "the page closed the terminal")

// pageGone reports whether the page has gone: its context pctx has ended, but not
// the terminal's ctx.
func pageGone(ctx, pctx context.Context) bool {
	return pctx.Err() != nil && ctx.Err() == nil
}

// errNoAnswer: the connection ended, or its time ran out, before the device sent
// a byte.
var errNoAnswer = errors.New("the device did not answer")

// quietAfter is how long dialSSH waits for the device's first byte before it calls
// its quiet function.
const quietAfter = 3 * time.Second

// countingConn notes whether anything was read.
type countingConn struct {
	net.Conn
	read atomic.Bool
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Store(true)
	}
	return n, err
}

// dialSSH logs in over a connection the tunnel's source engine carries; the
// handshake must end by deadline. quiet is called if the device has not said
// anything after quietAfter; if it never does, the error wraps errNoAnswer.
func dialSSH(ctx context.Context, t *liveTunnel, service string, cfg *ssh.ClientConfig, deadline time.Time, quiet func()) (*ssh.Client, error) {
	dctx, cancel := context.WithDeadline(ctx, deadline)
	nc, err := t.src.DialService(dctx, service)
	cancel()
	if err != nil {
		return nil, err
	}
	conn := &countingConn{Conn: nc}
	conn.SetDeadline(deadline)
	note := time.AfterFunc(quietAfter, func() {
		if !conn.read.Load() {
			quiet()
		}
	})
	defer note.Stop()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	cc, chans, reqs, err := ssh.NewClientConn(conn, t.spec.Thing, cfg)
	stop()
	if err != nil {
		conn.Close()
		if !conn.read.Load() && ctx.Err() == nil {
			return nil, fmt.Errorf("%w (%v)", errNoAnswer, err)
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(cc, chans, reqs), nil
}

func (s *Server) authMethod(req *loginRequest) ([]ssh.AuthMethod, error) {
	switch req.Auth {
	case "password":
		if req.Password == "" {
			return nil, errors.New("enter a password")
		}
		pw := req.Password
		req.Password = ""
		return []ssh.AuthMethod{ssh.Password(pw)}, nil
	case "key":
		for _, k := range s.cfg.Keys {
			if k.Name == req.Key {
				b, err := os.ReadFile(k.Path)
				if err != nil {
					return nil, fmt.Errorf("reading key %q: %w", k.Name, err)
				}
				signer, err := ssh.ParsePrivateKey(b)
				if err != nil {
					return nil, fmt.Errorf("key %q: %w", k.Name, err)
				}
				return []ssh.AuthMethod{ssh.PublicKeys(signer)}, nil
			}
		}
		return nil, fmt.Errorf("no key named %q", req.Key)
	case "pem":
		pem, pass := []byte(req.PEM), []byte(req.Passphrase)
		req.PEM, req.Passphrase = "", ""
		var signer ssh.Signer
		var err error
		if len(pass) > 0 {
			signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, pass)
		} else {
			signer, err = ssh.ParsePrivateKey(pem)
		}
		var missing *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &missing):
			return nil, errors.New("the pasted key is encrypted: enter its passphrase")
		case errors.Is(err, x509.IncorrectPasswordError):
			return nil, errors.New("the passphrase of the pasted key is wrong")
		case len(pass) > 0 && err != nil && strings.Contains(err.Error(), "not password protected"):
			return nil, errors.New("the pasted key is not encrypted: leave the passphrase empty")
		case err != nil:
			return nil, errors.New("the pasted private key cannot be read (want an OpenSSH or PEM private key)")
		}
		return []ssh.AuthMethod{ssh.PublicKeys(signer)}, nil
	}
	return nil, fmt.Errorf("unknown login method %q", req.Auth)
}

// relay runs a shell on a pty and copies between it and the page; pctx ends when
// the page has gone. It returns the final message for the page and how the
// terminal ended (endedByPage, …).
func (s *Server) relay(ctx, pctx context.Context, c *websocket.Conn, term *terminal, client *ssh.Client, t *liveTunnel, req *loginRequest, hostNote string) (serverMessage, string) {
	if pageGone(ctx, pctx) { // nothing for a page that has gone
		return closedByPage, endedByPage
	}
	// Until the pumps below watch the page and the console, a device that does not
	// answer the session's requests must not hold the terminal: a page that goes,
	// or the console shutting down, ends the connection.
	setup := context.AfterFunc(pctx, func() { client.Close() })
	defer setup() // a return before the shell: the caller closes the client anyway
	fail := func(format string, args ...any) (serverMessage, string) {
		switch {
		case pageGone(ctx, pctx):
			return closedByPage, endedByPage
		case ctx.Err() != nil:
			return endMsg("error", "the console is shutting down"), endedByShutdown
		}
		return endMsg("error", format, args...), endedByError
	}
	sess, err := client.NewSession()
	if err != nil {
		return fail("opening a session: %v", err)
	}
	defer sess.Close()
	cols, rows := clamp(req.Cols, 80), clamp(req.Rows, 24)
	modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
	if err := sess.RequestPty("xterm-256color", rows, cols, modes); err != nil {
		return fail("requesting a terminal: %v", err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		return fail("%v", err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return fail("%v", err)
	}
	// With a pty the device's output is mostly on stdout, but a server may still
	// send stderr (extended data): it goes to the page too.
	stderr, err := sess.StderrPipe()
	if err != nil {
		return fail("%v", err)
	}
	if pageGone(ctx, pctx) {
		return closedByPage, endedByPage
	}
	err = sess.Shell()
	if !setup() || err != nil { // the page went, or the console is closing
		return fail("starting the shell: %v", err)
	}
	send(c, serverMessage{Type: "info", Text: hostNote})
	send(c, serverMessage{Type: "ready"})

	rctx, cancel := context.WithCancel(pctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer client.Close() // before wg.Wait: ends both pumps
	// delivered is closed when the page → device pump has ended.
	delivered := make(chan struct{})
	// A closed tunnel ends the SSH connection even if the stream lingers, and so
	// does a page that has gone, once what it sent has gone to the device (for a
	// second at most: a shell that reads no input leaves the pump blocked).
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-t.done:
			client.Close()
		case <-rctx.Done():
			switch {
			case ctx.Err() != nil: // the console is shutting down
				client.Close()
			case pageGone(ctx, pctx):
				select {
				case <-delivered:
				case <-time.After(time.Second):
				}
				client.Close()
			}
		}
	}()
	// What the page sent, during the login too, in order. written counts the
	// keystroke bytes written, reported the count the page has.
	var written, reported int64
	deliver := func(in pageInput) error {
		for _, m := range in.msgs {
			if m.typ == websocket.MessageBinary {
				if _, err := stdin.Write(m.b); err != nil {
					return err
				}
				written += int64(len(m.b))
				if written-reported >= deliveredStep {
					if send(c, serverMessage{Type: "delivered", Bytes: written}) == nil {
						reported = written
					}
				}
				continue
			}
			var cm clientMessage
			if json.Unmarshal(m.b, &cm) == nil && cm.Type == "resize" {
				sess.WindowChange(clamp(cm.Rows, 24), clamp(cm.Cols, 80))
			}
		}
		return nil
	}
	wg.Add(1)
	go func() { // page → device
		defer wg.Done()
		defer close(delivered)
		for {
			select {
			case in := <-term.in:
				if deliver(in) != nil {
					return
				}
			case <-rctx.Done():
				if pageGone(ctx, pctx) {
					// What it sent before it went still goes; then the SSH
					// connection ends (above): sess.Wait returns.
					select {
					case in := <-term.in:
						deliver(in)
					default:
					}
				}
				return
			}
		}
	}()
	outDone := make(chan struct{})
	var outs sync.WaitGroup
	for _, out := range []io.Reader{stdout, stderr} {
		outs.Add(1)
		go func() { // device → page
			defer outs.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := out.Read(buf)
				if n > 0 {
					// Not ctx: a cancelled Write closes the WebSocket, before the
					// end message.
					wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
					if c.Write(wctx, websocket.MessageBinary, buf[:n]) != nil {
						client.Close()
					}
					cancel()
				}
				if err != nil {
					return
				}
			}
		}()
	}
	go func() { outs.Wait(); close(outDone) }()
	werr := sess.Wait()
	<-outDone // all output is on the page before the end message
	cancel()
	if pageGone(ctx, pctx) && werr != nil {
		return closedByPage, endedByPage
	}
	var ee *ssh.ExitError
	switch {
	case werr == nil:
		return endMsg("exit", "session ended (exit status 0)"), endedByDevice
	case errors.As(werr, &ee) && ee.Signal() != "":
		return endMsg("exit", "session ended (killed by signal %s)", ee.Signal()), endedByDevice
	case errors.As(werr, &ee):
		return endMsg("exit", "session ended (exit status %d)", ee.ExitStatus()), endedByDevice
	}
	if ctx.Err() != nil {
		return endMsg("error", "the console is shutting down"), endedByShutdown
	}
	// A lost connection is most often the tunnel closing: the stream breaks a
	// moment before the source side hears the service's Close frame.
	if reason, ok := t.closedReason(3 * time.Second); ok {
		return endMsg("tunnel", "the tunnel is closed: %s", reason), endedByTunnel
	}
	var missing *ssh.ExitMissingError
	if errors.As(werr, &missing) {
		// x/crypto's own words ("remote command exited without exit status
		// or exit signal") are not the operator's.
		return endMsg("error", "the session on %s ended without an exit status: the device closed it "+
			"(its agent stopping, or one of its limits)", t.spec.Thing), endedByError
	}
	return endMsg("error", "the connection to %s was lost: %v", t.spec.Thing, werr), endedByError
}

func clamp(v, def int) int {
	if v <= 0 || v > 1000 {
		return def
	}
	return v
}
