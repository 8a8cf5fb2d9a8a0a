// Package agent is the porthole device agent: it turns AWS IoT Secure Tunneling
// notifications into destination sessions and routes their streams to services on
// the device, first of all the embedded SSH server.
//
// It is not the protocol (see agent/tunnel), not the MQTT listener (agent/notify) and
// not the SSH server (sshd); it wires them together.
package agent

import (
	"time"

	"github.com/porthole-iot/porthole/agent/notify"
)

// Version is the porthole release, set at link time with
// -ldflags "-X github.com/porthole-iot/porthole/agent.Version=…".
var Version = "dev"

// BuildTime is when this binary was built (notify.BuildTime, set at link time);
// without it, 2026-01-01. A clock before it is a clock that was never set.
func BuildTime() time.Time {
	if t, err := time.Parse(time.RFC3339, notify.BuildTime); err == nil {
		return t
	}
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
}
