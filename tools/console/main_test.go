package console

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.ClearProxies()
	goleak.VerifyTestMain(m)
}
