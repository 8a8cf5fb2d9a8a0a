//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
)

// notifyReady tells systemd that the agent has started, for the unit's
// Type=notify (sd_notify(3)): READY=1 in one datagram to the unix socket named
// by NOTIFY_SOCKET, a path or, from '@', an abstract name. It is sent once the
// signal handlers are installed, so that systemd sends no reload (SIGHUP)
// before the agent takes it as one. NOTIFY_SOCKET is then unset: what the
// agent starts (sessions' programs, check-config) must not speak for it.
// Without the variable it does nothing; its error is for a log line, never a
// reason to stop.
func notifyReady() error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	os.Unsetenv("NOTIFY_SOCKET")
	// net turns a leading '@' into the abstract namespace's NUL.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", name, err)
	}
	return nil
}
