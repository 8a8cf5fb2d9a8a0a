package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"
)

// statusPageTimeout bounds reading a request to the status page, and a
// keep-alive connection's wait for the next: a GET of one small page.
const statusPageTimeout = 30 * time.Second

// serveStatusPage serves the "device's" small HTTP page that the lab maps to the
// tunnel's HTTP service, so multiplexing is visible next to SSH. timeout bounds
// reading a request and an idle connection (statusPageTimeout): without it, a
// connection left idle, or a request never finished, was held for good.
func serveStatusPage(timeout time.Duration) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	start := time.Now()
	host, _ := os.Hostname()
	srv := &http.Server{ReadHeaderTimeout: min(5*time.Second, timeout), ReadTimeout: timeout, IdleTimeout: timeout, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><title>%s</title><h1>porthole lab device %s</h1>"+
			"<p>This page is the target of the device's HTTP service: the lab serves it next to the device, "+
			"and you reach it through the tunnel, beside SSH.</p>"+
			"<ul><li>lab host: %s</li><li>lab arch: %s</li><li>up: %v</li></ul>\n",
			Thing, Thing, host, runtime.GOARCH, time.Since(start).Round(time.Second))
	})}
	go srv.Serve(ln)
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
