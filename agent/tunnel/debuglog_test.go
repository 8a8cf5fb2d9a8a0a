package tunnel_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
)

// duplicateKey is the first key that appears twice in the top-level object of
// one JSON log line, "" if none does.
func duplicateKey(line string) (string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil { // {
		return "", err
	}
	seen := map[string]bool{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return "", err
		}
		key := k.(string)
		if seen[key] {
			return key, nil
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", err
		}
	}
	return "", nil
}

// With log.format = "json" and level debug, every line the destination
// writes is one JSON object with each key once: a second "msg" (the frame, in
// "frame in") makes json.Unmarshal, jq and log collectors keep only one of
// the two, so the line's message becomes the frame, or the frame is lost.
func TestDebugLinesHaveEachKeyOnce(t *testing.T) {
	var logged testlog.Lines
	log := slog.New(slog.NewJSONHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	addr := echoServer(t, 0x51)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr},
		dstTweak: func(d *tunnel.Destination) { d.Logger = log }})
	if err := roundTrip(h.addr("SSH"), 0x51, 4<<10); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(logged.String(), "\n") {
		if line == "" {
			continue
		}
		n++
		k, err := duplicateKey(line)
		if err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		if k != "" {
			t.Errorf("key %q twice in one line: %s", k, line)
		}
	}
	if n == 0 {
		t.Fatal("nothing logged")
	}
}

// What the operator's programs send through the tunnel never reaches the
// device's log, at any level and in either format: a service other than SSH
// (a web UI, a TCP console) carries passwords, cookies and Authorization
// headers in the clear.
func TestDebugLinesCarryNoPayload(t *testing.T) {
	const secret = "GET / HTTP/1.1\r\nAuthorization: Basic cm9vdDpodW50ZXIy\r\nCookie: session=s3cr3t\r\n\r\n"
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var logged testlog.Lines
			opts := &slog.HandlerOptions{Level: slog.LevelDebug}
			h := slog.Handler(slog.NewTextHandler(&logged, opts))
			if format == "json" {
				h = slog.NewJSONHandler(&logged, opts)
			}
			addr := echoServer(t, 0)
			hr := newHarness(t, setup{services: []string{"HTTP"}, targets: tunnel.Targets{"HTTP": addr},
				dstTweak: func(d *tunnel.Destination) { d.Logger = slog.New(h) }})
			c, err := net.Dial("tcp", hr.addr("HTTP"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte(secret))
			got := make([]byte, len(secret))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			all := logged.String()
			for _, leak := range []string{"s3cr3t", "cm9vdDpodW50ZXIy", base64.StdEncoding.EncodeToString([]byte(secret))[:40], `"Payload"`} {
				if strings.Contains(all, leak) {
					t.Errorf("the debug log holds the stream's data (%q):\n%.1500s", leak, all)
				}
			}
		})
	}
}

// Debug logging of a transfer: the frames' lines are rate-limited as the
// peer's other lines are (STYLE: hot paths log at debug, rate-limited), so
// that turning on debug on a router to see why a stream failed does not turn
// a 4 MiB transfer into thousands of lines that push everything else out of
// its log ring (logread holds 64 KiB by default on OpenWrt).
func TestDebugFrameLinesRateLimited(t *testing.T) {
	var logged testlog.Lines
	log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	addr := echoServer(t, 0x52)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr},
		dstTweak: func(d *tunnel.Destination) { d.Logger = log }})
	if err := roundTrip(h.addr("SSH"), 0x52, 4<<20); err != nil {
		t.Fatal(err)
	}
	if n := logged.Count("DATA"); n > 50 {
		t.Errorf("%d debug lines for the DATA frames of one 4 MiB round trip, want at most 50", n)
	}
	if logged.Count("STREAM_START") == 0 {
		t.Errorf("the STREAM_START frame is not logged at debug:\n%.2000s", logged.String())
	}
}

