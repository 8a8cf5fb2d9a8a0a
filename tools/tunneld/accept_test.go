//go:build unix

package tunneld

import (
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// TestServeWaitsOutAcceptErrors: accept(2) failing for a moment, out of
// descriptors (ulimit -n 1024 on a small VPS, two WebSockets a tunnel) or of
// socket buffers, neither ends Serve (net/http's returns on ENOBUFS and
// ENOMEM, and the command then exits, cutting every tunnel) nor goes unsaid
// at the default level (net/http's "Accept error" goes to ErrorLog, at
// Debug): the first failure of the run is logged once, at Warn.
func TestServeWaitsOutAcceptErrors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		t.Run(errno.Error(), func(t *testing.T) {
			var w countingWriter
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ts := serveOn(t, Config{Logger: slog.New(slog.NewTextHandler(&w, nil))}, testenv.ErrnoListener(l, errno, 3))
			resp, err := http.Get("http://" + ts.addr + "/")
			if err != nil {
				t.Fatalf("after 3 Accepts failed with %v: %v", errno, err)
			}
			resp.Body.Close()
			select {
			case err := <-ts.done:
				ts.done <- err
				t.Fatalf("Serve returned after %v from accept(2): %v", errno, err)
			default:
			}
			w.mu.Lock()
			log := w.all.String()
			w.mu.Unlock()
			if n := strings.Count(log, errno.Error()); n != 1 || !strings.Contains(log, "level=WARN") {
				t.Errorf("accept(2) failed with %v 3 times; the Info log says so %d times, want once at WARN:\n%s", errno, n, log)
			}
		})
	}
}
