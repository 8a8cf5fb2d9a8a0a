package sshd

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/creack/pty"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// ptyRequest is the payload of "pty-req" (RFC 4254 section 6.2).
type ptyRequest struct {
	Term   string
	Cols   uint32
	Rows   uint32
	Width  uint32
	Height uint32
	Modes  string // encoded terminal modes, see applyTerminalModes
	Rest   []byte `ssh:"rest"` // refused if not empty, as directTCPIP.Rest
}

// windowChange is the payload of "window-change" (RFC 4254 section 6.7).
type windowChange struct {
	Cols   uint32
	Rows   uint32
	Width  uint32
	Height uint32
}

func parsePTYRequest(b []byte) (ptyRequest, error) {
	var r ptyRequest
	err := gossh.Unmarshal(b, &r)
	if err == nil && len(r.Rest) != 0 {
		err = errTrailingBytes
	}
	r.Rest = nil // it points into b, which the session would keep with r
	if err != nil {
		return r, wrapErr("parsing pty-req", err)
	}
	return r, nil
}

// errTrailingBytes is gossh.Unmarshal's error for bytes after the last field
// of a payload without a message type, for the structs that take those bytes
// into a Rest field to refuse them (see directTCPIP).
var errTrailingBytes error = &errorString{"ssh: parse error in message type 0"}

func parseWindowChange(b []byte) (windowChange, error) {
	var w windowChange
	if err := gossh.Unmarshal(b, &w); err != nil {
		return w, wrapErr("parsing window-change", err)
	}
	return w, nil
}

// clamp16 fits a window dimension into the kernel's 16-bit field.
func clamp16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}

// openPTY allocates a pseudo-terminal. The master is made non-blocking and
// registered with Go's poller, so that closing it interrupts a pending Read
// and read deadlines work (creack/pty's master is left in blocking mode
// once its Fd method has been called).
func openPTY() (master, tty *os.File, err error) {
	p, t, err := pty.Open()
	if err != nil {
		return nil, nil, wrapErr("allocating pty", err)
	}
	defer p.Close()
	fd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, p.Fd(), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		t.Close()
		return nil, nil, wrapErr("duplicating pty master", errno)
	}
	if err := syscall.SetNonblock(int(fd), true); err != nil {
		syscall.Close(int(fd))
		t.Close()
		return nil, nil, wrapErr("setting pty master non-blocking", err)
	}
	return blockingUnlessPolled(os.NewFile(fd, "/dev/ptmx")), t, nil
}

// blockingUnlessPolled makes f, opened non-blocking, blocking again if Go's
// poller did not take it (epoll_ctl failed: ENOMEM, or ENOSPC past
// fs.epoll.max_user_watches): os.NewFile leaves such a file non-blocking, and
// its first Read to find nothing there fails with EAGAIN, which ended the
// session's output (and input) at once, the client told nothing, exit 0.
// Blocking, it reads as creack/pty's master does.
func blockingUnlessPolled(f *os.File) *os.File {
	if f.SetReadDeadline(time.Time{}) != nil {
		syscall.SetNonblock(int(f.Fd()), false)
	}
	return f
}

// ownTTY gives the terminal of a session to its login user, as OpenSSH's
// pty_setowner: group "tty" (looked up by name in the group file) with
// mode 0620, so that write(1) and wall(1), which are setgid tty, can reach
// the user; without such a group, the user's primary group and mode 0600.
// The mode is set before the owner, so that no moment gives the user's
// primary group write access: everyone in it could type into the session.
func (s *Server) ownTTY(tty *os.File, a *account) error {
	gid, mode := a.GID, os.FileMode(0o600)
	if g, ok := s.groupID("tty"); ok {
		gid, mode = g, 0o620
	}
	if err := tty.Chmod(mode); err != nil {
		return wrapErr("setting the mode of "+tty.Name(), err)
	}
	if err := tty.Chown(int(a.UID), int(gid)); err != nil {
		return fmt.Errorf("giving %s to uid %d gid %d: %w", tty.Name(), a.UID, gid, err)
	}
	return nil
}

// setWindowSize sets the terminal size of the pty behind f without
// switching f to blocking mode.
func setWindowSize(f *os.File, w windowChange) error {
	ws := pty.Winsize{Rows: clamp16(w.Rows), Cols: clamp16(w.Cols), X: clamp16(w.Width), Y: clamp16(w.Height)}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws)))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// Encoded terminal modes of a pty-req (RFC 4254 section 8, IUTF8 from RFC
