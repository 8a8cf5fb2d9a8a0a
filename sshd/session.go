package sshd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// leaveDelay is how long a session whose client has gone waits for its
// program to end after the hangup (SIGHUP) before it ends without it (see
// leave).
const leaveDelay = 2 * time.Second

// maxEnv is how many client variables a session keeps, as OpenSSH, and
// maxEnvBytes how much of them (names and values): each is held until the
// session ends, and LANG and LC_* values are short.
const (
	maxEnv      = 128
	maxEnvBytes = 64 << 10
)

// ptyDrain is how long output is still read from a pty after its shell has
// exited, once the terminal goes quiet. Large reads (what the shell left in
// the terminal's buffers, up to ~68 KiB, read while the client is slow to
// take it) push that on, up to ptyDrainBytes in all; small ones,
// ptyDrainReads of them, too, and then nothing does: a program left behind
// that ignores the hangup may write a line now and then, or without pause,
// for good, and the session, its exit status held back, would not end
// (OpenSSH's ends at once). Without pause, on a slow CPU (a router, or
// qemu-user) every read is large. The backlog comes first, and the kernel
// holds less of it than ptyDrainBytes, so only output written after the exit
// is cut.
const (
	ptyDrain      = 200 * time.Millisecond
	ptyDrainReads = 8
	ptyDrainBytes = 1 << 20
)

// session serves one "session" channel: its requests are handled in order
// by one goroutine, so a window-change that arrives before the shell starts
// is applied when the pty is made and one that arrives later goes straight
// to the pty; no request ever waits for the program. (gliderlabs' own
// session handler hands sizes over a one-slot channel that a second early
// window-change blocks, and races Pty() against it: gliderlabs/ssh#265.)
type session struct {
	srv   *Server
	st    *connState
	ctx   context.Context // the connection's; done when it closes
	sc    *gossh.ServerConn
	ch    gossh.Channel
	restr restrictions

	// Only the request goroutine touches these.
	env      []string
	envBytes int // the length of env's names and values
	ptyReq   *ptyRequest
	held     *heldPTY // the pty allocated by pty-req, until the program takes it
	started  bool
	kind     string
	command  string
	asked    string // the command line of an exec request, as the client sent it
	startAt  time.Time
	// reason is the session-end event's Reason when the server wrote the
	// client text of its own in the program's place or before it: "" for
	// none.
	reason string
	// agentSock is the ssh -A socket auth-agent-req made, "" for none;
	// stopAgent removes it when the session ends.
	agentSock string
	stopAgent func()

	in, out atomic.Int64
	ended   sync.Once     // finish or leave
	done    chan struct{} // closed when the program has finished (or was left running) and the channel is closed
	replied chan struct{} // closed once the start request is answered
	// outputGone is closed by "eow@openssh.com": the client reads no more of
	// the channel's data (see endOfWrite).
	outputGone chan struct{}

	// A pty's input waits at the barrier for the requests sent before it (see
	// orderedReader); served is closed when no more requests will come.
	barrier, caughtUp, served chan struct{}

	mu          sync.Mutex
	win         windowChange        // latest size from pty-req or window-change
	ptmx        *os.File            // the running program's pty master, nil when none
	proc        *os.Process         // the running program, nil when none or finished
	procCred    *syscall.Credential // what proc runs as; nil: the server's own ids
	hangup      func(running bool)  // ends the program (if running) and its I/O when the client goes away
	closeStdout func()              // stops reading the program's stdout (a pty's only output); nil for in-process services
}

func (s *Server) handleSession(_ *gliderssh.Server, sc *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
	st := stateFrom(ctx)
	if !st.enter() {
		nc.Reject(gossh.ResourceShortage, "connection closing")
		return
	}
	defer st.leave()
	if !s.acquireSession() {
		const reason = "too many sessions"
		s.logLimited(&s.sessionLog, slog.LevelWarn, "session refused: "+reason, "remote", st.remote, "user", sc.User())
		s.audit(&Event{Type: EventSessionRefused, Remote: st.remote, SessionID: hex.EncodeToString(sc.SessionID()), User: sc.User(),
			Method: sc.Permissions.Extensions[extMethod], Reason: reason})
		nc.Reject(gossh.ResourceShortage, reason)
		return
	}
	defer s.releaseSession()
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	discardExtended(ch)
	sess := &session{srv: s, st: st, ctx: ctx, sc: sc, ch: ch, restr: restrictionsOf(sc.Permissions),
		barrier: make(chan struct{}), caughtUp: make(chan struct{}), served: make(chan struct{}),
		outputGone: make(chan struct{})}
	sess.serve(reqs)
	if sess.held != nil { // no program took it: no shell or exec, or an in-process subsystem
		sess.held.close()
	}
	// The channel is closed: by us after the program ended, or by the client
	// or a dead connection while it runs.
	sess.stop()
	if sess.stopAgent != nil {
		sess.stopAgent()
	}
}

// serve handles the channel's requests in order until the client closes the
// channel. At the barrier it first handles every request already queued, so that
// input read after them sees their effect.
func (sess *session) serve(reqs <-chan *gossh.Request) {
	defer close(sess.served)
	for {
		select {
		case req, ok := <-reqs:
			if !ok {
				return
			}
			sess.handle(req)
		case <-sess.barrier:
			for n := len(reqs); n > 0; n-- {
				sess.handle(<-reqs) // queued, so never nil: a channel is closed only once drained
			}
			sess.caughtUp <- struct{}{}
		}
	}
}

