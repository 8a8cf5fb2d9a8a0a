package lab

import (
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// TestStatusPageCutsIdleConnections: a keep-alive connection left idle after a
// GET / is closed after the timeout; the status page held it for good, a
// goroutine and a descriptor each, for as long as the client liked.
func TestStatusPageCutsIdleConnections(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr, stop, err := serveStatusPage(timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c := testenv.IdleAfterGet(t, addr)
	defer c.Close()
	testenv.MustBeCut(t, c, timeout)
}
