package console

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/proxyenv"
)

func TestMain(m *testing.M) {
	proxyenv.Clear()
	goleak.VerifyTestMain(m)
}
