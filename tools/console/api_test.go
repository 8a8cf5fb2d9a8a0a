package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// fakeControlPlane opens tunnels with a made-up id and source token, or refuses
// them (refuseOpen); its CloseTunnel returns closeErr, or waits for its context
// when hang is set.
type fakeControlPlane struct {
	refuseOpen bool
	noToken    bool // OpenTunnel opens, and its answer has no usable token
	closeErr   error
	closeErrs  []error // CloseTunnel's answers in turn, closeErr's after them
	hang       bool

	mu     sync.Mutex
	opened []string // OpenTunnel calls' things, refused ones too
	closed []string // CloseTunnel calls' ids
}

func (f *fakeControlPlane) OpenTunnel(ctx context.Context, thing string, services []string, lifetime time.Duration, attempt string) (string, tunnel.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened = append(f.opened, thing)
	if f.refuseOpen {
		return "", tunnel.Token{}, refusedError{errors.New("fake: OpenTunnel refused")}
	}
	id := "tunnel-" + thing
	if f.noToken {
		return id, tunnel.Token{}, errors.New("fake: no source token in the answer")
	}
	tok, err := tunnel.NewAccessToken("AQGAAXh-source-token-of-" + thing)
	return id, tok, err
}

func (f *fakeControlPlane) CloseTunnel(ctx context.Context, id string) error {
	f.mu.Lock()
	f.closed = append(f.closed, id)
	err := f.closeErr
	if len(f.closeErrs) > 0 {
		err, f.closeErrs = f.closeErrs[0], f.closeErrs[1:]
	}
	f.mu.Unlock()
	if f.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (f *fakeControlPlane) FindAttempt(ctx context.Context, thing, attempt string, since time.Time) ([]string, error) {
	return nil, nil
}

func (f *fakeControlPlane) DestinationConnected(ctx context.Context, id string) (bool, error) {
	return false, nil
}

func (f *fakeControlPlane) calls() (opened, closed []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.opened...), append([]string(nil), f.closed...)
}

// call sends s a request as the page does (its token and origin; body, if any, as
// JSON) and returns the answer.
func call(s *Server, method, path string, body []byte) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := request(method, path, rd)
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	r.Header.Set("Authorization", "Bearer the-access-token")
	r.Header.Set("Origin", "http://127.0.0.1:8088")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, r)
	return rec
}

// post is POST /api/tunnels as the page sends it; it returns the code and the
// answer's error text.
func post(t *testing.T, s *Server, req openRequest) (int, string) {
	t.Helper()
	b, _ := json.Marshal(req)
	rec := call(s, http.MethodPost, "/api/tunnels", b)
	var e struct{ Error string }
	json.Unmarshal(rec.Body.Bytes(), &e)
	return rec.Code, e.Error
}

// TestOpenLifetime: the lifetime is the service's 1 to 720 minutes
// (maxLifetimeTimeoutMinutes); anything else, 0 too, is refused before the
// control plane is asked.
func TestOpenLifetime(t *testing.T) {
	for _, tc := range []struct {
		name    string
		minutes int
		want    int // 502: passed on to the control plane, which refuses it
	}{
		{"zero", 0, http.StatusBadRequest},
		{"negative", -5, http.StatusBadRequest},
		{"over 12 hours", 721, http.StatusBadRequest},
		{"one minute", 1, http.StatusBadGateway},
		{"12 hours", 720, http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := &fakeControlPlane{refuseOpen: true}
			s := newTestServer(t, Config{ControlPlane: cp})
			code, msg := post(t, s, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: tc.minutes})
			if code != tc.want {
				t.Fatalf("open with lifetime %d = %d %q, want %d", tc.minutes, code, msg, tc.want)
			}
			if code == http.StatusBadRequest && !strings.Contains(msg, "1 to 720") {
				t.Errorf("open with lifetime %d: %q does not say the range", tc.minutes, msg)
			}
			opened, _ := cp.calls()
			if asked := len(opened) != 0; asked != (code != http.StatusBadRequest) {
				t.Fatalf("open with lifetime %d = %d: control plane asked %v", tc.minutes, code, asked)
			}
		})
	}
	t.Run("left out", func(t *testing.T) {
		cp := &fakeControlPlane{refuseOpen: true}
		s := newTestServer(t, Config{ControlPlane: cp})
		if code, msg := post(t, s, openRequest{Mode: "open", Thing: "dev1"}); code != http.StatusBadRequest {
			t.Fatalf("open without a lifetime = %d %q, want 400", code, msg)
		}
		if opened, _ := cp.calls(); len(opened) != 0 {
			t.Fatalf("the control plane was asked to open %q", opened)
		}
	})
}

