package sshd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// TestWindowChangeBeforeShell sends window changes between pty-req and
// shell, many more than gliderlabs' one-slot channel holds: none may block
// the request loop, and the last one must be the size the shell sees.
func TestWindowChangeBeforeShell(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	if err := s.RequestPty("xterm-256color", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := s.WindowChange(30+i, 100+i); err != nil {
			t.Fatal(err)
		}
	}
	in, _ := s.StdinPipe()
	out, _ := s.StdoutPipe()
	done := make(chan error, 1)
	go func() {
		if err := s.Shell(); err != nil {
			done <- err
			return
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shell: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shell request hung after window changes")
	}
	r := bufio.NewReader(out)
	io.WriteString(in, "stty size; echo TERM=$TERM; echo ARG0=$0\n")
	want := []string{"49 119", "TERM=xterm-256color", "ARG0=-sh"}
	got := readUntil(t, r, "ARG0=")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("shell output %q lacks %q", got, w)
		}
	}
	// A change while the shell runs is in force for the next line typed: the
	// request comes before the line on the wire, and the server applies it first
	// (orderedReader), as OpenSSH does, however slow the CPU.
	for i := range 10 {
		rows, cols := 12+i, 34+i
		if err := s.WindowChange(rows, cols); err != nil {
			t.Fatal(err)
		}
		io.WriteString(in, "stty size; echo END\n")
		got := readUntil(t, r, "END\r\n")
		if m := sttySize.FindStringSubmatch(got); m == nil || m[1] != fmt.Sprintf("%d %d", rows, cols) {
			t.Fatalf("stty size typed right after window-change to %d rows, %d columns: %q", rows, cols, got)
		}
	}
	io.WriteString(in, "exit 5\n")
	var ee *gossh.ExitError
	if err := s.Wait(); err == nil || !asExit(err, &ee) || ee.ExitStatus() != 5 {
		t.Errorf("Wait = %v, want exit status 5", err)
	}
}

// sttySize finds stty's answer before END (the prompt may precede it: the pty
// echoes typed input before the shell prints its prompt).
var sttySize = regexp.MustCompile(`(\d+ \d+)\r\nEND\r\n`)

// readUntil reads from r until the output contains marker after a line
// that echoed the command (the pty echoes input).
func readUntil(t *testing.T, r *bufio.Reader, marker string) string {
	t.Helper()
	var b strings.Builder
	deadline := time.AfterFunc(5*time.Second, func() {})
	defer deadline.Stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			line, err := r.ReadString('\n')
			b.WriteString(line)
			if err != nil || strings.HasPrefix(strings.TrimLeft(line, "\r"), marker) || (strings.Contains(line, marker) && !strings.Contains(line, "echo")) {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %q; got %q", marker, b.String())
	}
	return b.String()
}

func TestPTYExec(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.WindowChange(40, 120); err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("stty size; tty; test -t 0 && echo interactive; exit 4")
	var ee *gossh.ExitError
	if !asExit(err, &ee) || ee.ExitStatus() != 4 {
		t.Fatalf("Output = %v, want exit 4", err)
	}
	got := string(out)
	for _, w := range []string{"40 120\r\n", "/dev/pts/", "interactive"} {
		if !strings.Contains(got, w) {
			t.Errorf("output %q lacks %q", got, w)
		}
	}
}

func TestPTYLargeOutputNotLost(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(out), "line2999\r\n") || strings.Count(string(out), "\n") != 3000 {
		t.Errorf("got %d lines ending %q, want 3000 ending line2999", strings.Count(string(out), "\n"), string(out[max(0, len(out)-20):]))
	}
}