// orderedReader is a pty's input. x/crypto/ssh queues a channel's requests for
// one goroutine and its data for another, so a window-change sent just before
// "stty size" could still be waiting when the shell runs the line (OpenSSH
// applies them in order). The SSH connection queues a request before it makes
// later data readable, so once a read returns, every earlier request is queued or
// handled: the reader waits at the session's barrier until they are handled.
type orderedReader struct {
	_    [0]func() // not comparable: no equality function in the binary (docs/size.md)
	sess *session
	r    io.Reader
}

func (o *orderedReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	if n > 0 {
		select {
		case o.sess.barrier <- struct{}{}:
			<-o.sess.caughtUp
		case <-o.sess.served:
		}
	}
	return n, err
}

func (sess *session) reply(req *gossh.Request, ok bool) {
	if req.WantReply {
		req.Reply(ok, nil)
	}
}

func (sess *session) handle(req *gossh.Request) {
	switch req.Type {
	case "pty-req":
		if sess.started || sess.ptyReq != nil || sess.restr.noPTY {
			sess.reply(req, false)
			return
		}
		p, err := parsePTYRequest(req.Payload)
		if err != nil || strings.ContainsRune(p.Term, 0) { // TERM could not reach execve
			sess.reply(req, false)
			return
		}
		// The terminal is allocated now, as OpenSSH's session_pty_req does,
		// so that a device without one (no devpts mounted, or all in use)
		// fails only this request: the client says so and goes on without a
		// terminal, instead of losing the whole session at the shell request.
		master, tty, err := openPTY()
		if err != nil {
			sess.srv.log().Warn("pty request refused", "remote", sess.st.remote, "user", sess.sc.User(), "error", err)
			sess.reply(req, false)
			return
		}
		sess.held = &heldPTY{master, tty}
		sess.ptyReq = &p
		sess.mu.Lock()
		sess.win = windowChange{Cols: p.Cols, Rows: p.Rows, Width: p.Width, Height: p.Height}
		sess.mu.Unlock()
		sess.reply(req, true)
	case "window-change":
		w, err := parseWindowChange(req.Payload)
		if err != nil || sess.ptyReq == nil {
			sess.reply(req, false)
			return
		}
		sess.mu.Lock()
		sess.win = w
		if sess.ptmx != nil {
			setWindowSize(sess.ptmx, w)
		}
		sess.mu.Unlock()
		sess.reply(req, true)
	case "env":
		var kv struct {
			Name, Value string
			Rest        []byte `ssh:"rest"` // refused if not empty, as directTCPIP.Rest
		}
		// A value with a NUL could not reach execve (the program would
		// not start), and OpenSSH keeps at most maxEnv variables
		// (session.c, session_env_req): each request holds memory.
		if err := gossh.Unmarshal(req.Payload, &kv); err != nil || len(kv.Rest) != 0 || sess.started || !sess.srv.acceptEnv(kv.Name) ||
			strings.ContainsRune(kv.Value, 0) || len(sess.env) >= maxEnv || sess.envBytes+len(kv.Name)+len(kv.Value) > maxEnvBytes {
			sess.reply(req, false)
			return
		}
		sess.env = append(sess.env, kv.Name+"="+kv.Value)
		sess.envBytes += len(kv.Name) + len(kv.Value)
		sess.reply(req, true)
	case "auth-agent-req@openssh.com":
		// A second one is refused, as OpenSSH's session_auth_agent_req
		// refuses it.
		refused := ""
		switch {
		case !sess.srv.AgentForwarding:
			refused = "agent forwarding is off"
		case sess.restr.noAgent:
			refused = "agent forwarding not allowed for this key"
		case sess.started || sess.agentSock != "":
			refused = "agent forwarding asked for again, or after the session started"
		}
		if refused != "" {
			sess.srv.refuseForward(sess.st, sess.sc, "agent", "", refused)
			sess.reply(req, false)
			return
		}
		// The socket is made now, as OpenSSH's session_auth_agent_req does,
		// so that a device where it cannot be (TMPDIR missing, a /tmp tmpfs
		// out of inodes, no descriptors left) fails only this request: ssh
		// sends it without want-reply, and the shell runs without
		// SSH_AUTH_SOCK. Made at the shell or exec request, its failure
		// refused the whole session.
		sock, stop, err := sess.startAgentForwarding()
		if err != nil {
			sess.srv.log().Warn("agent forwarding refused", "remote", sess.st.remote, "user", sess.sc.User(), "error", err)
			ev := forwardEvent(sess.st, sess.sc, "agent", "")
			ev.Reason = err.Error()
			sess.srv.audit(&ev)
			sess.reply(req, false)
			return
		}
		sess.agentSock, sess.stopAgent = sock, stop
		sess.reply(req, true)
	case "x11-req":
		// ssh -X and -Y (RFC 4254, section 6.3.1). Refused, as any request
		// the server does not know was, but with a forward event like the
		// other forwards refused: the client goes on with its shell
		// ("X11 forwarding request failed on channel 0"). The event names
		// no display, as none is made, and leaves out the client's X
		// authentication cookie, which is a secret.
		sess.srv.refuseForward(sess.st, sess.sc, "x11", "", "X11 forwarding is not supported")
		sess.reply(req, false)
	case "eow@openssh.com":
		// OpenSSH's PROTOCOL, section 2.1: the client's output failed (as in
		// "ssh host yes | head -1") and it will read no more of this channel's
		// data. It still sends input and waits for the exit status. Before
		// the program starts there is no output to stop: it is ignored.
		if !sess.started {
			sess.reply(req, false)
			return
		}
		sess.endOfWrite()
		sess.reply(req, true)
	case "signal":
		sig, ok := sess.signalOf(req.Payload)
		// The answer goes first: the program's end closes the channel, and
		// an answer after that would be lost (OpenSSH answers first too).
		sess.reply(req, ok)
		if ok {
			sess.signal(sig)
		}
	case "shell", "exec", "subsystem":
		if sess.started {
			sess.reply(req, false)
			return
		}
		var arg string
		if req.Type != "shell" {
			var v struct{ Value string }
			if err := gossh.Unmarshal(req.Payload, &v); err != nil {
				sess.reply(req, false)
				return
			}
			arg = v.Value
		}
		sess.started = true
		if err := sess.start(req.Type, arg); err != nil {
			if sess.kind == "" { // refused before start decided what would run
				sess.kind, sess.command = req.Type, arg
			}
			sess.audit(EventSessionRefused, func(e *Event) { e.Reason = clipClient(err.Error()) }) // it may quote the request
			sess.reply(req, false)
			// The channel stays open, as OpenSSH's: the client may ask
			// again. PuTTY's pscp falls back from the sftp subsystem to
			// "scp -f" on it, WinSCP to a shell.
			sess.started = false
			sess.kind, sess.command, sess.asked, sess.reason = "", "", "", ""
			return
		}
		sess.reply(req, true)
		close(sess.replied)
	default:
		sess.reply(req, false)
	}
}