// TestOpenRefusesIncomplete: a request without a thing or device name, with a
// service the API does not take, or with a field the console does not know
// (a misspelt one, which was ignored) is refused before the control plane is
// asked or a tunnel is started: a pasted token's tunnel without a name kept
// its device's host key under "", shared by every such tunnel.
func TestOpenRefusesIncomplete(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"no thing", `{"mode":"open","thing":"  ","lifetimeMinutes":5}`, "thing name"},
		{"a bad service", `{"mode":"open","thing":"dev1","services":["SSH","web ui"],"lifetimeMinutes":5}`, `service "web ui"`},
		{"an unknown field", `{"mode":"open","thing":"dev1","lifetimeMinutes":5,"lifetime":5}`, "unknown field"},
		{"no device name", `{"mode":"token","token":"AQGAAXh-pasted","label":" ","endpoint":"wss://127.0.0.1:1"}`, "device name"},
		{"no mode", `{"thing":"dev1","lifetimeMinutes":5}`, "mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := &fakeControlPlane{}
			s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1"})
			rec := call(s, http.MethodPost, "/api/tunnels", []byte(tc.body))
			var e struct{ Error string }
			json.Unmarshal(rec.Body.Bytes(), &e)
			if rec.Code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
				t.Errorf("POST /api/tunnels %s = %d %q, want 400 with %q", tc.body, rec.Code, e.Error, tc.want)
			}
			if opened, _ := cp.calls(); len(opened) != 0 {
				t.Errorf("the control plane was asked to open %q", opened)
			}
			if n := len(s.tunnels.views()); n != 0 {
				t.Errorf("%d tunnels started, want 0", n)
			}
		})
	}
}

// TestOpenedButUnusableIsClosed: a tunnel the service opened whose answer the
// console cannot use (no source token) is closed at the service, not left
// open, its device connected, for its lifetime with nothing here to close it.
func TestOpenedButUnusableIsClosed(t *testing.T) {
	cp := &fakeControlPlane{noToken: true}
	s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1"})
	want := "opening the tunnel: fake: no source token in the answer. The service opened it (tunnel-dev1): it was closed"
	if code, msg := post(t, s, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 5}); code != http.StatusBadGateway || msg != want {
		t.Errorf("open with an unusable answer = %d %q, want 502 %q", code, msg, want)
	}
	if _, closed := cp.calls(); len(closed) != 1 || closed[0] != "tunnel-dev1" {
		t.Errorf("tunnels closed at the service: %q, want the one opened, tunnel-dev1", closed)
	}
	if n := len(s.tunnels.views()); n != 0 {
		t.Errorf("%d tunnels started, want 0", n)
	}
}

// closeRefused is the service's refusal of a CloseTunnel with error type typ.
func closeRefused(typ string) *APIError {
	return &APIError{Op: "CloseTunnel", Status: "400 Bad Request", StatusCode: 400, Type: typ, text: typ + ": no"}
}

// waitUntil waits up to 10 s for cond, looking every 5 ms; then it fails t,
// saying what was awaited.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in 10 s", what)
		}
	}
}

