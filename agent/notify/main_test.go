package notify

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

func TestMain(m *testing.M) {
	// No DNS query leaves these tests, even with the code under test broken:
	// broker.example.com, meant for TestNoDNSServerHint's own resolver, is
	// refused by the default one.
	hostenv.NoDNS()
	goleak.VerifyTestMain(m)
}
