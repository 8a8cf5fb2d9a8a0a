package sshd

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"github.com/creack/pty"
	gossh "golang.org/x/crypto/ssh"
)

// ptyRequest is the payload of "pty-req" (RFC 4254 section 6.2).
type ptyRequest struct {
	Term   string
	Cols   uint32
	Rows   uint32
	Width  uint32
	Height uint32
	Modes  string // encoded terminal modes, see applyTerminalModes
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
	if err := gossh.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("parsing pty-req: %w", err)
	}
	return r, nil
}

func parseWindowChange(b []byte) (windowChange, error) {
	var w windowChange
	if err := gossh.Unmarshal(b, &w); err != nil {
		return w, fmt.Errorf("parsing window-change: %w", err)
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
		return nil, nil, fmt.Errorf("allocating pty: %w", err)
	}
	defer p.Close()
	fd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, p.Fd(), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		t.Close()
		return nil, nil, fmt.Errorf("duplicating pty master: %w", errno)
	}
	if err := syscall.SetNonblock(int(fd), true); err != nil {
		syscall.Close(int(fd))
		t.Close()
		return nil, nil, fmt.Errorf("setting pty master non-blocking: %w", err)
	}
	return os.NewFile(fd, "/dev/ptmx"), t, nil
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
		return fmt.Errorf("setting the mode of %s: %w", tty.Name(), err)
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
