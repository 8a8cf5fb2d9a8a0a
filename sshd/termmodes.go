package sshd

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"
)

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
