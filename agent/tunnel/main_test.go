package tunnel

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind; the
// tests run without the machine's proxy settings.
func TestMain(m *testing.M) {
	// The machine's proxy settings would send the tests' loopback connections
	// to its proxy (porthole's own dialer proxies loopback too, and curl).
	for _, k := range []string{"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"} {
		os.Unsetenv(k)
	}
	goleak.VerifyTestMain(m)
}
