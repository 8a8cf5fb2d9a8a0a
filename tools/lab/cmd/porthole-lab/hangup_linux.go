package main

import (
	"context"

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
