package tunneld

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

func TestMain(m *testing.M) {
	hostenv.Clear()
	goleak.VerifyTestMain(m)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// testServer is a Server serving on a loopback port for one test.
type testServer struct {
	*Server
	addr string // host:port
	done chan error
}

// startServer starts a Server with cfg (Logger defaults to the test log) and shuts
// it down when the test ends.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, cfg, l)
}

// serveOn is startServer on the listener l.
func serveOn(t *testing.T, cfg Config, l net.Listener) *testServer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(cfg)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	ts := &testServer{Server: s, addr: l.Addr().String(), done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(l) }()
	t.Cleanup(func() { ts.shutdown(t) })
	return ts
}

// shutdown stops the server; calling it again is harmless.
func (ts *testServer) shutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ts.Shutdown(ctx)
	select {
	case err := <-ts.done:
		if err != ErrServerClosed {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Serve did not return after Shutdown")
	default:
	}
}

// call posts an AWS JSON 1.1 request and returns the status and decoded body.
func (ts *testServer) call(t *testing.T, op string, body any) (int, map[string]any) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	case nil:
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest("POST", "http://"+ts.addr+"/", bytes.NewReader(b))
	req.Header.Set("Content-Type", contentType)
	if op != "" {
		req.Header.Set("X-Amz-Target", targetPrefix+op)
	}
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x/20261130/us-east-1/IoTSecuredTunneling/aws4_request, SignedHeaders=host, Signature=00")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(rb, &m); err != nil {
		t.Fatalf("%s: response %d %q is not a JSON object: %v", op, resp.StatusCode, rb, err)
	}
	if resp.StatusCode != 200 && resp.Header.Get("X-Amzn-ErrorType") != m["__type"] {
		t.Errorf("%s: X-Amzn-ErrorType %q, __type %v", op, resp.Header.Get("X-Amzn-ErrorType"), m["__type"])
	}
	return resp.StatusCode, m
}

// mustCall is call that fails the test unless the status is 200.
func (ts *testServer) mustCall(t *testing.T, op string, body any) map[string]any {
	t.Helper()
	status, m := ts.call(t, op, body)
	if status != 200 {
		t.Fatalf("%s: %d %v", op, status, m)
	}
	return m
}

// open opens a tunnel through the Go API.
func (ts *testServer) open(t *testing.T, thing string, services ...string) *OpenTunnelOutput {
	t.Helper()
	in := &OpenTunnelInput{}
	if thing != "" || len(services) > 0 {
		in.DestinationConfig = &DestinationConfig{ThingName: thing, Services: services}
	}
	out, err := ts.OpenTunnel(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