// TestPTYBackgroundWriterDoesNotHoldTheSession: a program left behind that
// ignores the hangup and writes a line every 50 ms held the session open, and
// its exit status back, for as long as it ran: every line pushed the drain's
// deadline on. OpenSSH's session ends at once; here after a few lines. So
// too with one that writes without pause (yes, cat /dev/zero), also when the
// client is slow to take its output and most reads from the terminal are
// large: a pty hands over small ones too, which end the drain, and where the
// server's CPU is slow (a router; qemu-user, where this failed) and every
// read is large, the drain ends after ptyDrainBytes.
func TestPTYBackgroundWriterDoesNotHoldTheSession(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	for name, writer := range map[string]string{
		"a line at a time":                "while :; do echo tick; sleep 0.05; done",
		"without pause":                   "exec yes",
		"without pause, to a slow client": "exec cat /dev/zero",
	} {
		t.Run(name, func(t *testing.T) {
			s := openSession(t, c)
			if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
				t.Fatal(err)
			}
			pidFile := filepath.Join(t.TempDir(), "writer.pid")
			t.Cleanup(func() {
				if b, err := os.ReadFile(pidFile); err == nil {
					if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			})
			if strings.Contains(name, "slow") {
				s.Stdout = writerFunc(func(b []byte) (int, error) { time.Sleep(2 * time.Millisecond); return len(b), nil })
			}
			done := make(chan error, 1)
			go func() {
				done <- s.Run(`trap '' HUP; (` + writer + `) & echo $! > ` + pidFile + `; exit 7`)
			}()
			select {
			case err := <-done:
				var ee *gossh.ExitError
				if !asExit(err, &ee) || ee.ExitStatus() != 7 {
					t.Fatalf("Run = %v, want exit 7", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the session did not end while a program it left behind wrote to the terminal")
			}
		})
	}
}

// TestPTYUnavailableFailsOnlyTheRequest runs the server where no pty can be
// made (/dev/ptmx is /dev/null, as on a device without devpts): as with
// OpenSSH, only pty-req fails, and the shell the client asks for next runs
// without a terminal.
func TestPTYUnavailableFailsOnlyTheRequest(t *testing.T) {
	if !inChild() {
		needRoot(t) // to mount in the child's own mount namespace
		runChild(t, &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}, nil)
		return
	}
	if err := syscall.Mount("/dev/null", "/dev/ptmx", "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("hiding /dev/ptmx: %v", err)
	}
	if _, _, err := openPTY(); err == nil {
		t.Fatal("a pty could still be made")
	}
	e := newEnv(t, nil)
	s := openSession(t, e.login("root"))
	if err := s.RequestPty("vt100", 24, 80, nil); err == nil {
		t.Fatal("pty-req succeeded with no pty to be had")
	}
	out, err := s.CombinedOutput("tty || echo no terminal")
	if err != nil || string(out) != "not a tty\nno terminal\n" {
		t.Errorf("the session after the failed pty-req: %q, %v; want a shell without a terminal", out, err)
	}
	if len(e.logs.logged("pty request refused")) != 1 {
		t.Error("the failed pty-req was not logged")
	}
}

// TestPTYOfUnstartedSessionClosed: the pty that pty-req allocates is closed
// with a session that never starts a program on it (no shell, or an
// in-process subsystem), not kept until the server stops.
func TestPTYOfUnstartedSessionClosed(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	before := openFiles(t)
	for _, subsystem := range []string{"", "sftp"} {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
			t.Fatal(err)
		}
		if subsystem != "" {
			if err := s.RequestSubsystem(subsystem); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
	}
	wantFilesClosed(t, before, "the sessions ended")
}

// wantFilesClosed waits up to 5 s for this process to hold no more
// descriptors than before, and fails the test if it still does after what.
func wantFilesClosed(t *testing.T, before int, after string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for openFiles(t) > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := openFiles(t); n > before {
		t.Errorf("%d descriptors open after %s, %d before", n, after, before)
	}
}

// openFiles is how many descriptors this process has open.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

func TestWindowChangeWithoutPTY(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	ok, err := s.SendRequest("window-change", true, gossh.Marshal(windowChange{Cols: 1, Rows: 1}))
	if err != nil || ok {
		t.Errorf("window-change without pty = %v, %v; want refused", ok, err)
	}
	if out, err := s.Output("echo still"); err != nil || string(out) != "still\n" {
		t.Errorf("session after refused window-change: %q, %v", out, err)
	}
}

func TestEnvAllowList(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.AcceptEnv = []string{"LANG", "LC_*"} })
	c := e.login("root")
	s := openSession(t, c)
	// TERM comes from the pty request only, as in OpenSSH: not from an env
	// request outside AcceptEnv.
	for _, kv := range [][2]string{{"LANG", "C.UTF-8"}, {"LC_TIME", "de_DE"}, {"FOO", "bar"}, {"LD_PRELOAD", "/x.so"}, {"TERM", "evil"}} {
		err := s.Setenv(kv[0], kv[1])
		allowed := kv[0] == "LANG" || kv[0] == "LC_TIME"
		if (err == nil) != allowed {
			t.Errorf("Setenv(%s) = %v, want allowed=%v", kv[0], err, allowed)
		}
	}
	out, err := s.Output(`echo "$LANG|$LC_TIME|$FOO|$LD_PRELOAD|$TERM"`)
	if err != nil || string(out) != "C.UTF-8|de_DE|||\n" {
		t.Errorf("env = %q, %v", out, err)
	}
}

