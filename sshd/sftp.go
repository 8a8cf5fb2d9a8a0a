package sshd

import (
	"errors"
	"os"
	"strings"
	"time"

	"github.com/pkg/sftp"
)

// sftpChannel adapts the session channel for pkg/sftp, counting bytes. front
// is a named field and the methods are on the pointer: with embedded
// interfaces and a value receiver, the binary carries a wrapper for each
// method twice over (docs/size.md).
//
// Close leaves the channel open: pkg/sftp closes its connection when a request
// cannot be parsed (a type it does not know, a body cut short) and then returns
// from Serve, and the session, not pkg/sftp, sends the exit status (1) and then
// closes the channel. Closed there, the channel went without an exit status,
// which OpenSSH's sftp and scp report as a failure of their own kind.
type sftpChannel struct{ front *sftpFront }

func (c *sftpChannel) Read(p []byte) (int, error)  { return c.front.Read(p) }
func (c *sftpChannel) Write(p []byte) (int, error) { return c.front.Write(p) }
func (c *sftpChannel) Close() error                { c.front.close(); return nil }

// runSFTP serves the SFTP subsystem in-process, as the server's own user,
// starting in a's home directory. It returns once the client has sent EOF;
// the caller then sends the exit status before closing the channel (which
// sftpChannel.Close leaves open: clients report "exit status -1" for a channel
// closed without one). An sftpFront in front of pkg/sftp serves some requests
// itself (directory listings, SYMLINK, REALPATH, REMOVE, RENAME and more: see
// sftpFront.serves) and keeps requests in order.
//
// A request that blocks for good (an OPEN of a FIFO no program opens from
// the other side) is abandoned once the client has gone: see abandonable.
func (sess *session) runSFTP(a *account, opt sftpOptions) int {
	dir := workDir(a)
	front := newSFTPFront(sess.reader(), sess.writer(sess.ch), dir, func(user string) (string, bool) {
		return sess.tildeHome(a, user)
	}, sess.srv)
	front.readOnly, front.remote = opt.readOnly, sess.st.remote
	rw := &sftpChannel{front: front}
	sopts := []sftp.ServerOption{sftp.WithServerWorkingDirectory(dir), sftp.WithMaxTxPacket(maxSFTPRead)}
	if opt.readOnly {
		sopts = append(sopts, sftp.ReadOnly()) // the front refuses writes first
	}
	srv, err := sftp.NewServer(rw, sopts...)
	if err != nil {
		sess.srv.log().Warn("sftp", "remote", sess.st.remote, "error", err)
		return 1
	}
	return sess.abandonable("sftp: a request", front.shut, func() int {
		err := srv.Serve()
		// Serve returns before pkg/sftp's reply writer has written the
		// last replies: shut waits for the one being written, and keeps
		// any later one from racing the session's EOF and close (a
		// client gone with a request in flight, which then returned).
		front.shut()
		front.closeDirs() // pkg/sftp's reading goroutine has ended
		if err != nil {
			sess.srv.log().Info("sftp ended", "remote", sess.st.remote, "error", err)
			return 1
		}
		if n := front.openForWriting(); n > 0 {
			// The client went with files open for writing: a transfer
			// cut (the link dropped, the tunnel ended). Serve ends on
			// EOF alike, and the session's end read as a finished
			// upload; OpenSSH's sftp-server logs a forced close of each.
			sess.srv.log().Info("sftp ended with files open for writing: a transfer cut short", "remote", sess.st.remote, "files", n)
			return 1
		}
		return 0
	})
}

// abandonable runs serve, an in-process server (SFTP, scp) that reads and
// writes files for the client, and returns its exit status. A call can block
// for good: an open or a write of a FIFO no program reads, a read of a
// terminal. OpenSSH's sftp-server and scp block too, and are left behind as
// processes; here the session would hold a MaxSessions slot and its
// connection until the server stops. So once the client has closed the
// channel, or the connection is gone, the session ends within abandonDelay
// (status 1, after shut, if not nil, stops replies), and what still runs
// ends when its call returns. what names the call in the log line.
func (sess *session) abandonable(what string, shut func(), serve func() int) int {
	done := make(chan int, 1)
	go func() { done <- serve() }()
	select {
	case status := <-done:
		return status
	case <-sess.served:
	}
	select {
	case status := <-done:
		return status
	case <-time.After(abandonDelay):
	}
	if shut != nil {
		shut() // the channel is closed next, without a reply going out meanwhile
	}
	sess.srv.log().Warn(what+" still blocks after the client has gone (a FIFO or a terminal?); the session ends without it",
		"remote", sess.st.remote, "waited", abandonDelay)
	return 1
}

// abandonDelay is how long a session whose client has gone waits for an
// in-process server's calls to end (a variable for tests).
var abandonDelay = 5 * time.Second

// sftpServerPaths are where distributions put OpenSSH's sftp-server
// (Debian, Fedora and Arch, OpenWrt's openssh-sftp-server).
var sftpServerPaths = []string{
	"/usr/lib/openssh/sftp-server",
	"/usr/libexec/openssh/sftp-server",
	"/usr/lib/ssh/sftp-server",
	"/usr/libexec/sftp-server",
	"/usr/lib/sftp-server",
}

// externalSFTPServer returns the first executable sftp-server, or "".
func (s *Server) externalSFTPServer() string {
	paths := sftpServerPaths
	if s.sftpServerPaths != nil {
		paths = s.sftpServerPaths
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// sftpOptions are the options of a forced command "internal-sftp ...".
type sftpOptions struct {
	readOnly bool // -R: no request that changes a file or directory
}

// internalSFTP reports whether the forced command cmd is OpenSSH's
// internal-sftp (IS_INTERNAL_SFTP: the word, alone or followed by a space or
// tab), and returns its arguments.
func internalSFTP(cmd string) ([]string, bool) {
	rest, ok := strings.CutPrefix(cmd, "internal-sftp")
	if !ok || rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return nil, false
	}
	return strings.Fields(rest), true
}

// parseInternalSFTP takes sftp-server's options as OpenSSH's internal-sftp
// does (getopt): -R serves read-only; -e, -f and -l, which choose where and
// what sftp-server logs, are accepted and change nothing (the server's audit
// records the session). Any other option is refused, as is anything after the
// options: serving without a restriction it names (-P, -p, -d, -u) would serve
// more than the key's owner allowed.
func parseInternalSFTP(args []string) (sftpOptions, error) {
	var opt sftpOptions
	for i := 0; i < len(args); i++ {
		a := args[i]
		bad := len(a) < 2 || a[0] != '-'
		for j := 1; j < len(a) && !bad; j++ {
			switch a[j] {
			case 'R':
				opt.readOnly = true
			case 'e':
			case 'f', 'l': // the value is the rest of the word, or the next one
				if j+1 == len(a) {
					i++
					bad = i == len(args)
				}
				j = len(a)
			default:
				bad = true
			}
		}
		if bad {
			return opt, errors.New("internal-sftp " + clipClient(strings.Join(args, " ")) + ": not supported here (only -R; -e, -f and -l are accepted and ignored)")
		}
	}
	return opt, nil
}
