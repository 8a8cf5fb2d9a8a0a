// Package agent is the porthole device agent: it turns AWS IoT Secure Tunneling
// notifications into destination sessions and routes their streams to services on
// the device, first of all the embedded SSH server.
//
// It is not the protocol (see agent/tunnel), not the MQTT listener (agent/notify) and
// not the SSH server (sshd); it wires them together.
package agent

import "time"

// Version is the porthole release, set at link time with
// -ldflags "-X github.com/porthole-iot/porthole/agent.Version=…".
var Version = "dev"

// buildTime is the build's date (RFC 3339), set at link time with
// -X github.com/porthole-iot/porthole/agent.buildTime=…; it tells a clock that is
// behind (a router booted without RTC) from a real certificate problem.
var buildTime = ""

// BuildTime is when this binary was built; without link-time data, 2026-01-01.
func BuildTime() time.Time {
	if t, err := time.Parse(time.RFC3339, buildTime); err == nil {
		return t
	}
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
}
