// Go's own resolver for these tests, whatever the host's nsswitch says:
// the names they give that must never reach DNS (a label ending in -:
// region x-, x-.invalid) it refuses before any query; getaddrinfo would
// send them.
//
//go:debug netdns=go

package agent

import (
	"os"
	"os/signal"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

func TestMain(m *testing.M) {
	// A hangup ignored by go test (nohup, a CI job in the background) would
	// be inherited by the programs of the agent's SSH sessions: they survive
	// their hangup and goleak finds their Wait. porthole agent handles SIGHUP
	// (reload), so its programs start with the default; handled here too.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	hostenv.Clear()
	goleak.VerifyTestMain(m)
}

// testRegion is the region of the tunnels these tests' agents join: an agent
// that lost tunnel.endpoint (the test's service on 127.0.0.1) would dial
// data.tunneling.iot.x-.amazonaws.com, which Go's resolver refuses (above).
const testRegion = "x-"
