package tunnel

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/proxyenv"
)

// TestMain fails the package if any test leaves a goroutine behind; the
// tests run without the machine's proxy settings.
func TestMain(m *testing.M) {
	proxyenv.Clear()
	goleak.VerifyTestMain(m)
}
