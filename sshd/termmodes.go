package sshd

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"
)

// Encoded terminal modes of a pty-req (RFC 4254 section 8, IUTF8 from RFC
// 8160): opcode bytes, each of 1..159 followed by a uint32, ended by 0.
var (
	modeChars = map[byte]int{
		1: unix.VINTR, 2: unix.VQUIT, 3: unix.VERASE, 4: unix.VKILL, 5: unix.VEOF,
		6: unix.VEOL, 7: unix.VEOL2, 8: unix.VSTART, 9: unix.VSTOP, 10: unix.VSUSP,
		12: unix.VREPRINT, 13: unix.VWERASE, 14: unix.VLNEXT, 18: unix.VDISCARD,
	}
	modeIflags = map[byte]uint32{
		30: unix.IGNPAR, 31: unix.PARMRK, 32: unix.INPCK, 33: unix.ISTRIP, 34: unix.INLCR,
		35: unix.IGNCR, 36: unix.ICRNL, 37: unix.IUCLC, 38: unix.IXON, 39: unix.IXANY,
		40: unix.IXOFF, 41: unix.IMAXBEL, 42: unix.IUTF8,
	}
	modeLflags = map[byte]uint32{
		50: unix.ISIG, 51: unix.ICANON, 52: unix.XCASE, 53: unix.ECHO, 54: unix.ECHOE,
		55: unix.ECHOK, 56: unix.ECHONL, 57: unix.NOFLSH, 58: unix.TOSTOP, 59: unix.IEXTEN,
		60: unix.ECHOCTL, 61: unix.ECHOKE, 62: unix.PENDIN,
	}
	modeOflags = map[byte]uint32{
		70: unix.OPOST, 71: unix.OLCUC, 72: unix.ONLCR, 73: unix.OCRNL, 74: unix.ONOCR, 75: unix.ONLRET,
	}
	modeCflags = map[byte]uint32{
		90: unix.CS7, 91: unix.CS8, 92: unix.PARENB, 93: unix.PARODD,
	}
)

// terminalMode is one decoded opcode and argument.
type terminalMode struct {
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
		set := func(flags *uint32, bit uint32, on bool) {
			if on {
				*flags |= bit
			} else {
				*flags &^= bit
			}
		}
		for _, m := range modes {
			on := m.Arg != 0
			if i, ok := modeChars[m.Op]; ok {
				c := uint8(m.Arg)
				if m.Arg == 255 {
					c = 0 // _POSIX_VDISABLE
				}
				t.Cc[i] = c
			} else if bit, ok := modeIflags[m.Op]; ok {
				set(&t.Iflag, bit, on)
			} else if bit, ok := modeLflags[m.Op]; ok {
				set(&t.Lflag, bit, on)
			} else if bit, ok := modeOflags[m.Op]; ok {
				set(&t.Oflag, bit, on)
			} else if bit, ok := modeCflags[m.Op]; ok {
				set(&t.Cflag, bit, on)
			}
		}
		opErr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
	})
	if err != nil {
		return err
	}
	return opErr
}
