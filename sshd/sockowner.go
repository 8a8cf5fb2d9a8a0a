package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"unsafe"
)

// errIDsStuck is the error of a dial after which the thread that made the
// socket kept the user's filesystem ids (becomeLocked); it ends with its
// goroutine.
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
// which the owner matches check). Those ids are changed on one locked thread
// only (becomeLocked, as in killpgAs), from just before socket(2) to just
// after: the dialer's Control, which net calls on the same goroutine once the
// socket is made, puts the server's back before the connect, so the wait for
// the peer holds no thread. The dial stays on this goroutine up to there: addr
// needs no name lookup, and FallbackDelay < 0 starts no parallel dial of
// another family. The user's supplementary groups are not taken: a rule on
// them (iptables' --suppl-groups) does not see the user's forwards.
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
	back, err := becomeLocked(uid, gid, nil)
	if err != nil {
		return nil, fmt.Errorf("making the socket as uid %d gid %d: %w", uid, gid, err)
	}
	switched := true
	d := net.Dialer{FallbackDelay: -1}
	// With MPTCP (GODEBUG=multipathtcp) a failed dial is retried with a
	// TCP socket, a second one.
	d.SetMultipathTCP(false)
	d.ControlContext = func(context.Context, string, string, syscall.RawConn) error {
		if !switched {
			return errors.New("a second socket of the dial would be the server's, not the user's")
		}
		switched = false
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

// becomeLocked locks the calling goroutine to its thread and gives the
// thread the filesystem ids uid and gid and, unless groups is nil, the
// supplementary groups groups: the kernel checks the thread's access to files
// with them and gives the sockets it makes their ids. Credentials are per
// thread to the kernel, so only this thread's are changed, by the raw system
// calls (syscall.Setgroups would change every thread's), and while it is
// locked the runtime makes new threads from its template thread, not by
// cloning this one (runtime.newm), so none is born with the user's ids. The
// thread keeps its capabilities but those over files (setfsuid drops them).
// (As in killpgAs, the change clears the process's dumpable flag: for a root
// process, that only stops core dumps.)
//
// back puts the server's ids back and lets the thread go; false: they did not
// come back, and the thread stays locked for the runtime to end it with its
// goroutine (so the caller's goroutine should be one of its own). An error
// (a server without CAP_SETUID or CAP_SETGID, which setfsuid does not report)
// comes with the server's ids back, or is errIDsStuck.
func becomeLocked(uid, gid uint32, groups []uint32) (back func() bool, err error) {
	runtime.LockOSThread()
	var oldGroups []uint32
	if groups != nil {
		if oldGroups, err = threadGroups(); err == nil {
			err = setThreadGroups(groups)
		}
		if err != nil {
			runtime.UnlockOSThread() // the groups are the server's still
			return nil, wrapErr("taking the user's groups", err)
		}
	}
	oldGID := setfsid(sysSetfsgid, gid)
	oldUID := setfsid(sysSetfsuid, uid)
	back = func() bool {
		setfsid(sysSetfsuid, oldUID)
		setfsid(sysSetfsgid, oldGID)
		// setgroups, unlike setfsuid, says when it did not set them.
		if fsid(sysSetfsuid) != oldUID || fsid(sysSetfsgid) != oldGID || groups != nil && setThreadGroups(oldGroups) != nil {
			return false
		}
		runtime.UnlockOSThread()
		return true
	}
	if u, g := fsid(sysSetfsuid), fsid(sysSetfsgid); u != uid || g != gid {
		if !back() {
			return nil, errIDsStuck
		}
		return nil, fmt.Errorf("the thread's filesystem ids stayed %d and %d", u, g)
	}
	return back, nil
}

// threadGroups is the calling thread's supplementary groups (getgroups(2)).
func threadGroups() ([]uint32, error) {
	n, _, errno := syscall.RawSyscall(sysGetgroups, 0, 0, 0)
	if errno != 0 {
		return nil, errno
	}
	groups := make([]uint32, n)
	if n == 0 {
		return groups, nil
	}
	m, _, errno := syscall.RawSyscall(sysGetgroups, n, uintptr(unsafe.Pointer(&groups[0])), 0)
	if errno != 0 {
		return nil, errno
	}
	return groups[:m], nil
}

// setThreadGroups sets the calling thread's supplementary groups
// (setgroups(2)), and no other thread's.
func setThreadGroups(groups []uint32) error {
	var p unsafe.Pointer
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	if _, _, errno := syscall.RawSyscall(sysSetgroups, uintptr(len(groups)), uintptr(p), 0); errno != 0 {
		return errno
	}
	return nil
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