// acceptEnv applies AcceptEnv to a variable name.
func (s *Server) acceptEnv(name string) bool {
	if name == "" || strings.ContainsAny(name, "=\x00") {
		return false
	}
	for _, p := range s.AcceptEnv {
		if matchPattern(name, p) {
			return true
		}
	}
	return false
}

// signals are RFC 4254 section 6.10's signal names (a table rather than a
// map: static data, no code or heap at start).
var signals = [...]struct {
	name string
	sig  syscall.Signal
}{
	{"ABRT", syscall.SIGABRT}, {"ALRM", syscall.SIGALRM}, {"FPE", syscall.SIGFPE}, {"HUP", syscall.SIGHUP},
	{"ILL", syscall.SIGILL}, {"INT", syscall.SIGINT}, {"KILL", syscall.SIGKILL}, {"PIPE", syscall.SIGPIPE},
	{"QUIT", syscall.SIGQUIT}, {"SEGV", syscall.SIGSEGV}, {"TERM", syscall.SIGTERM}, {"USR1", syscall.SIGUSR1},
	{"USR2", syscall.SIGUSR2},
}

// signalName is the RFC 4254 name of sig.
func signalName(sig syscall.Signal) (string, bool) {
	for _, s := range signals {
		if s.sig == sig {
			return s.name, true
		}
	}
	return "", false
}

// signalNamed is the signal of an RFC 4254 name.
func signalNamed(name string) (syscall.Signal, bool) {
	for _, s := range signals {
		if s.name == name {
			return s.sig, true
		}
	}
	return 0, false
}

// signalOf is the signal a "signal" request (its payload) asks for, and
// whether it is sent: not for a name it does not know, not when nothing runs
// (once the program has been waited for, its process group id may be reused)
// and, as OpenSSH refuses it, not to a forced command, whose choice was the
// key's or certificate's owner's.
func (sess *session) signalOf(payload []byte) (syscall.Signal, bool) {
	var req struct{ Name string }
	if gossh.Unmarshal(payload, &req) != nil {
		return 0, false
	}
	sig, ok := signalNamed(strings.TrimPrefix(req.Name, "SIG"))
	if !ok || sess.restr.hasForce || sess.kind == "subsystem" {
		return 0, false // a subsystem's too, as OpenSSH refuses it
	}
	sess.mu.Lock()
	ok = sess.proc != nil
	sess.mu.Unlock()
	return sig, ok
}

// signal delivers sig to the running program's process group, as OpenSSH's
// session_signal_req does (killpg): what "sh -c" started gets it too, instead
// of holding the output open once the shell alone has died. It is sent with
// the user's privileges, as there: see killpgAs.
func (sess *session) signal(sig syscall.Signal) {
	sess.mu.Lock()
	if sess.proc != nil {
		killpgAs(sess.proc.Pid, sig, sess.procCred) // EPERM: nothing the user may signal
	}
	sess.mu.Unlock()
}