// TestOpenedButUnusableCloseFailed: a tunnel opened with an answer the console
// cannot use, whose CloseTunnel fails, is closed again (at the latest) when the
// console stops;
// unless the service refused the close for good (the console's policy lacks
// iot:CloseTunnel), which it would refuse again, or no longer has the tunnel,
// which is not said to stay open. The page says which.
func TestOpenedButUnusableCloseFailed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		fate   string
		closes []string // CloseTunnel calls, at the open and at the stop
	}{
		{"failed", errors.New("fake: CloseTunnel failed"),
			"this console tries again to close it every minute and at its stop; till then it stays open at the service", []string{"tunnel-dev1", "tunnel-dev1"}},
		{"refused", closeRefused("AccessDeniedException"),
			"it stays open at the service until its lifetime ends", []string{"tunnel-dev1"}},
		{"gone", closeRefused("ResourceNotFoundException"),
			"the service no longer has it", []string{"tunnel-dev1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := &fakeControlPlane{noToken: true, closeErr: tc.err}
			s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1"})
			want := "opening the tunnel: fake: no source token in the answer. The service opened it (tunnel-dev1), and closing it failed (" +
				tc.err.Error() + "): " + tc.fate
			if code, msg := post(t, s, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 5}); code != http.StatusBadGateway || msg != want {
				t.Errorf("open with an unusable answer = %d %q, want 502 %q", code, msg, want)
			}
			s.Close()
			if _, closed := cp.calls(); !slices.Equal(closed, tc.closes) {
				t.Errorf("CloseTunnel calls %q, want %q", closed, tc.closes)
			}
		})
	}
}

// TestStrayIsClosedAgain: a tunnel the console opened, could not use and
// could not close is closed again every Config.strayRetry while the console
// runs, till it is closed, gone, or refused for good; then neither the retries
// nor the console's stop ask again. A close that keeps failing is tried at
// every retry and at the stop.
func TestStrayIsClosedAgain(t *testing.T) {
	failed := errors.New("fake: CloseTunnel failed")
	refused, gone := closeRefused("AccessDeniedException"), closeRefused("ResourceNotFoundException")
	for _, tc := range []struct {
		name    string
		answers []error // CloseTunnel's: at the open, then the retries'
		log     string
		calls   int // CloseTunnel calls till the retries end; 0: they do not
	}{
		{"closed", []error{failed, failed, nil}, "tunnel closed at the service after an earlier close failed", 3},
		{"gone", []error{failed, gone}, "a tunnel whose close failed is no longer at the service", 2},
		{"refused", []error{failed, refused}, "it stays open at the service until its lifetime ends", 2},
		{"failing", []error{failed}, strayFailedLine, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := &fakeControlPlane{noToken: true, closeErrs: tc.answers}
			if tc.calls == 0 {
				cp.closeErr = failed
			}
			logs := &syncBuffer{t: t}
			const retry = 20 * time.Millisecond
			s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1", strayRetry: retry,
				Logger: slog.New(slog.NewTextHandler(logs, nil))})
			want := "this console tries again to close it every 20ms and at its stop"
			if code, msg := post(t, s, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 5}); code != http.StatusBadGateway || !strings.Contains(msg, want) {
				t.Fatalf("open with an unusable answer = %d %q, want 502 saying %q", code, msg, want)
			}
			enough := tc.calls
			if enough == 0 {
				enough = 4
			}
			waitUntil(t, fmt.Sprintf("%d CloseTunnel calls", enough), func() bool { _, closed := cp.calls(); return len(closed) >= enough })
			if tc.calls > 0 {
				time.Sleep(10 * retry) // retries that went on would call again
			}
			_, before := cp.calls()
			s.Close()
			_, closed := cp.calls()
			if tc.calls > 0 && (len(before) != tc.calls || len(closed) != tc.calls) {
				t.Errorf("CloseTunnel called %d times after the retries ended and %d after the stop, want %d", len(before), len(closed), tc.calls)
			}
			if atStop := strings.Contains(logs.String(), "closing a tunnel at shutdown"); atStop != (tc.calls == 0) {
				t.Errorf("the stop tried to close the tunnel: %v, want %v", atStop, tc.calls == 0)
			}
			if !slices.Equal(slices.Compact(closed), []string{"tunnel-dev1"}) {
				t.Errorf("CloseTunnel calls %q, want tunnel-dev1's only", closed)
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("logs do not say %q:\n%s", tc.log, logs)
			}
		})
	}
}

