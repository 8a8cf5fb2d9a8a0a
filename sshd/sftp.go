package sshd

import (
	"os"
	"time"

	"github.com/pkg/sftp"
)

// sftpChannel adapts the session channel for pkg/sftp, counting bytes. front
// is a named field and the methods are on the pointer: with embedded
// interfaces and a value receiver, the binary carries a wrapper for each
// method twice over (docs/size.md).
type sftpChannel struct {
	front *sftpFront
	close func() error
}

func (c *sftpChannel) Read(p []byte) (int, error)  { return c.front.Read(p) }
func (c *sftpChannel) Write(p []byte) (int, error) { return c.front.Write(p) }
func (c *sftpChannel) Close() error                { return c.close() }

// runSFTP serves the SFTP subsystem in-process, as the server's own user,
// starting in a's home directory. It returns once the client has sent EOF;
// the caller then sends the exit status before closing the channel. The
// sftp.Server is deliberately not closed first: that would close the
// channel and clients would report "exit status -1". An sftpFront in front
// of pkg/sftp serves directory listings and SYMLINK requests and keeps
// writes in order.
//
// A request can block for good in a system call: an OPEN of a FIFO that no
// program opens from the other side, a READ of a terminal. OpenSSH's
// sftp-server blocks too, and is left behind as a process; here pkg/sftp
// would hold the session (a MaxSessions slot) and its connection until the
// server stops. So once the client has closed the channel, or the connection
// is gone, the session ends within sftpAbandon, and what still runs ends
// when its call returns.
func (sess *session) runSFTP(a *account) int {
	dir := workDir(a)
	front := newSFTPFront(sess.reader(), sess.writer(sess.ch), dir, func(user string) (string, bool) {
		return sess.tildeHome(a, user)
	}, sess.srv)
	rw := &sftpChannel{front: front, close: func() error {
		front.close()
		return sess.ch.Close()
	}}
	srv, err := sftp.NewServer(rw, sftp.WithServerWorkingDirectory(dir), sftp.WithMaxTxPacket(maxSFTPRead))
	if err != nil {
		sess.srv.log().Warn("sftp", "remote", sess.st.remote, "error", err)
		return 1
	}
	served := make(chan error, 1)
	go func() {
		err := srv.Serve()
		front.closeDirs() // pkg/sftp's reading goroutine has ended
		served <- err
	}()
	select {
	case err = <-served:
	case <-sess.served:
		select {
		case err = <-served:
		case <-time.After(sftpAbandon):
			front.shut() // the channel is closed next, without a reply going out meanwhile
			sess.srv.log().Warn("sftp: a request still blocks after the client has gone (a FIFO or a terminal?); the session ends without it",
				"remote", sess.st.remote, "waited", sftpAbandon)
			return 1
		}
	}
	if err != nil {
		sess.srv.log().Info("sftp ended", "remote", sess.st.remote, "error", err)
		return 1
	}
	return 0
}

// sftpAbandon is how long a session whose client has gone waits for
// pkg/sftp's requests to end (a variable for tests).
var sftpAbandon = 5 * time.Second

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