func asExit(err error, target **gossh.ExitError) bool {
	ee, ok := err.(*gossh.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

func TestTerminalModes(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	s := openSession(t, c)
	// Control characters, and bits of the input, local and output flags (a
	// pty keeps its own control flags).
	modes := gossh.TerminalModes{gossh.ECHO: 0, gossh.VERASE: 8, gossh.IUTF8: 1, gossh.VINTR: 255, gossh.TTY_OP_ISPEED: 38400,
		gossh.ONLCR: 0}
	if err := s.RequestPty("xterm", 24, 80, modes); err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("stty -a")
	if err != nil {
		t.Fatalf("stty -a: %v", err)
	}
	got := string(out)
	for _, w := range []string{"-echo ", "erase = ^H", " iutf8", "intr = <undef>", "-onlcr"} {
		if !strings.Contains(got, w) {
			t.Errorf("stty -a lacks %q:\n%s", w, got)
		}
	}
}

// TestTerminalModesEachEntry sends one mode at a time, each the opposite of
// the pty's default, and reads the termios the session's terminal got (stty
// -g: the four flag words and c_cc in hex): that mode's flag or control
// character, and nothing else, must differ from a terminal without modes. The
// expected bits are written here from RFC 4254 section 8 and x/sys/unix, not
// taken from modeTable, so that an opcode mapped to the wrong bit or word
// (ICRNL to INLCR, ISIG to ICANON, OPOST to ONLCR) fails.
func TestTerminalModesEachEntry(t *testing.T) {
	// stty is the host's program: under qemu-user it prints the host's
	// termios layout (TOSTOP, IEXTEN, VEOF, VEOL, VEOL2 sit elsewhere on
	// mips), not the one this binary's constants name. The native run
	// checks the table.
	if arch := os.Getenv("PORTHOLE_QEMU_USER"); arch != "" {
		t.Skipf("stty prints the host's termios, not %s's (qemu-user)", arch)
	}
	const (
		iflag = iota // the words in stty -g's order
		oflag
		cflag
		lflag
	)
	chars := []struct {
		op  uint8
		idx int
	}{
		{gossh.VINTR, unix.VINTR}, {gossh.VQUIT, unix.VQUIT}, {gossh.VERASE, unix.VERASE},
		{gossh.VKILL, unix.VKILL}, {gossh.VEOF, unix.VEOF}, {gossh.VEOL, unix.VEOL},
		{gossh.VEOL2, unix.VEOL2}, {gossh.VSTART, unix.VSTART}, {gossh.VSTOP, unix.VSTOP},
		{gossh.VSUSP, unix.VSUSP}, {gossh.VREPRINT, unix.VREPRINT}, {gossh.VWERASE, unix.VWERASE},
		{gossh.VLNEXT, unix.VLNEXT}, {gossh.VDISCARD, unix.VDISCARD},
	}
	flags := []struct {
		op   uint8
		word int
		bits uint32
	}{
		{gossh.IGNPAR, iflag, unix.IGNPAR}, {gossh.PARMRK, iflag, unix.PARMRK}, {gossh.INPCK, iflag, unix.INPCK},
		{gossh.ISTRIP, iflag, unix.ISTRIP}, {gossh.INLCR, iflag, unix.INLCR}, {gossh.IGNCR, iflag, unix.IGNCR},
		{gossh.ICRNL, iflag, unix.ICRNL}, {gossh.IUCLC, iflag, unix.IUCLC}, {gossh.IXON, iflag, unix.IXON},
		{gossh.IXANY, iflag, unix.IXANY}, {gossh.IXOFF, iflag, unix.IXOFF}, {gossh.IMAXBEL, iflag, unix.IMAXBEL},
		{gossh.IUTF8, iflag, unix.IUTF8},
		{gossh.ISIG, lflag, unix.ISIG}, {gossh.ICANON, lflag, unix.ICANON}, {gossh.XCASE, lflag, unix.XCASE},
		{gossh.ECHO, lflag, unix.ECHO}, {gossh.ECHOE, lflag, unix.ECHOE}, {gossh.ECHOK, lflag, unix.ECHOK},
		{gossh.ECHONL, lflag, unix.ECHONL}, {gossh.NOFLSH, lflag, unix.NOFLSH}, {gossh.TOSTOP, lflag, unix.TOSTOP},
		{gossh.IEXTEN, lflag, unix.IEXTEN}, {gossh.ECHOCTL, lflag, unix.ECHOCTL}, {gossh.ECHOKE, lflag, unix.ECHOKE},
		{gossh.PENDIN, lflag, unix.PENDIN},
		{gossh.OPOST, oflag, unix.OPOST}, {gossh.OLCUC, oflag, unix.OLCUC}, {gossh.ONLCR, oflag, unix.ONLCR},
		{gossh.OCRNL, oflag, unix.OCRNL}, {gossh.ONOCR, oflag, unix.ONOCR}, {gossh.ONLRET, oflag, unix.ONLRET},
		// Not CS7, CS8 or PARENB: Linux's pty sets CS8 and clears PARENB
		// whatever it is told (drivers/tty/pty.c, pty_set_termios).
		{gossh.PARODD, cflag, unix.PARODD},
	}
	e := newEnv(t, nil)
	c := e.login("root")
	base := sttyState(t, c, nil)
	for _, f := range flags {
		t.Run(fmt.Sprintf("flag %d", f.op), func(t *testing.T) {
			want := base
			arg := uint32(1)
			if base.words[f.word]&f.bits == f.bits {
				arg = 0
				want.words[f.word] &^= f.bits
			} else {
				want.words[f.word] |= f.bits
			}
			if got := sttyState(t, c, gossh.TerminalModes{f.op: arg}); got != want {
				t.Errorf("opcode %d = %d: termios %+v, want %+v (without modes: %+v)", f.op, arg, got, want, base)
			}
		})
	}
	for _, ch := range chars {
		t.Run(fmt.Sprintf("char %d", ch.op), func(t *testing.T) {
			// A value no control character has by default, and its own per
			// opcode: one set in another's place shows.
			v := 0x60 + ch.op
			want := base
			want.cc[ch.idx] = v
			if got := sttyState(t, c, gossh.TerminalModes{ch.op: uint32(v)}); got != want {
				t.Errorf("opcode %d = %#x: termios %+v, want %+v (without modes: %+v)", ch.op, v, got, want, base)
			}
		})
	}
}

// termiosState is a terminal's settings as stty -g prints them: c_iflag,
// c_oflag, c_cflag and c_lflag, then the control characters that Linux's
// termios has.
type termiosState struct {
	words [4]uint32
	cc    [len(unix.Termios{}.Cc)]uint8
}

// sttyState runs stty -g on a terminal made with modes in a new session on c.
func sttyState(t *testing.T, c *gossh.Client, modes gossh.TerminalModes) termiosState {
	t.Helper()
	s := openSession(t, c)
	if err := s.RequestPty("xterm", 24, 80, modes); err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("stty -g")
	if err != nil {
		t.Fatalf("stty -g: %v (%q)", err, out)
	}
	fields := strings.Split(strings.TrimSpace(string(out)), ":")
	var st termiosState
	if len(fields) < len(st.words)+len(st.cc) {
		t.Fatalf("stty -g = %q, want %d fields or more", out, len(st.words)+len(st.cc))
	}
	for i, f := range fields[:len(st.words)+len(st.cc)] {
		v, err := strconv.ParseUint(f, 16, 32)
		if err != nil {
			t.Fatalf("stty -g = %q: field %d: %v", out, i, err)
		}
		if i < len(st.words) {
			st.words[i] = uint32(v)
		} else {
			st.cc[i-len(st.words)] = uint8(v)
		}
	}
	return st
}

func TestParseTerminalModes(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want []terminalMode
	}{
		{nil, nil},
		{[]byte{53, 0, 0, 0, 1, 3, 0, 0, 0, 127, 0}, []terminalMode{{Op: 53, Arg: 1}, {Op: 3, Arg: 127}}},
		{[]byte{53, 0, 0, 0, 1, 160, 1, 2}, []terminalMode{{Op: 53, Arg: 1}}}, // 160+: stop
		{[]byte{53, 0, 0}, nil},    // truncated
		{[]byte{53, 0, 0, 0}, nil}, // truncated by one byte: no read past it
		{[]byte{53, 0, 0, 0, 1, 160, 0, 0, 0, 1, 53, 0, 0, 0, 0}, []terminalMode{{Op: 53, Arg: 1}}}, // 160: stop, whatever follows
		{[]byte{0, 53, 0, 0, 0, 1}, nil}, // TTY_OP_END first
	} {
		got := parseTerminalModes(tc.in)
		if len(got) != len(tc.want) {
			t.Errorf("parseTerminalModes(%v) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i].Op != tc.want[i].Op || got[i].Arg != tc.want[i].Arg {
				t.Errorf("parseTerminalModes(%v) = %v, want %v", tc.in, got, tc.want)
			}
		}
	}
}

// TestPTYRequestTrailingBytes: parsePTYRequest refuses a payload with bytes
// after its fields with the error gossh.Unmarshal gives a struct without
// ptyRequest's Rest.
func TestPTYRequestTrailingBytes(t *testing.T) {
	b := append(gossh.Marshal(ptyRequest{Term: "xterm", Cols: 80, Rows: 24, Modes: "\x00"}), 1, 2)
	var plain struct {
		Term                      string
		Cols, Rows, Width, Height uint32
		Modes                     string
	}
	want := gossh.Unmarshal(b, &plain)
	if want == nil {
		t.Fatalf("gossh.Unmarshal(%x) = nil, want an error", b)
	}
	if _, err := parsePTYRequest(b); err == nil || err.Error() != "parsing pty-req: "+want.Error() {
		t.Errorf("parsePTYRequest(%x) = %v, want parsing pty-req: %v", b, err, want)
	}
	if _, err := parsePTYRequest(b[:len(b)-2]); err != nil {
		t.Errorf("parsePTYRequest(%x) = %v, want nil", b[:len(b)-2], err)
	}
}

// TestPTYRequestHoldsNoPayload: the session keeps a client's pty request for
// as long as it runs, and the payload it was read from must not be kept with
// it. Rest, read from the payload, pointed into it: up to the 256 KiB of a
// packet, beside the Modes copied out of it.
func TestPTYRequestHoldsNoPayload(t *testing.T) {
	m := gossh.Marshal(ptyRequest{Term: "xterm", Cols: 80, Rows: 24, Modes: strings.Repeat("\x00", 64<<10)})
	b := make([]byte, len(m))
	copy(b, m)
	freed := make(chan struct{})
	runtime.AddCleanup(&b[0], func(ch chan struct{}) { close(ch) }, freed)
	p, err := parsePTYRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	b = nil
	held := true
	for deadline := time.Now().Add(2 * time.Second); held && time.Now().Before(deadline); {
		runtime.GC()
		select {
		case <-freed:
			held = false
		case <-time.After(10 * time.Millisecond):
		}
	}
	runtime.KeepAlive(&p) // the session's, alive all along
	if held {
		t.Errorf("the %d-byte pty-req payload is still held with the request parsed from it", len(m))
	}
}

// FuzzPTYRequest decodes a client's pty-req payload as the session does:
// whatever parses must encode back to the same bytes (RFC 4254 section 6.2
// has no optional fields), and its terminal modes must decode to entries
// that encode back to a prefix of the modes string.
func FuzzPTYRequest(f *testing.F) {
	f.Add(gossh.Marshal(ptyRequest{Term: "xterm-256color", Cols: 80, Rows: 24, Modes: "\x81\x00\x00\x96\x00\x35\x00\x00\x00\x01\x00"}))
	f.Add(gossh.Marshal(ptyRequest{Term: "vt100", Cols: 1 << 20, Rows: 0, Modes: "\x03\x00\x00\x00\xff\xa0\x00"}))
	f.Add(gossh.Marshal(ptyRequest{}))
	f.Add([]byte{0, 0, 0, 5, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePTYRequest(b)
		if err != nil {
			return
		}
		if got := gossh.Marshal(p); !bytes.Equal(got, b) {
			t.Fatalf("parsePTYRequest(%x) = %+v, which encodes as %x", b, p, got)
		}
		modes := parseTerminalModes([]byte(p.Modes))
		var enc []byte
		for _, m := range modes {
			if m.Op == 0 || m.Op >= 160 {
				t.Fatalf("parseTerminalModes(%x) gave opcode %d", p.Modes, m.Op)
			}
			enc = append(enc, m.Op)
			enc = binary.BigEndian.AppendUint32(enc, m.Arg)
		}
		if !strings.HasPrefix(p.Modes, string(enc)) {
			t.Fatalf("parseTerminalModes(%x) = %v, not a prefix of its input", p.Modes, modes)
		}
		if rest := p.Modes[len(enc):]; rest != "" && rest[0] != 0 && rest[0] < 160 && len(rest) >= 5 {
			t.Fatalf("parseTerminalModes(%x) stopped early at %x", p.Modes, rest)
		}
		var tio unix.Termios
		for _, m := range modes {
			setTerminalMode(&tio, m)
		}
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestBlockingUnlessPolled: a PTY master Go's poller does not take (epoll_ctl
// fails with ENOMEM, or ENOSPC past fs.epoll.max_user_watches: strace -e
// inject=epoll_ctl:error=ENOSPC) was left non-blocking, and the session's
// output ended at its first EAGAIN: an empty result with exit 0. A regular
// file stands in, which epoll refuses too.
func TestBlockingUnlessPolled(t *testing.T) {
	fd, err := syscall.Open(filepath.Join(t.TempDir(), "f"), syscall.O_RDWR|syscall.O_CREAT|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f := blockingUnlessPolled(os.NewFile(uintptr(fd), "f"))
	defer f.Close()
	flags, err := unix.FcntlInt(uintptr(fd), syscall.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&syscall.O_NONBLOCK != 0 {
		t.Fatal("a file the poller does not take is left non-blocking")
	}
	// A polled one (a pipe, as a PTY master normally is) stays non-blocking,
	// for its deadlines.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := blockingUnlessPolled(r).SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		t.Fatalf("a polled file lost its deadlines: %v", err)
	}
}

// TestSecondPTYRequestRefused: a session has one terminal. A second pty-req
// is refused, as OpenSSH's session_pty_req refuses it; granted, it would
// replace the terminal already allocated, whose descriptors nothing closed.
func TestSecondPTYRequestRefused(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	before := openFiles(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("vt100", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 50, 132, nil); err == nil {
		t.Error("a second pty-req was granted")
	}
	s.Close()
	wantFilesClosed(t, before, "the session ended")
}
