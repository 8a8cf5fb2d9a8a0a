package main

import (
	"io"
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// asInit runs the agent when it is process 1: a container's entrypoint
// (docker run without --init) or an initramfs's init. Every orphan of the
// system is then its child: a job a session left in the background, a daemon
// started from a shell. Nothing waited for them, so each stayed a zombie,
// holding its pid, until the container's pids limit refused every fork and
// with it every new session. A reaper in the agent's own process would take
// the exit statuses that its sessions wait for (os.Process.Wait then fails
// with ECHILD, and the client gets 255 for the program's own status).
//
// So, as tini does, process 1 starts this program again, with the same
// arguments, as its only child, which runs the agent; passes SIGTERM, SIGINT
// and SIGHUP (stop, reload), caught on stop and hup from the start, on to it;
// waits for every child it is given; and exits as the agent did. It says
// READY=1 to NOTIFY_SOCKET itself, as systemd-nspawn hears only its container's
// process 1, once the child has said READY=1 to a socket of process 1's
// (runAgent says it once it catches those signals). Until then it holds the
// signals: sent on at once, a reload that systemd had held back for READY=1
// reached a child still starting, for which Go's default is to exit. It
// returns only if that child cannot be started: the agent then runs in this
// process, as before, and stderr says what is lost.
func asInit(stop, hup <-chan os.Signal, stderr io.Writer) {
	chld := make(chan os.Signal, 1) // one is enough: each waits for all there are
	signal.Notify(chld, syscall.SIGCHLD)
	fd, name := readySocket()
	env := os.Environ()
	for i, e := range env {
		if len(e) > 14 && e[:14] == "NOTIFY_SOCKET=" {
			env[i] = "" // for the child, name's below (os.Unsetenv linked 1.1 KB)
		}
	}
	env = append(env, "NOTIFY_SOCKET="+name)
	agent, _, err := syscall.StartProcess("/proc/self/exe", os.Args, &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}})
	if err != nil {
		signal.Stop(chld)
		syscall.Close(fd)
		io.WriteString(stderr, "porthole: process 1 cannot start the agent as its child: "+err.Error()+": orphaned processes will not be waited for\n")
		return
	}
	ready := make(chan struct{})
	go awaitReady(fd, agent, ready)
	// Until the child is ready, its signals wait in their channels (a
	// SIGHUP, another SIGHUP after it coalesced: one reload).
	var stopC, hupC <-chan os.Signal
	for {
		select {
		case sig := <-stopC:
			syscall.Kill(agent, sig.(syscall.Signal))
		case sig := <-hupC:
			syscall.Kill(agent, sig.(syscall.Signal))
		case <-ready:
			ready, stopC, hupC = nil, stop, hup
			if err := notifyReady(); err != nil {
				io.WriteString(stderr, "porthole: "+err.Error()+"\n")
			}
		case <-chld:
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 && err != syscall.EINTR {
				break
			}
			if pid == agent {
				if ws.Signaled() {
					os.Exit(128 + int(ws.Signal()))
				}
				os.Exit(ws.ExitStatus())
			}
		}
	}
}

// readySocket returns the agent's NOTIFY_SOCKET as process 1 starts it: a
// datagram socket, closed on exec, bound to an abstract name the kernel picks
// (an empty name binds one), that passes its senders' credentials. Without
// one (fd -1, name ""), the agent gets an empty NOTIFY_SOCKET and process 1
// does not wait for it.
func readySocket() (fd int, name string) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, ""
	}
	var sa syscall.Sockaddr
	if err = syscall.Bind(fd, &syscall.SockaddrUnix{}); err == nil {
		if err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1); err == nil {
			sa, err = syscall.Getsockname(fd)
		}
	}
	if u, ok := sa.(*syscall.SockaddrUnix); ok && err == nil {
		return fd, u.Name
	}
	syscall.Close(fd)
	return -1, ""
}

// awaitReady closes ready once process pid has sent a datagram on fd, from
// readySocket (the agent sends READY=1 alone), and then closes fd; at once for
// fd -1, and if fd fails or is shut down. A datagram from another process is
// ignored: anyone in the network namespace may send to an abstract name
// (systemd's NotifyAccess=main, likewise, hears the main process alone).
// recvmsg(2) by hand, with the credentials read in place, is less code
// than syscall.Recvmsg and its parsers (3.2 KB on linux/mipsle).
func awaitReady(fd, pid int, ready chan<- struct{}) {
	var b [16]byte
	var m struct { // SCM_CREDENTIALS, as the kernel writes it (CMSG_DATA is aligned so)
		hdr  syscall.Cmsghdr
		cred syscall.Ucred
	}
	iov := syscall.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	msg := syscall.Msghdr{Iov: &iov, Iovlen: 1, Control: (*byte)(unsafe.Pointer(&m))}
	for fd >= 0 {
		msg.SetControllen(int(unsafe.Sizeof(m)))
		m.hdr = syscall.Cmsghdr{}
		_, _, errno := syscall.Syscall(sysRecvmsg, uintptr(fd), uintptr(unsafe.Pointer(&msg)), 0)
		// Failed, or shut down (no datagram, no credentials), or the agent's.
		if errno != syscall.EINTR && (errno != 0 || m.hdr.Level != syscall.SOL_SOCKET || m.hdr.Type != syscall.SCM_CREDENTIALS || int(m.cred.Pid) == pid) {
			syscall.Close(fd)
			break
		}
	}
	close(ready)
}