// start decides what the request runs and starts it. An error refuses the
// request.
func (sess *session) start(reqType, arg string) (err error) {
	defer func() {
		if err != nil {
			sess.done = nil // nothing runs: stop must not wait
		}
	}()
	s := sess.srv
	if reqType == "exec" {
		// The command line as the client sent it (for a forced command,
		// the one it asked for), for the events of a refused one too.
		sess.asked = arg
	}
	a, err := s.lookupUser(sess.sc.User())
	if err != nil {
		return err
	}
	sess.done = make(chan struct{})
	sess.replied = make(chan struct{})
	sess.startAt = time.Now()
	if reqType == "subsystem" && arg != "sftp" {
		// Refused before a forced command is considered, as sshd does.
		return fmt.Errorf("unknown subsystem %q", clipClient(arg))
	}
	if a.UID != 0 {
		if text, ok := s.nologin(); ok {
			sess.kind, sess.command = reqType, arg
			return sess.refuseNologin(text)
		}
	}
	original := arg
	cmdline, kind := arg, reqType
	var extraEnv []string
	var sftpOpt sftpOptions
	forcedSFTP := false // a key limited to internal-sftp
	if sess.restr.hasForce {
		cmdline, kind = sess.restr.forceCommand, "exec"
		if reqType == "subsystem" {
			// What the subsystem would have run, as sshd passes its
			// Subsystem command (dropbear its sftp-server's path): a
			// wrapper script can exec it.
			original = "internal-sftp"
			if bin := s.externalSFTPServer(); bin != "" {
				original = bin
			}
		}
		// As sshd: a shell request has no original command, and the
		// variable is left unset (an exec of "" sets it empty).
		if reqType != "shell" {
			extraEnv = append(extraEnv, "SSH_ORIGINAL_COMMAND="+original)
		}
		if args, ok := internalSFTP(cmdline); ok {
			if reqType != "subsystem" {
				// sshd's SUBSYSTEM_INT_SFTP_ERROR: a key limited to
				// sftp gets no shell or command.
				sess.kind, sess.command = kind, cmdline
				return sess.refuseNonSFTP()
			}
			opt, err := parseInternalSFTP(args)
			if err != nil {
				return err
			}
			kind, cmdline, sftpOpt, forcedSFTP = "subsystem", "sftp", opt, true
		}
	}
	sess.kind, sess.command = kind, cmdline
	switch kind {
	case "subsystem": // sftp: any other was refused above
		if sftpOpt.readOnly {
			sess.command = "sftp (read-only)"
		}
		if !s.sameUser(a) && sftpOpt.readOnly {
			// The device's sftp-server would take -R, but it may not be
			// OpenSSH's: nothing is served that might write.
			return s.servesOnly("internal-sftp -R", a, "")
		}
		if !s.sameUser(a) {
			// In-process SFTP would act with the server's privileges: use
			// the device's own sftp-server, run as the user, if it has one.
			bin := s.externalSFTPServer()
			if bin == "" {
				return s.servesOnly("in-process sftp", a, ", and there is no sftp-server")
			}
			sess.kind, sess.command = "subsystem", "sftp ("+bin+")"
			if !forcedSFTP {
				// Through the user's shell, as sshd runs an external
				// sftp-server: a shell that limits the account (nologin,
				// git-shell, a vendor's CLI) decides, as it does for
				// commands.
				return sess.startProcess(a, bin, false, extraEnv)
			}
			// A key limited to internal-sftp runs it without the shell, as
			// sshd's internal-sftp: through it, bash read the user's
			// ~/.bashrc (as it does for ssh's commands), which that key
			// could upload and so run any command; and an account whose
			// shell is nologin had no SFTP.
			return sess.startProgram(a, bin, []string{path.Base(bin)}, extraEnv)
		}
		return sess.serveSFTP(a, sftpOpt)
	case "exec":
		if cmdline == "internal-sftp" {
			if !s.sameUser(a) {
				return s.servesOnly("internal-sftp", a, "")
			}
			return sess.serveSFTP(a, sftpOptions{})
		}
		if opts, ok, err := parseSCPCommand(cmdline, sess.shellExpand(a, extraEnv)); ok {
			if !s.sameUser(a) {
				// Not in-process for another user: the device's scp, if
				// any, runs as the user through the shell like any command.
				break
			}
			sess.kind = "scp"
			sess.audit(EventSessionStart, nil)
			go func() { sess.finish(sess.runSCP(a, opts, err), "", false) }()
			return nil
		}
	}
	return sess.startProcess(a, cmdline, kind == "shell", extraEnv)
}

// servesOnly is the refusal of what, served in-process, to a, who is not the
// server's user; tail says more.
func (s *Server) servesOnly(what string, a *account, tail string) error {
	return fmt.Errorf("%s serves only uid %d, not %s (uid %d)%s", what, s.euid(), a.Name, a.UID, tail)
}

// serveSFTP serves the session in-process, with the server's privileges (a is
// its user).
func (sess *session) serveSFTP(a *account, opt sftpOptions) error {
	sess.audit(EventSessionStart, nil)
	go func() { sess.finish(sess.runSFTP(a, opt), "", false) }()
	return nil
}

// nologin reports whether /etc/nologin exists, and what it says (its first
// 4 KiB): then, as with OpenSSH without PAM (do_nologin), no session of a user
// other than root starts, whatever it asks for.
func (s *Server) nologin() (text string, ok bool) {
	p := s.nologinFile
	if p == "" {
		p = "/etc/nologin"
	}
	if _, err := os.Stat(p); err != nil {
		return "", false
	}
	if f, _, err := openRegular(p); err == nil {
		b, _ := io.ReadAll(io.LimitReader(f, 4<<10))
		f.Close()
		text = string(b)
	}
	return text, true
}

// refuseNologin ends a session as OpenSSH's do_nologin does: the file's text
// on the program's stderr (on a pty, as terminal output), exit status 254.
func (sess *session) refuseNologin(text string) error {
	sess.srv.log().Info("session refused: /etc/nologin exists", "remote", sess.st.remote, "user", sess.sc.User())
	sess.reason = "nologin"
	sess.childStderr(text)
	sess.endUnstarted(254)
	return nil
}

// childStderr writes text where OpenSSH's do_child writes before the program
// runs, its stderr: the channel's, or on a pty the terminal, whose lines end
// in "\r\n". So it comes before the program's output, which it raced after.
// It counts in the session's bytes out, as the program's output does.
func (sess *session) childStderr(text string) {
	w := sess.stderr()
	if sess.ptyReq != nil {
		w, text = sess.writer(sess.ch), strings.ReplaceAll(text, "\n", "\r\n")
	}
	io.WriteString(w, text)
}

