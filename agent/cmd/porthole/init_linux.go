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
// and SIGHUP (stop, reload) on to it; waits for every child it is given; and
// exits as the agent did. It returns only if that child cannot be started:
// the agent then runs in this process, as before, and stderr says what is
// lost.
func asInit(stderr io.Writer) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGCHLD)
	agent, _, err := syscall.StartProcess("/proc/self/exe", os.Args, &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		signal.Stop(sigs)
		io.WriteString(stderr, "porthole: process 1 cannot start the agent as its child: "+err.Error()+": orphaned processes will not be waited for\n")
		return
	}
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			syscall.Kill(agent, sig.(syscall.Signal))
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
