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
// READY=1 to NOTIFY_SOCKET itself, and the child does not: systemd-nspawn hears
// only its container's process 1. It returns only if that child cannot be
// started: the agent then runs in this process, as before, and stderr says
// what is lost.
func asInit(stop, hup <-chan os.Signal, stderr io.Writer) {
	chld := make(chan os.Signal, 1) // one is enough: each waits for all there are
	signal.Notify(chld, syscall.SIGCHLD)
	if err := notifyReady(); err != nil {
		io.WriteString(stderr, "porthole: "+err.Error()+"\n")
	}
	env := os.Environ()
	for i, e := range env {
		if len(e) > 14 && e[:14] == "NOTIFY_SOCKET=" {
			env[i] = "NOTIFY_SOCKET=" // empty: not for the child (os.Unsetenv linked 1.1 KB)
		}
	}
	agent, _, err := syscall.StartProcess("/proc/self/exe", os.Args, &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}})
	if err != nil {
		signal.Stop(chld)
		io.WriteString(stderr, "porthole: process 1 cannot start the agent as its child: "+err.Error()+": orphaned processes will not be waited for\n")
		return
	}
	for {
		select {
		case sig := <-stop:
			syscall.Kill(agent, sig.(syscall.Signal))
		case sig := <-hup:
			syscall.Kill(agent, sig.(syscall.Signal))
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
