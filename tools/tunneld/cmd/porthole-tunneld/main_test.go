package main

import (
	"testing"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// A tunneld whose log reader goes away (porthole-tunneld 2>&1 | logger, a
// runit or s6 log service restarted, or OOM-killed on a small host) keeps
// serving: Go kills a program whose write to fd 2 fails with EPIPE unless it
// handles SIGPIPE, and the next log line ended tunneld, cutting every
// tunnel's WebSockets.
func TestTunneldSurvivesLogReaderGone(t *testing.T) {
	addr, alive := testenv.StartWithoutLogReader(t, "github.com/porthole-iot/porthole/tools/tunneld/cmd/porthole-tunneld",
		"--listen", "127.0.0.1:0", "--print-addr", "--allow-unsigned", "--data-dir", t.TempDir())
	testenv.GetWhileAlive(t, "http://"+addr+"/", alive) // each request is logged
}
