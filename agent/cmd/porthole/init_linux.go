package main

import (
	"io"
	"os"
	"os/signal"
	"syscall"
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
	// The child's NOTIFY_SOCKET: a datagram socket with an abstract name the
	// kernel picks (an empty name binds one), closed on exec. Without it the
	// child gets none, and the signals are not held.
	ready, name := make(chan struct{}), ""
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err == nil {
		var sa syscall.Sockaddr
		if err = syscall.Bind(fd, &syscall.SockaddrUnix{}); err == nil {
			sa, err = syscall.Getsockname(fd)
		}
		if u, ok := sa.(*syscall.SockaddrUnix); ok && err == nil {
			name = u.Name
			go func() {
				var b [16]byte
				syscall.Read(fd, b[:]) // the child's READY=1
				syscall.Close(fd)
				close(ready)
			}()
		}
	}
	if name == "" {
		close(ready)
	}
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
		io.WriteString(stderr, "porthole: process 1 cannot start the agent as its child: "+err.Error()+": orphaned processes will not be waited for\n")
		return
	}
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