// TestStrayOutlivesItsLifetime: the retries of a close that keeps failing end
// with the tunnel's lifetime, and the console's stop does not try it either.
func TestStrayOutlivesItsLifetime(t *testing.T) {
	cp := &fakeControlPlane{closeErr: errors.New("fake: CloseTunnel failed")}
	logs := &syncBuffer{t: t}
	const retry = 20 * time.Millisecond
	s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1", strayRetry: retry,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	// A lifetime of 50 retries: on a loaded machine the first retry may come
	// several late, and it should still find the tunnel in its lifetime.
	if !s.tunnels.closeLater("tunnel-dev1", "dev1", 50*retry) {
		t.Fatal("closeLater refused a tunnel before the stop")
	}
	const ended = "a tunnel whose close failed has come to the end of its lifetime: no more tries"
	waitUntil(t, "the log line "+ended, func() bool { return strings.Contains(logs.String(), ended) })
	_, before := cp.calls()
	time.Sleep(10 * retry) // retries that went on would call again
	s.Close()
	if _, closed := cp.calls(); len(closed) != len(before) || len(closed) == 0 {
		t.Errorf("CloseTunnel called %d times when the lifetime ended and %d after the stop, want the same, not 0", len(before), len(closed))
	}
	if n := strings.Count(logs.String(), ended); n != 1 {
		t.Errorf("the logs say %d times that the lifetime ended, want once: the tunnel leaves the retries", n)
	}

	// Ended before a retry came: the stop does not try it.
	cp = &fakeControlPlane{closeErr: errors.New("fake: CloseTunnel failed")}
	s = newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1", strayRetry: time.Hour})
	s.tunnels.closeLater("tunnel-dev1", "dev1", time.Millisecond)
	time.Sleep(10 * time.Millisecond)
	s.Close()
	if _, closed := cp.calls(); len(closed) != 0 {
		t.Errorf("the stop tried to close a tunnel whose lifetime had ended: CloseTunnel calls %q", closed)
	}
}

// TestStrayRetryStoppedQuietly: a retry cut short by the console's stop is not
// logged as a failure; the stop tries the tunnel once more.
func TestStrayRetryStoppedQuietly(t *testing.T) {
	cp := &fakeControlPlane{hang: true}
	logs := &syncBuffer{t: t}
	s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1", strayRetry: 10 * time.Millisecond,
		closeTimeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	s.tunnels.closeLater("tunnel-dev1", "dev1", time.Hour)
	waitUntil(t, "a retry", func() bool { _, closed := cp.calls(); return len(closed) > 0 }) // its CloseTunnel hangs
	s.Close()
	if _, closed := cp.calls(); len(closed) != 2 {
		t.Errorf("CloseTunnel calls %q, want the retry's and the stop's", closed)
	}
	if l := logs.String(); strings.Contains(l, "closing a tunnel again failed") || !strings.Contains(l, "closing a tunnel at shutdown") {
		t.Errorf("logs say the stopped retry failed, or not that the stop tried again:\n%s", l)
	}
}

// TestStrayFailuresLoggedSparingly: retries of a close that fail alike are
// logged once, then again after strayRelog more, or when the error changes;
// each line says how many went unlogged before it.
func TestStrayFailuresLoggedSparingly(t *testing.T) {
	a := errors.New("fake: CloseTunnel failed (a)")
	answers := []error{a, a, a}
	// (b) is a reset, from a new local port at every try: alike all the same.
	service := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443}
	for i := range strayRelog + 2 {
		answers = append(answers, netFailure(40000+i, service, errors.New("connection reset by peer (b)")))
	}
	cp := &fakeControlPlane{closeErrs: answers} // then the close succeeds
	logs := &syncBuffer{t: t}
	s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1", strayRetry: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	s.tunnels.closeLater("tunnel-dev1", "dev1", time.Hour)
	const closed = "tunnel closed at the service after an earlier close failed"
	waitUntil(t, "the log line "+closed, func() bool { return strings.Contains(logs.String(), closed) })
	s.Close()
	var got []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "closing a tunnel again failed") {
			got = append(got, l)
		}
	}
	if !strings.Contains(strayFailedLine, "every "+strconv.Itoa(strayRelog+1)+"th try") {
		t.Errorf("the line %q does not say it is repeated every %dth try", strayFailedLine, strayRelog+1)
	}
	want := []string{"(a)\" retry_every=1ms unlogged_since_last_line=0", "(b)\" retry_every=1ms unlogged_since_last_line=2",
		"(b)\" retry_every=1ms unlogged_since_last_line=" + strconv.Itoa(strayRelog)}
	if len(got) != len(want) {
		t.Fatalf("%d lines say a retry failed, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("line %d: %s\nwant it to end in %s", i+1, got[i], w)
		}
	}
}

