// Package e2e holds the system tests that run the built binaries together with real
// peers: Mosquitto with mutual TLS, tunneld, the `porthole agent` and
// `porthole connect` binaries, and the OpenSSH client. It has no non-test code
// beyond this comment; nothing imports it.
package e2e
