// Go's own resolver for these tests, whatever the host's nsswitch says:
// the names they give that must never reach DNS (a label ending in -:
// region x-, x-.invalid) it refuses before any query; getaddrinfo would
// send them.
//
//go:debug netdns=go

package tunnel

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

// TestMain fails the package if any test leaves a goroutine behind; the
// tests run without the machine's proxy settings and umask (hostenv).
func TestMain(m *testing.M) {
	hostenv.Clear()
	goleak.VerifyTestMain(m)
}