// TestStrayFirstFailureLogged: a retry's first failure is logged whatever
// its text, an empty one too (it once matched the empty "last logged").
func TestStrayFirstFailureLogged(t *testing.T) {
	for _, err := range []error{errors.New(""), errors.New("fake: CloseTunnel failed")} {
		ts := &tunnels{stray: map[string]strayTunnel{"tunnel-1": {thing: "dev1"}}}
		if n, logIt := ts.strayFailed("tunnel-1", err); !logIt || n != 0 {
			t.Errorf("first failure %q: logged %v with %d unlogged before it, want logged with 0", err, logIt, n)
		}
		if _, logIt := ts.strayFailed("tunnel-1", err); logIt {
			t.Errorf("second failure %q, alike: logged, want it counted only", err)
		}
	}
}

// netFailure is a CloseTunnel's failure as Go's HTTP client gives it: a read
// from local port local to service (a dial, with local 0) that failed with
// cause.
func netFailure(local int, service *net.TCPAddr, cause error) error {
	var src net.Addr
	op := "dial"
	if local != 0 {
		src, op = &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: local}, "read"
	}
	return fmt.Errorf("CloseTunnel: %w", &neturl.Error{Op: "Post", URL: "https://api.tunneling.iot.eu-west-1.amazonaws.com/",
		Err: &net.OpError{Op: op, Net: "tcp", Source: src, Addr: service, Err: cause}})
}

// TestStrayFailuresAlike: failed retries are alike when only a network
// error's addresses differ (a reset names a new local port at every try),
// and not when its cause does.
func TestStrayFailuresAlike(t *testing.T) {
	service := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443}
	failed := netFailure
	reset, timeout := errors.New("read: connection reset by peer"), errors.New("i/o timeout")
	for _, tc := range []struct {
		name  string
		a, b  error
		alike bool
	}{
		{"resets from two local ports", failed(41246, service, reset), failed(41250, service, reset), true},
		{"time-outs at two of the service's addresses", failed(0, service, timeout),
			failed(0, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 443}, timeout), true},
		{"a reset and a time-out", failed(41246, service, reset), failed(0, service, timeout), false},
		{"two refusals", closeRefused("ThrottlingException"), closeRefused("ThrottlingException"), true},
		{"two kinds of refusal", closeRefused("ThrottlingException"), closeRefused("InternalFailure"), false},
	} {
		if alike := failedAlike(tc.a) == failedAlike(tc.b); alike != tc.alike {
			t.Errorf("%s: failedAlike(%q) = %q, failedAlike(%q) = %q; alike %v, want %v",
				tc.name, tc.a, failedAlike(tc.a), tc.b, failedAlike(tc.b), alike, tc.alike)
		}
	}
}

// TestOpenWithoutControlPlane: a console without a control plane refuses to
// open a tunnel, and says to paste a token.
func TestOpenWithoutControlPlane(t *testing.T) {
	s := testServer(t)
	if code, msg := post(t, s, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 5}); code != http.StatusBadRequest || !strings.Contains(msg, "paste") {
		t.Errorf("open without a control plane = %d %q, want 400 saying to paste a token", code, msg)
	}
}

// TestStateShowsNoToken: the page sees a tunnel's source token by its
// fingerprint only, never the token.
func TestStateShowsNoToken(t *testing.T) {
	s := newTestServer(t, Config{Endpoint: "wss://127.0.0.1:1"})
	const token = "AQGAAXh-pasted-source-token"
	if code, msg := post(t, s, openRequest{Mode: "token", Token: token, Label: "dev1"}); code != http.StatusOK {
		t.Fatalf("paste = %d %q", code, msg)
	}
	tok, _ := tunnel.NewAccessToken(token)
	rec := call(s, http.MethodGet, "/api/state", nil)
	if body := rec.Body.String(); rec.Code != http.StatusOK || strings.Contains(body, token) || !strings.Contains(body, tok.Fingerprint()) {
		t.Errorf("GET /api/state = %d %s; want the token's fingerprint %s and not the token", rec.Code, body, tok.Fingerprint())
	}
}