// A tunnel closed by the service is said once by whoever runs the engine (the
// agent: "tunnel over"; porthole connect: its error and exit status), not a
// second time by the engine at info as Run ends.
func TestClosedByServiceNotLoggedByTheEngine(t *testing.T) {
	var logged testlog.Lines
	log := slog.New(slog.NewTextHandler(io.MultiWriter(&logged, testWriter{t}), nil)) // info and up
	addr := echoServer(t, 0x53)
	h := newHarness(t, setup{services: []string{"SSH"}, targets: tunnel.Targets{"SSH": addr},
		dstTweak: func(d *tunnel.Destination) { d.Logger = log }})
	if err := roundTrip(h.addr("SSH"), 0x53, 1<<10); err != nil {
		t.Fatal(err)
	}
	h.tun.Close()
	select {
	case err := <-h.DstErr:
		if !errors.Is(err, tunnel.ErrClosedByService) {
			t.Fatalf("Run = %v, want ErrClosedByService", err)
		}
		h.DstErr <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end after CloseTunnel")
	}
	if n := logged.Count("closed by the service"); n != 0 {
		t.Errorf("the engine logged the end it returns %d times at info; its caller reports it:\n%s", n, logged.String())
	}
}

// While the service cannot be reached (the WAN down overnight), each attempt
// is one line, the warning that says it failed and when the next one is: not
// two, with an info "connecting" before each, which doubled what a night
// offline writes into a router's log ring (64 KiB on OpenWrt) and pushed the
// logins out of it.
func TestRetryIsOneLinePerAttempt(t *testing.T) {
	addr := refusedAddr(t) // nothing answers there
	var logged testlog.Lines
	d := &tunnel.Destination{Config: tunnel.Config{Endpoint: "ws://" + addr, AllowInsecureWebSocket: true, AccessToken: mustToken(t, "t"),
		RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond, Logger: slogDebugTo(&logged, t)}, Dialer: tunnel.Targets{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); logged.Count("cannot connect to the tunnel, retrying") < 5; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no retries:\n%s", logged.String())
		}
	}
	cancel()
	<-done
	if n := logged.Count("level=INFO msg=connecting"); n != 1 {
		t.Errorf("%d info lines say connecting for %d attempts, want 1 (the first):\n%s", n, logged.Count("retrying"), logged.String())
	}
	// The same failure again is at debug level (quiet.Every): a device
	// without its WAN retries for as long as that lasts.
	if n := logged.Count("level=WARN msg=\"cannot connect to the tunnel, retrying\""); n != 1 {
		t.Errorf("%d WARN lines for %d attempts failing alike, want 1 (the others at debug level):\n%s", n, logged.Count("retrying"), logged.String())
	}
}

// An endpoint that is not the tunneling service (a wrong --endpoint or
// tunnel.endpoint: an API gateway's or framework's debug error page) may
// answer the handshake with a refusal that quotes the request's headers. The
// refusal's body is in the error the agent logs and publishes (tunnel-ended)
// and porthole connect prints: the tokens must not be, as DESIGN has it.
func TestRefusalEchoingTheTokensDoesNotCarryThem(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("channel-id", r.Header.Get("access-token"))
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "no route for %s; headers: access-token=%s client-token=%s", r.URL.Path, r.Header.Get("access-token"), r.Header.Get("client-token"))
	}))
	defer srv.Close()
	const access, client = "AQGAAXhiZGVzdGluYXRpb24tdG9rZW4tc2VjcmV0", "6a3c1f0e-0d9b-4c39-9d0e-3b7f5a1c2e4d"
	ct, err := tunnel.NewClientToken(client)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustToken(t, access), ClientToken: ct}
	_, err = tunnel.Dial(context.Background(), &cfg, tunnel.ModeDestination)
	var he *tunnel.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("Dial = %v, want a HandshakeError", err)
	}
	t.Logf("Dial: %v", err)
	for _, s := range []string{err.Error(), he.Body, he.ChannelID} {
		if strings.Contains(s, access) || strings.Contains(s, client) {
			t.Errorf("the refusal carries a token: %q", s)
		}
	}
}
