package board

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The machine's proxy settings would send porthole connect's connection to
	// tunneld on loopback to its proxy (porthole's dialer proxies loopback too).
	for _, k := range []string{"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"} {
		os.Unsetenv(k)
	}
	goleak.VerifyTestMain(m)
}