// TestOpenBodyLimit: a request body over 64 KiB is refused, not read into
// memory whole.
func TestOpenBodyLimit(t *testing.T) {
	s := newTestServer(t, Config{Endpoint: "wss://127.0.0.1:1"})
	b, _ := json.Marshal(openRequest{Mode: "token", Token: "AQGAAXh-pasted", Label: strings.Repeat("d", 64<<10)})
	if rec := call(s, http.MethodPost, "/api/tunnels", b); rec.Code != http.StatusBadRequest {
		t.Errorf("POST /api/tunnels of %d bytes = %d %s, want 400", len(b), rec.Code, bytes.TrimSpace(rec.Body.Bytes()))
	}
	if n := len(s.tunnels.views()); n != 0 {
		t.Errorf("%d tunnels started, want 0", n)
	}
}

// TestPastedEndpoint: an endpoint the source side cannot use, which it would retry
// for ever, is refused at once: plain text (ws://) unless AllowInsecureWebSocket,
// and malformed endpoints and regions.
func TestPastedEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name             string
		insecure         bool
		endpoint, region string
		want             int
		wantText         string
	}{
		{"ws://", false, "ws://127.0.0.1:1", "", http.StatusBadRequest, "plain text"},
		{"WS://", false, "WS://127.0.0.1:1", "", http.StatusBadRequest, "plain text"},
		{"http://", false, "http://127.0.0.1:1", "", http.StatusBadRequest, "plain text"},
		{"ws:// with a region", false, "ws://127.0.0.1:1", "eu-west-1", http.StatusBadRequest, "plain text"},
		{"a path", false, "wss://127.0.0.1:1/tunnel", "", http.StatusBadRequest, "path"},
		{"another scheme", false, "ftp://127.0.0.1:1", "", http.StatusBadRequest, "want wss"},
		{"a bad region", false, "", "Not A Region", http.StatusBadRequest, "region"},
		{"wss://", false, "wss://127.0.0.1:1", "", http.StatusOK, ""},
		{"host:port", false, "127.0.0.1:1", "", http.StatusOK, ""},
		{"ws:// allowed", true, "ws://127.0.0.1:1", "", http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Config{AllowInsecureWebSocket: tc.insecure})
			code, msg := post(t, s, openRequest{Mode: "token", Token: "AQGAAXh-pasted", Label: "dev1", Endpoint: tc.endpoint, Region: tc.region})
			if code != tc.want || !strings.Contains(msg, tc.wantText) {
				t.Fatalf("paste with endpoint %q, region %q = %d %q, want %d %q", tc.endpoint, tc.region, code, msg, tc.want, tc.wantText)
			}
			started := len(s.tunnels.views())
			if want := map[bool]int{true: 1, false: 0}[code == http.StatusOK]; started != want {
				t.Fatalf("paste with endpoint %q: %d tunnels started, want %d", tc.endpoint, started, want)
			}
		})
	}
}

// TestConfigEndpoint: New refuses a plain-text Endpoint as the page refuses a
// pasted one.
func TestConfigEndpoint(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		insecure bool
		wantErr  string
	}{
		{"ws://127.0.0.1:1", false, "plain text"},
		{"http://127.0.0.1:1", false, "plain text"},
		{"ws://127.0.0.1:1", true, ""},
		{"wss://127.0.0.1:1", false, ""},
		{"", false, ""},
	} {
		s, err := New(Config{Endpoint: tc.endpoint, AllowInsecureWebSocket: tc.insecure})
		if s != nil {
			s.Close()
		}
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("New with Endpoint %q (insecure %v) = %v, want %q", tc.endpoint, tc.insecure, err, tc.wantErr)
		}
	}
}