// endUnstarted ends a session whose program was not started with exit status
// code.
func (sess *session) endUnstarted(code int) {
	sess.audit(EventSessionStart, nil)
	go sess.finish(code, "", false)
}

// refuseNonSFTP answers a shell or exec request under the forced command
// internal-sftp as sshd does: a line on the program's output, exit status 1.
func (sess *session) refuseNonSFTP() error {
	sess.srv.log().Info("refusing a non-sftp session: the forced command is internal-sftp", "remote", sess.st.remote, "user", sess.sc.User())
	nl := "\n"
	if sess.ptyReq != nil {
		nl = "\r\n"
	}
	io.WriteString(sess.writer(sess.ch), "This service allows sftp connections only."+nl) // counted, as childStderr's
	sess.reason = "only sftp is allowed for this key"
	sess.endUnstarted(1)
	return nil
}

// environment builds a program's environment: the server's TZ, accepted
// client variables, then the standard ones (later ones win).
func (sess *session) environment(a *account, shell string, extra []string) []string {
	var env []string
	// The server's own time zone is the one variable of its environment that
	// sessions get, as OpenSSH's do_setup_env passes its TZ on: a device whose
	// libc reads no zone file is set up so. A client's (AcceptEnv) comes after.
	if tz, ok := os.LookupEnv("TZ"); ok {
		env = append(env, "TZ="+tz)
	}
	env = append(env, sess.env...)
	pathVar := "/usr/local/bin:/usr/bin:/bin"
	if a.UID == 0 {
		pathVar = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	// As OpenSSH on Linux: MAIL names the user's spool file whether or not
	// the device has one.
	env = append(env, "HOME="+a.Home, "USER="+a.Name, "LOGNAME="+a.Name, "SHELL="+shell, "PATH="+pathVar, "MAIL=/var/mail/"+a.Name)
	rh, rp := splitAddr(sess.sc.RemoteAddr())
	lh, lp := splitAddr(sess.sc.LocalAddr())
	env = append(env, "SSH_CLIENT="+rh+" "+rp+" "+lp, "SSH_CONNECTION="+rh+" "+rp+" "+lh+" "+lp)
	if sess.ptyReq != nil && sess.ptyReq.Term != "" {
		env = append(env, "TERM="+sess.ptyReq.Term)
	}
	return append(env, extra...)
}

// shellExpand expands for splitShellWords as the user's shell would expand
// a command: the variables of the environment it gets (and PWD, which the
// shell sets), ~ and ~user as tildeHome has them. The environment is built
// only when a command has a $ to expand, at the first, and kept for the
// others (the function is called from one goroutine, parseSCPCommand's: no
// sync.OnceValue, whose instantiation for []string was 0.9 KB of code).
func (sess *session) shellExpand(a *account, extra []string) func(string) (string, bool) {
	var env []string // nil until built: it has HOME and the others then
	return func(name string) (string, bool) {
		if user, ok := strings.CutPrefix(name, "~"); ok {
			return sess.tildeHome(a, user)
		}
		if env == nil {
			env = append(sess.environment(a, shellOf(a.Shell), extra), "PWD="+workDir(a))
		}
		return lookupEnv(env, name)
	}
}

// tildeHome is the directory ~user names for a's session: a's home for "",
// else user's in the passwd file.
func (sess *session) tildeHome(a *account, user string) (string, bool) {
	if user == "" {
		return a.Home, true
	}
	return sess.srv.homeOf(user)
}

// lookupEnv is the value of name in env (NAME=value entries, the last wins).
func lookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// splitAddr is a's host and port for SSH_CLIENT and SSH_CONNECTION: an
// address with no numeric port (a tunnel stream's "tunnel:<label>/<service>",
// which SplitHostPort takes apart at its colon) is a whole with port 0, so
// that scripts that read the variables find a number there.
func splitAddr(a net.Addr) (host, port string) {
	if a == nil {
		return "unknown", "0"
	}
	h, p, err := net.SplitHostPort(a.String())
	if _, perr := strconv.ParseUint(p, 10, 16); err != nil || perr != nil {
		return a.String(), "0"
	}
	return h, p
}

// startProcess runs the user's shell: a login shell for "shell", or
// "shell -c cmdline" for a command, on a pty if one was requested.
func (sess *session) startProcess(a *account, cmdline string, login bool, extraEnv []string) error {
	shell := shellOf(a.Shell)
	args := []string{path.Base(shell), "-c", cmdline}
	if login {
		args = []string{"-" + path.Base(shell)}
	}
	return sess.startProgram(a, shell, args, extraEnv)
}

// startProgram runs prog with args as a, in a's home, on a pty if one was
// requested: the user's shell (startProcess), or a program run without it.
func (sess *session) startProgram(a *account, prog string, args, extraEnv []string) error {
	s := sess.srv
	shell := shellOf(a.Shell) // $SHELL, whatever runs
	if sess.agentSock != "" {
		extraEnv = append(extraEnv, "SSH_AUTH_SOCK="+sess.agentSock)
	}
	cred := s.credential(a)
	startIn := func(dir string) error {
		cmd := &exec.Cmd{Path: prog, Args: args, Dir: dir}
		if sess.ptyReq != nil {
			return sess.startPTY(cmd, a, cred, shell, extraEnv)
		}
		return sess.startPipes(cmd, a, cred, shell, extraEnv)
	}
	dir := workDir(a)
	if dir != a.Home {
		// No such directory: OpenSSH's do_child says so too (and runs the
		// session in /), or a command meant for the home ran in / unnoticed.
		sess.chdirFailed(a.Home, homeError(a.Home))
	}
	err := startIn(dir)
	if err != nil && dir != "/" && errors.Is(err, syscall.EACCES) && mayExec(prog, a) {
		// The home exists but the user may not enter it (the child
		// changes directory after taking the user's ids). The child's
		// error does not say whether it was that or the shell: a shell the
		// user may not run is reported as such below, not as the home.
		// The message goes before the program's output, as OpenSSH's.
		sess.chdirFailed(dir, syscall.EACCES)
		err = startIn("/")
	}
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Op == "fork/exec" {
		// The program could not be run: the user at their process limit
		// (RLIMIT_NPROC: execve fails with EAGAIN once the child has taken
		// the user's ids), a shell removed since login, an argument list
		// too long. OpenSSH's do_child says why on the program's stderr
		// (perror(shell)) and exits 1; a refused request told the client
		// only "exec request failed", and the reason was in the device's
		// log alone. The client gets it here too, and exit status 1.
		s.log().Warn("session's program did not start", "remote", sess.st.remote, "user", sess.sc.User(), "error", err)
		sess.reason = err.Error() // the program's name, not its arguments: see startError
		sess.childStderr(prog + ": " + strerror(pe.Err) + "\n")
		sess.endUnstarted(1)
		err = nil
	}
	return err
}

// chdirFailed tells the client that the session runs in / because its home
// directory could not be entered, as OpenSSH's do_child does before exec (see
// childStderr; on a pty as terminal output: extended data is no terminal's,
// and a client may order it apart from the data, as x/crypto's
// CombinedOutput did, the message after "/").
func (sess *session) chdirFailed(home string, err error) {
	text := "could not chdir to home directory " + home + ": " + strerror(err)
	sess.reason = text + "; the session ran in /"
	sess.childStderr("C" + text[1:] + "\n") // OpenSSH's words, capitalised
}

// mayExec reports whether a's ids may execute the file at path by its mode bits
// (ACLs aside), as the kernel decides for execve(2).
func mayExec(path string, a *account) bool {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return true // the start's own error says what is wrong
	}
	mode := uint32(st.Mode)
	// A loop, not slices.Contains: its instantiation for []uint32 would be
	// this function's alone.
	member := st.Gid == a.GID
	for _, g := range a.Groups {
		member = member || g == st.Gid
	}
	switch {
	case a.UID == 0:
		return mode&0o111 != 0
	case st.Uid == a.UID:
		return mode&0o100 != 0
	case member:
		return mode&0o010 != 0
	}
	return mode&0o001 != 0
}

