package board

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

func TestMain(m *testing.M) {
	hostenv.Umask() // the proxies stay: fetch.sh's downloads may need them
	goleak.VerifyTestMain(m)
}
