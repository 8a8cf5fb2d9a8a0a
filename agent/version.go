// Package agent is the porthole device agent: it turns AWS IoT Secure Tunneling
// notifications into destination sessions and routes their streams to services on
// the device, first of all the embedded SSH server.
//
// It is not the protocol (see agent/tunnel), not the MQTT listener (agent/notify) and
// not the SSH server (sshd); it wires them together.
//
// The device side (everything but Connect and what it uses) builds for Linux
// only: package sshd is Linux code. porthole connect builds for any system.
package agent

// Version is the porthole release, set at link time with
// -ldflags "-X github.com/porthole-iot/porthole/agent.Version=…".
var Version = "dev"