// startError is the error for cmd, a shell, failing to start. It is logged,
// so it names the program the session runs (commandName) and never the
// command's arguments, which can hold secrets; exec's error names only
// cmd.Path, the shell.
func (sess *session) startError(cmd *exec.Cmd, err error) error {
	name := commandName(sess.command)
	if name == "" {
		name = cmd.Path
	}
	return wrapErr("starting "+name, err)
}

// startPipes runs cmd with pipes for stdin, stdout and stderr. Stdin gets
// EOF when the client sends EOF, so "ssh host cmd < file" works.
//
// cmd leads a new session, as every session's program does in OpenSSH
// (session.c, do_exec_no_pty: setsid). Left in the server's session it
// would share the server's controlling terminal (an agent started by hand
// or from an inittab line on a serial console): a user could open /dev/tty
// and push input into root's terminal with TIOCSTI. As a session leader it
// is also its own process group leader, so hangup's kill(-pid) reaches what
// it started.
func (sess *session) startPipes(cmd *exec.Cmd, a *account, cred *syscall.Credential, shell string, extraEnv []string) error {
	cmd.Env = sess.environment(a, shell, extraEnv)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return
	}
	inR, inW, err := pipe()
	if err != nil {
		return err
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return err
	}
	errR, errW, err := pipe()
	if err != nil {
		closeAll()
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if err := cmd.Start(); err != nil {
		closeAll()
		return sess.startError(cmd, err)
	}
	inR.Close()
	outW.Close()
	errW.Close()
	pid := cmd.Process.Pid
	sess.mu.Lock()
	sess.proc, sess.procCred = cmd.Process, cred
	// Like sshd's chan_rcvd_eow: the program's next write to stdout gets
	// EPIPE (and SIGPIPE, which ends it unless it is ignored); its stderr is
	// read on (endOfWrite).
	sess.closeStdout = func() { outR.Close() }
	closeOutputs := func() {
		outR.Close()
		errR.Close()
	}
	closePipes := func() {
		closeOutputs()
		inW.Close()
	}
	var exited atomic.Bool
	sess.hangup = func(running bool) {
		if !running || exited.Load() {
			// The command has exited but something it started still holds
			// the output open: stop reading, it gets SIGPIPE on its next write.
			closePipes()
			return
		}
		// SIGCONT after it, as a terminal's hangup sends: a stopped program
		// (kill -STOP from another login) kept the hangup pending for ever.
		syscall.Kill(-pid, syscall.SIGHUP)
		syscall.Kill(-pid, syscall.SIGCONT)
		time.AfterFunc(leaveDelay, func() {
			select {
			case <-sess.done:
				return // ended; the process group may not exist any more
			default:
			}
			closePipes()
			sess.leave(pid)
		})
	}
	sess.mu.Unlock()
	sess.audit(EventSessionStart, nil)

	var stdin sync.WaitGroup
	stdin.Add(1)
	go func() {
		defer stdin.Done()
		copyStream(inW, sess.reader())
		inW.Close()
		// Nothing reads the program's stdin any more: it exited (closed
		// below) or closed it, and so did all it started. What the client
		// still sends is read and dropped, as OpenSSH's sshd drops data on
		// a channel whose output has failed (channels.c,
		// channel_input_data): left unread, up to a window of it (2 MiB)
		// stayed in memory as long as a background job held the output
		// open and the session with it.
		copyStream(io.Discard, sess.ch)
	}()
	outDone := make(chan struct{}) // closed when stdout is copied
	errDone := make(chan struct{}) // and stderr
	copyOutput := func(w io.Writer, r *os.File, done chan struct{}) {
		copyStream(w, r)
		close(done)
	}
	go copyOutput(sess.writer(sess.ch), outR, outDone)
	go copyOutput(sess.stderr(), errR, errDone)
	go func() {
		state, _ := cmd.Process.Wait()
		// Its process group id may be reused from now on: hangup and
		// signal must not signal it any more.
		exited.Store(true)
		// Its stdin is closed now, as OpenSSH's session_exit_message does
		// (chan_write_failed): what it has not read it never will. A job it
		// started in the background may hold the pipe without reading it;
		// once the client had filled the pipe, the copy above blocked in
		// its write for as long as that job lived, holding the channel,
		// its unread data and the ended connection (finish closes only
		// the outputs, and stop does nothing for a finished session). What
		// is in the pipe already stays readable for the job.
		inW.Close()
		sess.mu.Lock()
		sess.proc = nil
		sess.mu.Unlock()
		sess.waitOutput(outDone)
		<-errDone // read on after "eow@openssh.com" too
		closeOutputs()
		sess.finish(exitOf(state))
		<-outDone
		stdin.Wait()
	}()
	return nil
}

