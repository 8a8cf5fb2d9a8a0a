package main

import (
	"net/http"
	"testing"
	"time"

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
	for i := range 3 { // each logs "request refused"
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			t.Fatalf("request %d: %v (%v)", i, err, alive())
		}
		resp.Body.Close()
		time.Sleep(50 * time.Millisecond)
	}
	if err := alive(); err != nil {
		t.Fatalf("once its log's reader had gone: %v", err)
	}
}
