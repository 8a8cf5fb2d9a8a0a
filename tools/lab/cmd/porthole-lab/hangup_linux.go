package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// watchHangup calls cancel when the lab's standard input, a terminal, hangs up.
// A shell in the terminal passes the terminal's SIGHUP on to its jobs, but when
// make is the terminal's own program (xterm -e make lab, script -c "make lab",
// an editor's run button), only make gets it, and GNU make keeps waiting for
// the lab, which then held its ports, its state and the agent until killed by
// hand. poll asks for no event: it reads nothing (no SIGTTIN in the
// background) and still reports the hang-up.
func watchHangup(ctx context.Context, cancel context.CancelFunc) {
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err != nil {
		return // not a terminal
	}
	go func() {
		fds := []unix.PollFd{{Fd: 0}}
		for ctx.Err() == nil {
			n, err := unix.Poll(fds, 1000)
			if err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				cancel()
				return
			}
		}
	}()
}

// stopWithMake has the kernel send the lab SIGTERM, which stops it as Ctrl-C
// does, when make, its parent, dies: GNU make passes SIGTERM on to the lab but
// waits for it at SIGINT, so a run button that sends SIGINT and then SIGKILL
// to make alone left the lab running, holding its ports, its state and the
// agent. Only under make: a lab started from a shell and left running
// (nohup, &) outlives that shell, as before.
func stopWithMake() {
	ppid := os.Getppid()
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ppid))
	if err != nil || strings.TrimSpace(string(comm)) != "make" {
		return
	}
	if unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0) != nil {
		return
	}
	if os.Getppid() != ppid { // make died before the request took hold
		unix.Kill(os.Getpid(), unix.SIGTERM)
	}
}
