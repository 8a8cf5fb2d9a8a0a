package agent

import (
	"os"
	"os/signal"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// A hangup ignored by go test (nohup, a CI job in the background) would
	// be inherited by the programs of the agent's SSH sessions: they survive
	// their hangup and goleak finds their Wait. porthole agent handles SIGHUP
	// (reload), so its programs start with the default; handled here too.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	// The machine's proxy settings would send the tests' loopback connections
	// to its proxy (porthole's own dialer proxies loopback too, and curl).
	for _, k := range []string{"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"} {
		os.Unsetenv(k)
	}
	goleak.VerifyTestMain(m)
}
