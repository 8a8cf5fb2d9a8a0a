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