// heldPTY is a pty allocated by a pty-req that no program has taken yet.
type heldPTY struct{ master, tty *os.File }

func (h *heldPTY) close() {
	h.master.Close()
	h.tty.Close()
}

// takePTY hands over the pty that pty-req allocated, or allocates another
// when a start that failed has closed that one (the retry in "/").
func (sess *session) takePTY() (master, tty *os.File, err error) {
	if h := sess.held; h != nil {
		sess.held = nil
		return h.master, h.tty, nil
	}
	return openPTY()
}

// startPTY runs cmd on the session's pty as its session leader.
func (sess *session) startPTY(cmd *exec.Cmd, a *account, cred *syscall.Credential, shell string, extraEnv []string) error {
	ptmx, tty, err := sess.takePTY()
	if err != nil {
		return err
	}
	if cred != nil {
		if err := sess.srv.ownTTY(tty, a); err != nil {
			tty.Close()
			ptmx.Close()
			return err
		}
	}
	if err := applyTerminalModes(tty, parseTerminalModes([]byte(sess.ptyReq.Modes))); err != nil {
		sess.srv.log().Debug("applying terminal modes", "remote", sess.st.remote, "error", err)
	}
	cmd.Env = sess.environment(a, shell, append(extraEnv, "SSH_TTY="+tty.Name()))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Credential: cred}
	sess.mu.Lock()
	setWindowSize(ptmx, sess.win)
	err = cmd.Start()
	tty.Close()
	if err != nil {
		sess.mu.Unlock()
		ptmx.Close()
		return sess.startError(cmd, err)
	}
	pid := cmd.Process.Pid
	sess.ptmx = ptmx
	sess.proc, sess.procCred = cmd.Process, cred
	var closeOnce sync.Once
	closePTY := func() {
		closeOnce.Do(func() {
			sess.mu.Lock()
			sess.ptmx = nil
			sess.mu.Unlock()
			ptmx.Close()
		})
	}
	// A pty has no read side of its own to close: hanging it up is what
	// ends the program's writes (SIGHUP, then EIO), instead of leaving it
	// blocked on a full terminal.
	sess.closeStdout = closePTY
	sess.hangup = func(running bool) {
		// Closing the master hangs up the terminal: the kernel sends SIGHUP
		// to the session, as when a modem line drops.
		closePTY()
		if !running {
			return
		}
		syscall.Kill(-pid, syscall.SIGHUP)
		time.AfterFunc(leaveDelay, func() {
			select {
			case <-sess.done:
			default:
				sess.leave(pid)
			}
		})
	}
	sess.mu.Unlock()
	sess.audit(EventSessionStart, nil)

	var exited atomic.Bool
	outDone := make(chan struct{})
	go func() {
		copyStream(ptmx, &orderedReader{sess: sess, r: sess.reader()})
		// EOF from the client: like OpenSSH, nothing is sent to the
		// terminal; the program keeps running until it exits.
	}()
	go func() {
		defer close(outDone)
		w := sess.writer(sess.ch)
		rb := newReadBuffer()
		defer rb.release()
		short, drained := 0, 0 // since the exit: reads of less than quietRead, bytes
		for {
			n, err := ptmx.Read(rb.buf())
			if n > 0 {
				if _, werr := w.Write(rb.buf()[:n]); werr != nil {
					return
				}
				if exited.Load() {
					drained += n
					if n < quietRead {
						short++
					}
					if short <= ptyDrainReads && drained <= ptyDrainBytes {
						ptmx.SetReadDeadline(time.Now().Add(ptyDrain))
					}
				}
			}
			if err != nil {
				return
			}
			rb.adapt(n)
		}
	}()
	go func() {
		state, _ := cmd.Process.Wait()
		sess.mu.Lock()
		sess.proc = nil
		sess.mu.Unlock()
		exited.Store(true)
		if ptmx.SetReadDeadline(time.Now().Add(ptyDrain)) != nil {
			// Not pollable: the output reader ends only when the pty is closed.
			select {
			case <-outDone:
			case <-time.After(ptyDrain):
			}
			closePTY()
		}
		sess.waitOutput(outDone)
		closePTY()
		sess.finish(exitOf(state))
		<-outDone
	}()
	return nil
}