// 8160): opcode bytes, each of 1..159 followed by a uint32, ended by 0.
// modeTable says what each opcode the server applies sets: a control
// character (its index in c_cc) or a bit of one of the flag words. A table
// rather than maps: static data, no code or heap at start.
var modeTable = [...]struct {
	op, word byte // word: one of the mode* below
	val      uint32
}{
	{1, modeChar, unix.VINTR}, {2, modeChar, unix.VQUIT}, {3, modeChar, unix.VERASE},
	{4, modeChar, unix.VKILL}, {5, modeChar, unix.VEOF}, {6, modeChar, unix.VEOL},
	{7, modeChar, unix.VEOL2}, {8, modeChar, unix.VSTART}, {9, modeChar, unix.VSTOP},
	{10, modeChar, unix.VSUSP}, {12, modeChar, unix.VREPRINT}, {13, modeChar, unix.VWERASE},
	{14, modeChar, unix.VLNEXT}, {18, modeChar, unix.VDISCARD},
	{30, modeIflag, unix.IGNPAR}, {31, modeIflag, unix.PARMRK}, {32, modeIflag, unix.INPCK},
	{33, modeIflag, unix.ISTRIP}, {34, modeIflag, unix.INLCR}, {35, modeIflag, unix.IGNCR},
	{36, modeIflag, unix.ICRNL}, {37, modeIflag, unix.IUCLC}, {38, modeIflag, unix.IXON},
	{39, modeIflag, unix.IXANY}, {40, modeIflag, unix.IXOFF}, {41, modeIflag, unix.IMAXBEL},
	{42, modeIflag, unix.IUTF8},
	{50, modeLflag, unix.ISIG}, {51, modeLflag, unix.ICANON}, {52, modeLflag, unix.XCASE},
	{53, modeLflag, unix.ECHO}, {54, modeLflag, unix.ECHOE}, {55, modeLflag, unix.ECHOK},
	{56, modeLflag, unix.ECHONL}, {57, modeLflag, unix.NOFLSH}, {58, modeLflag, unix.TOSTOP},
	{59, modeLflag, unix.IEXTEN}, {60, modeLflag, unix.ECHOCTL}, {61, modeLflag, unix.ECHOKE},
	{62, modeLflag, unix.PENDIN},
	{70, modeOflag, unix.OPOST}, {71, modeOflag, unix.OLCUC}, {72, modeOflag, unix.ONLCR},
	{73, modeOflag, unix.OCRNL}, {74, modeOflag, unix.ONOCR}, {75, modeOflag, unix.ONLRET},
	{90, modeCflag, unix.CS7}, {91, modeCflag, unix.CS8}, {92, modeCflag, unix.PARENB},
	{93, modeCflag, unix.PARODD},
}

// What an entry of modeTable sets.
const (
	modeChar  = iota // the control character c_cc[val]
	modeIflag        // bit val of c_iflag
	modeLflag        // of c_lflag
	modeOflag        // of c_oflag
	modeCflag        // of c_cflag
)

// terminalMode is one decoded opcode and argument.
type terminalMode struct {
	_   [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Op  byte
	Arg uint32
}

// parseTerminalModes decodes the modes string; decoding stops at
// TTY_OP_END, at an opcode of 160 or more (their arguments are undefined)
// or at a truncated entry.
func parseTerminalModes(b []byte) []terminalMode {
	var out []terminalMode
	for len(b) > 0 {
		op := b[0]
		if op == 0 || op >= 160 || len(b) < 5 {
			break
		}
		out = append(out, terminalMode{Op: op, Arg: binary.BigEndian.Uint32(b[1:5])})
		b = b[5:]
	}
	return out
}

// applyTerminalModes sets the client's terminal modes on tty, as sshd
// does: unknown opcodes and the line speeds (meaningless on a pty) are
// ignored.
func applyTerminalModes(tty *os.File, modes []terminalMode) error {
	if len(modes) == 0 {
		return nil
	}
	rc, err := tty.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	err = rc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			opErr = err
			return
		}
		for _, m := range modes {
			setTerminalMode(t, m)
		}
		opErr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
	})
	if err != nil {
		return err
	}
	return opErr
}

// setTerminalMode applies one mode to t; an opcode not in modeTable is
// ignored.
func setTerminalMode(t *unix.Termios, m terminalMode) {
	for _, e := range modeTable {
		if e.op != m.Op {
			continue
		}
		var flags *uint32
		switch e.word {
		case modeChar:
			c := uint8(m.Arg)
			if m.Arg == 255 {
				c = 0 // _POSIX_VDISABLE
			}
			t.Cc[e.val] = c
			return
		case modeIflag:
			flags = &t.Iflag
		case modeLflag:
			flags = &t.Lflag
		case modeOflag:
			flags = &t.Oflag
		case modeCflag:
			flags = &t.Cflag
		default:
			return
		}
		if m.Arg != 0 {
			*flags |= e.val
		} else {
			*flags &^= e.val
		}
		return
	}
}