// TestCloseLocally: when the service cannot be told to close a tunnel the console
// opened (DELETE answers 502), DELETE ?local=1 disconnects this console anyway,
// without asking the service, and the tunnel is still closed at the service when
// the console stops.
func TestCloseLocally(t *testing.T) {
	cp := &fakeControlPlane{closeErr: errors.New("fake: control plane unreachable")}
	s, err := New(Config{AccessToken: "the-access-token", ControlPlane: cp, Endpoint: "wss://127.0.0.1:1",
		closeTimeout: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})
	b, _ := json.Marshal(openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 5})
	rec := call(s, http.MethodPost, "/api/tunnels", b)
	var view tunnelView
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &view) != nil {
		t.Fatalf("open = %d %s", rec.Code, rec.Body)
	}
	del := func(query string) (int, tunnelView, string) {
		rec := call(s, http.MethodDelete, "/api/tunnels/"+view.ID+query, nil)
		var v tunnelView
		json.Unmarshal(rec.Body.Bytes(), &v)
		return rec.Code, v, rec.Body.String()
	}
	if code, _, body := del(""); code != http.StatusBadGateway || !strings.Contains(body, "unreachable") {
		t.Fatalf("close with the control plane down = %d %s, want 502 naming the error", code, body)
	}
	code, v, body := del("?local=1")
	if code != http.StatusOK || v.State != stateClosed {
		t.Fatalf("close locally = %d %s, want 200 and state %s", code, body, stateClosed)
	}
	if _, calls := cp.calls(); len(calls) != 1 {
		t.Errorf("CloseTunnel calls %q after closing locally, want only the failed one", calls)
	}
	s.Close()
	closed = true
	if _, calls := cp.calls(); !slices.Equal(calls, []string{"tunnel-dev1", "tunnel-dev1"}) {
		t.Errorf("CloseTunnel calls %q, want the failed one and one more at shutdown", calls)
	}
}

// TestOpenRefusesTrailingJSON: a body that is one JSON object and more is
// malformed: refused, and no tunnel started (the decoder read the first
// object and ignored the rest).
func TestOpenRefusesTrailingJSON(t *testing.T) {
	s := testServer(t)
	for _, body := range []string{
		`{"mode":"token","token":"AQGAAXh-pasted","label":"dev1","endpoint":"wss://127.0.0.1:1"} trailing garbage`,
		`{"mode":"token","token":"AQGAAXh-pasted","label":"dev1","endpoint":"wss://127.0.0.1:1"}{"mode":"open"}`,
	} {
		if rec := call(s, http.MethodPost, "/api/tunnels", []byte(body)); rec.Code != http.StatusBadRequest {
			t.Errorf("POST /api/tunnels %q = %d %s, want 400", body, rec.Code, bytes.TrimSpace(rec.Body.Bytes()))
		}
	}
	if n := len(s.tunnels.views()); n != 0 {
		t.Errorf("%d tunnels started from malformed JSON, want 0", n)
	}
}

// blockingControlPlane is a fakeControlPlane whose OpenTunnel waits for release.
type blockingControlPlane struct {
	fakeControlPlane
	entered, release chan struct{}
}

func (b *blockingControlPlane) OpenTunnel(ctx context.Context, thing string, services []string, lifetime time.Duration, attempt string) (string, tunnel.Token, error) {
	close(b.entered)
	<-b.release
	return b.fakeControlPlane.OpenTunnel(ctx, thing, services, lifetime, attempt)
}

// TestShutdownDuringOpen: a tunnel the control plane opens after the
// shutdown's deadline (its answer not cut short by the stop) is closed at the
// service too, before Shutdown returns; it stayed open, its device connected,
// for its lifetime.
func TestShutdownDuringOpen(t *testing.T) {
	cp := &blockingControlPlane{entered: make(chan struct{}), release: make(chan struct{})}
	s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1", closeTimeout: time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); s.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	b, _ := json.Marshal(openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 5})
	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, base+"/api/tunnels", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer the-access-token")
		req.Header.Set("Origin", base)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-cp.entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	go func() {
		<-ctx.Done()      // the shutdown's deadline passes while the POST waits
		close(cp.release) // the service opens the tunnel
	}()
	s.Shutdown(ctx)
	if opened, closed := cp.calls(); len(opened) != 1 || len(closed) != 1 {
		t.Errorf("tunnels opened %q and closed %q at the service when Shutdown returned; want one of each", opened, closed)
	}
	t.Logf("POST answered %d", <-answered)
	http.DefaultClient.CloseIdleConnections()
	<-served
}

