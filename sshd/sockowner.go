package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
)

// errIDsStuck is the error of a dial after which the thread that made the
// socket kept the user's filesystem ids; it ends with its goroutine.
var errIDsStuck error = &errorString{"the server's filesystem ids did not come back"}

// dialAs dials addr, an IP address and port (never a name), over network (a
// TCP one) with a socket that belongs to uid and gid: a local forward (ssh -L)
// of a user who is not the server's. OpenSSH's sshd connects from the user's
// own process, so to the kernel the connection is the user's, and rules on a
// socket's owner (iptables -m owner --uid-owner, nftables meta skuid, identd)
// apply to the user's forwards as to the user's programs. Dialled by the
// server, which runs as root, the connection was root's and passed them all.
//
// The kernel gives a socket the filesystem ids of the thread that makes it
// (its sk_uid, which /proc/net/tcp and ss show, and its file's credentials,
// which the owner matches check). Credentials are per thread to the kernel,
// so those ids are changed on one locked thread only, by the raw system calls
// (as in killpgAs), from just before socket(2) to just after: the dialer's
// Control, which net calls on the same goroutine once the socket is made,
// puts the server's back before the connect, so the wait for the peer holds
// no thread. The dial stays on this goroutine up to there: addr needs no name
// lookup, and FallbackDelay < 0 starts no parallel dial of another family.
// While the thread is locked, the runtime makes a new thread from its
// template thread, not by cloning this one (runtime.newm), so none is born
// with the user's ids. The user's supplementary groups are not taken: a rule
// on them (iptables' --suppl-groups) does not see the user's forwards.
//
// A second socket of one dial (net makes one when a connection meets itself,
// or the kernel finds no free local port) would be made after the server's
// ids are back: it is refused, and the dial fails. Should the server's ids
// not come back, the thread stays locked and the runtime ends it with its
// goroutine, which is dialAs's own for that reason.
func dialAs(ctx context.Context, network, addr string, uid, gid uint32) (net.Conn, error) {
	var c net.Conn
	var err error
	done := make(chan struct{})
	go func() {
		c, err = dialLocked(ctx, network, addr, uid, gid)
		close(done)
	}()
	<-done
	return c, err
}

// dialLocked is dialAs on the calling goroutine, which it leaves locked to
// its thread if that thread kept the user's ids.
func dialLocked(ctx context.Context, network, addr string, uid, gid uint32) (net.Conn, error) {
	runtime.LockOSThread()
	oldGID := setfsid(sysSetfsgid, gid)
	oldUID := setfsid(sysSetfsuid, uid)
	switched := true
	// back puts the server's ids back and lets the thread go; false: they
	// did not come back, and the thread stays locked.
	back := func() bool {
		switched = false
		setfsid(sysSetfsuid, oldUID)
		setfsid(sysSetfsgid, oldGID)
		if fsid(sysSetfsuid) != oldUID || fsid(sysSetfsgid) != oldGID {
			return false
		}
		runtime.UnlockOSThread()
		return true
	}
	// setfsuid says nothing when it cannot change the id (a server without
	// CAP_SETUID): the socket would be the server's.
	if u, g := fsid(sysSetfsuid), fsid(sysSetfsgid); u != uid || g != gid {
		if !back() {
			return nil, errIDsStuck
		}
		return nil, fmt.Errorf("making the socket as uid %d gid %d: the thread's filesystem ids stayed %d and %d", uid, gid, u, g)
	}
	d := net.Dialer{FallbackDelay: -1}
	// With MPTCP (GODEBUG=multipathtcp) a failed dial is retried with a
	// TCP socket, a second one.
	d.SetMultipathTCP(false)
	d.ControlContext = func(context.Context, string, string, syscall.RawConn) error {
		if !switched {
			return errors.New("a second socket of the dial would be the server's, not the user's")
		}
		if !back() {
			return errIDsStuck
		}
		return nil
	}
	c, err := d.DialContext(ctx, network, addr)
	if switched {
		// No socket was made: err says why.
		back()
	}
	return c, err
}

// setfsid calls setfsuid or setfsgid (nr) with id on the calling thread and
// returns the thread's previous id. Neither call reports an error: an id the
// thread may not take (without CAP_SETUID or CAP_SETGID) is not taken, and
// -1 changes nothing, which fsid uses to read the id.
func setfsid(nr uintptr, id uint32) uint32 {
	old, _, _ := syscall.RawSyscall(nr, uintptr(id), 0, 0)
	return uint32(old)
}

// fsid is the calling thread's filesystem user or group id (nr as setfsid).
func fsid(nr uintptr) uint32 {
	return setfsid(nr, ^uint32(0))
}