// exitOf turns a process state into an exit status or signal name.
func exitOf(state *os.ProcessState) (status int, sig string, core bool) {
	if state == nil {
		return -1, "", false
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		if name, ok := signalName(ws.Signal()); ok {
			return -1, name, ws.CoreDump()
		}
		return 128 + int(ws.Signal()), "", false
	}
	return state.ExitCode(), "", false
}

// finish reports the program's end to the client: exit-status or
// exit-signal first, then EOF and close (OpenSSH's clients, and scp and
// sftp in particular, take a close without a status as failure).
func (sess *session) finish(status int, sig string, core bool) {
	sess.ended.Do(func() { sess.report(status, sig, core) })
}

func (sess *session) report(status int, sig string, core bool) {
	// A fast program must not close the channel before its start request
	// is answered: clients take that as a refused request.
	<-sess.replied
	if sig != "" {
		sess.ch.SendRequest("exit-signal", false, gossh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Message    string
			Lang       string
			_          func() // see sftpStatusPacket
		}{Signal: sig, CoreDumped: core}))
	} else {
		sess.ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{uint32(status)}))
	}
	sess.ch.CloseWrite()
	sess.ch.Close()
	sess.audit(EventSessionEnd, func(e *Event) {
		e.ExitStatus, e.ExitSignal = status, sig
		if sig != "" {
			e.ExitStatus = -1
		}
	})
	close(sess.done)
}

// leave ends a session whose client has gone while its program, hung up
// leaveDelay ago, still runs: it ignores SIGHUP (nohup, a job that must not
// die with the link). As OpenSSH's sshd, which never kills a session's
// processes, the program is left running, its output no longer read; the
// session, its MaxSessions slot and the connection end now, and the program
// is reaped whenever it exits.
func (sess *session) leave(pid int) {
	sess.ended.Do(func() {
		sess.ch.Close()
		sess.audit(EventSessionEnd, func(e *Event) {
			e.ExitStatus = -1
			e.Reason = fmt.Sprintf("the client went away; the program ignored the hangup and is left running (process group %d)", pid)
		})
		close(sess.done)
	})
}

// stop runs when the channel is gone. A program still running is hung up
// and waited for, so the connection's goroutines all end.
func (sess *session) stop() {
	if sess.done == nil {
		return
	}
	sess.mu.Lock()
	hangup := sess.hangup
	running := sess.proc != nil
	sess.mu.Unlock()
	select {
	case <-sess.done:
		return
	default:
	}
	if hangup != nil {
		hangup(running)
	}
	<-sess.done
}

func (sess *session) audit(t EventType, fill func(*Event)) {
	e := Event{
		Type:      t,
		Remote:    sess.st.remote,
		SessionID: hex.EncodeToString(sess.sc.SessionID()),
		User:      sess.sc.User(),
		Method:    sess.restr.method,
		Kind:      sess.kind,
		Command:   commandName(sess.command), // never the arguments: see commandName
		PTY:       sess.ptyReq != nil,
	}
	if t == EventSessionEnd {
		e.BytesIn, e.BytesOut = sess.in.Load(), sess.out.Load()
		e.Duration = time.Since(sess.startAt)
	}
	if sess.srv.AuditCommandLines {
		e.CommandLine = clipCommandLine(sess.asked)
	}
	if fill != nil {
		fill(&e)
	}
	if t == EventSessionEnd && e.Reason == "" {
		sess.st.mu.Lock()
		e.Reason = sess.st.endReason // the server ended it: a limit
		sess.st.mu.Unlock()
		if e.Reason == "" {
			e.Reason = sess.reason
		}
	}
	attrs := []any{"remote", e.Remote, "user", e.User, "kind", e.Kind}
	if e.Command != "" {
		attrs = append(attrs, "command", e.Command)
	}
	if e.CommandLine != "" {
		attrs = append(attrs, "command_line", e.CommandLine)
	}
	if t == EventSessionEnd { // the outcome is known only at the end
		attrs = append(attrs, "exit", e.ExitStatus, "in", e.BytesIn, "out", e.BytesOut, "duration", e.Duration.Round(time.Millisecond))
		if e.ExitSignal != "" {
			attrs = append(attrs, "signal", e.ExitSignal)
		}
	}
	if e.Reason != "" { // an end's, or a refusal's
		attrs = append(attrs, "reason", e.Reason)
	}
	sess.srv.log().Info(string(t), attrs...)
	sess.srv.audit(&e)
}

// resolvePath makes a client-supplied path absolute against dir, and no
// more: the kernel resolves it, as it does OpenSSH's scp's. Cleaned as text,
// "deep/../conf" with deep a link to dir/sub was ~/conf, where the kernel
// opens ~/dir/conf, and a trailing "/" (which makes the kernel refuse a
// file there) was lost. (A ~ that the shell would expand was expanded by
// splitShellWords.)
func resolvePath(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return strings.TrimSuffix(dir, "/") + "/" + p
}