// lostOpenPlane is a fakeControlPlane whose OpenTunnel opens the tunnel and
// loses its answer when its ctx ends (a call cut short after the request
// went), and whose search finds it.
type lostOpenPlane struct {
	*fakeControlPlane
	entered chan struct{}
}

func (p lostOpenPlane) OpenTunnel(ctx context.Context, thing string, services []string, lifetime time.Duration, attempt string) (string, tunnel.Token, error) {
	p.fakeControlPlane.OpenTunnel(ctx, thing, services, lifetime, attempt)
	close(p.entered)
	<-ctx.Done()
	return "", tunnel.Token{}, fmt.Errorf("OpenTunnel: %w", ctx.Err())
}

func (p lostOpenPlane) FindAttempt(ctx context.Context, thing, attempt string, since time.Time) ([]string, error) {
	return []string{"tunnel-" + thing}, nil
}

// TestShutdownWaitsForAnOpen: an open under way when the console shuts down
// is cut short, and Shutdown returns once what it may have opened is closed
// (here found by its tag): it returned at its ctx's end with the open still
// waiting for its answer, and porthole-console then exited, the tunnel left
// open, its device connected, for its lifetime.
func TestShutdownWaitsForAnOpen(t *testing.T) {
	cp := lostOpenPlane{&fakeControlPlane{}, make(chan struct{})}
	s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1", orphanTimeout: time.Second})
	answered := make(chan int, 1)
	go func() {
		code, msg := post(t, s, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 5})
		t.Logf("POST answered %d %q", code, msg)
		answered <- code
	}()
	<-cp.entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	s.Shutdown(ctx)
	// Not cut short, the open waits for its answer its whole 30 s, and the
	// search finds the tunnel all the same: only the time tells.
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("Shutdown took %v: the open under way was not cut short", took)
	}
	if _, closed := cp.calls(); !slices.Equal(closed, []string{"tunnel-dev1"}) {
		t.Errorf("when Shutdown returned, CloseTunnel calls %q, want the tunnel the open under way opened", closed)
	}
	<-answered
}

// TestOpenAfterShutdownRefused: an open that comes once the console's stop
// has begun (a request in flight on a kept-alive connection) is refused, and
// nothing is opened at the service: the stop waits only for the opens under
// way when it began.
func TestOpenAfterShutdownRefused(t *testing.T) {
	cp := &fakeControlPlane{}
	s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1"})
	s.Close()
	if code, msg := post(t, s, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 5}); code != http.StatusServiceUnavailable {
		t.Errorf("open after the stop = %d %q, want %d", code, msg, http.StatusServiceUnavailable)
	}
	if opened, _ := cp.calls(); len(opened) != 0 {
		t.Errorf("OpenTunnel calls %q after the stop, want none", opened)
	}
}

// closedAsStopped is a control plane whose first CloseTunnel closes the tunnel,
// and whose answer comes as the console's stop begins.
type closedAsStopped struct {
	*fakeControlPlane
	in chan struct{}
}

func (c closedAsStopped) CloseTunnel(ctx context.Context, id string) error {
	c.fakeControlPlane.CloseTunnel(ctx, id)
	if _, closed := c.calls(); len(closed) == 1 {
		close(c.in)
		<-ctx.Done()
	}
	return nil
}

// TestStrayClosedAsTheStopBegins: a retry's close that succeeded, its answer
// coming as the console stops, takes the tunnel out: the stop does not close
// it again, and the log says it was closed.
func TestStrayClosedAsTheStopBegins(t *testing.T) {
	cp := closedAsStopped{&fakeControlPlane{}, make(chan struct{})}
	logs := &syncBuffer{t: t}
	s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1", strayRetry: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	s.tunnels.closeLater("tunnel-dev1", "dev1", time.Hour)
	select {
	case <-cp.in:
	case <-time.After(10 * time.Second):
		t.Fatal("no retry in 10 s")
	}
	s.Close()
	if _, closed := cp.calls(); len(closed) != 1 {
		t.Errorf("CloseTunnel calls %q, want the retry's only: it closed the tunnel", closed)
	}
	if l := logs.String(); !strings.Contains(l, "tunnel closed at the service after an earlier close failed") {
		t.Errorf("logs do not say the retry closed the tunnel:\n%s", l)
	}
}
