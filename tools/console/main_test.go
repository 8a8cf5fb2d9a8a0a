package console

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

func TestMain(m *testing.M) {
	hostenv.Clear()
	goleak.VerifyTestMain(m)
}
