//go:build linux

package main

import (
	"fmt"
	"os"
	"syscall"
)

// notifyReady tells systemd that the agent has started, for the unit's
// Type=notify (sd_notify(3)): READY=1 in one datagram to the unix socket named
// by NOTIFY_SOCKET, a path or, from '@', an abstract name. It is sent once the
// signal handlers are installed, so that systemd sends no reload (SIGHUP)
// before the agent takes it as one. The variable stays set: the programs the
// agent starts (sessions) get an environment of their own, not the agent's.
// Without the variable it does nothing; its error is for a log line, never a
// reason to stop.
//
// It speaks to the socket through package syscall, not net: net.DialUnix
// linked 2.5 KB more of net, os and syscall ahead of agent/tunnel, and moved
// the code an idle agent runs into two more 64 KiB windows (docs/size.md).
func notifyReady() error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", name, err)
	}
	defer syscall.Close(fd)
	// SockaddrUnix turns a leading '@' into the abstract namespace's NUL.
	if err := syscall.Sendto(fd, []byte("READY=1"), 0, &syscall.SockaddrUnix{Name: name}); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", name, err)
	}
	return nil
}
