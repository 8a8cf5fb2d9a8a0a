package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// lostAnswer turns the real answer to an OpenTunnel that opened a tunnel into
// what the console gets instead: the answer lost after the service acted.
type lostAnswer func(r *http.Request) (*http.Response, error)

var (
	// connectionCut: the connection drops while the answer is on its way.
	connectionCut lostAnswer = func(r *http.Request) (*http.Response, error) {
		return nil, errors.New("read tcp: connection reset by peer")
	}
	// proxyTimeout: a proxy in between gave up waiting for the service and
	// answers with its own page.
	proxyTimeout lostAnswer = proxyAnswer(http.StatusGatewayTimeout, "<html><body>504 Gateway Time-out</body></html>")
	// proxyPage4xx: a proxy's 4xx page, without the service's error body.
	proxyPage4xx lostAnswer = proxyAnswer(http.StatusRequestTimeout, "<html><body>408 Request Time-out</body></html>")
)

func proxyAnswer(code int, page string) lostAnswer {
	return func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"text/html"}}, Body: io.NopCloser(strings.NewReader(page)), Request: r}, nil
	}
}

// faultTransport carries the console's control-plane requests to a real
// tunneld, and loses the answer of an OpenTunnel that opened a tunnel (lose):
// it keeps the tunnel's id and source token for the test. meanwhile runs once
// the tunnel is open and before the console hears of the failure.
type faultTransport struct {
	rt        http.RoundTripper
	lose      lostAnswer
	meanwhile func()

	mu         sync.Mutex
	ops        []string // X-Amz-Target operations, in order
	lost       tunneld.OpenTunnelOutput
	throttled  int // the first throttled ListTunnels calls are refused with ThrottlingException
	closeFails int // the first closeFails CloseTunnel calls fail with the service's InternalServerException
}

func (f *faultTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "IoTSecuredTunneling.")
	f.mu.Lock()
	f.ops = append(f.ops, op)
	throttle := op == "ListTunnels" && f.throttled > 0
	if throttle {
		f.throttled--
	}
	failClose := op == "CloseTunnel" && f.closeFails > 0
	if failClose {
		f.closeFails--
	}
	f.mu.Unlock()
	switch {
	case failClose:
		return serviceError(r, http.StatusInternalServerError, `{"__type":"InternalServerException","message":"Internal failure"}`), nil
	case throttle:
		return serviceError(r, http.StatusBadRequest, `{"__type":"ThrottlingException","message":"Rate exceeded"}`), nil
	}
	resp, err := f.rt.RoundTrip(r)
	if err != nil || op != "OpenTunnel" || f.lose == nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var out tunneld.OpenTunnelOutput
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.lost = out
	f.mu.Unlock()
	if f.meanwhile != nil {
		f.meanwhile()
	}
	return f.lose(r)
}

// serviceError is the service's error answer to r: code and an AWS JSON body.
func serviceError(r *http.Request, code int, body string) *http.Response {
	resp, _ := proxyAnswer(code, body)(r)
	resp.Header.Set("Content-Type", "application/x-amz-json-1.1")
	return resp
}

func (f *faultTransport) calls() ([]string, tunneld.OpenTunnelOutput) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops), f.lost
}

// lostAnswerPlane is the in-process tunneld (TunneldServer) whose OpenTunnel
// times out after the server opened the tunnel.
type lostAnswerPlane struct {
	ControlPlane
	meanwhile func()

	mu    sync.Mutex
	lost  string
	token tunnel.Token
	finds int // FindAttempt calls
}

func (p *lostAnswerPlane) OpenTunnel(ctx context.Context, thing string, services []string, lifetime time.Duration, attempt string) (string, tunnel.Token, error) {
	id, tok, err := p.ControlPlane.OpenTunnel(ctx, thing, services, lifetime, attempt)
	if err != nil {
		return id, tok, err
	}
	p.mu.Lock()
	p.lost, p.token = id, tok
	p.mu.Unlock()
	if p.meanwhile != nil {
		p.meanwhile()
	}
	return "", tunnel.Token{}, fmt.Errorf("OpenTunnel: %w", context.DeadlineExceeded)
}

func (p *lostAnswerPlane) FindAttempt(ctx context.Context, thing, attempt string, since time.Time) ([]string, error) {
	p.mu.Lock()
	p.finds++
	p.mu.Unlock()
	return p.ControlPlane.FindAttempt(ctx, thing, attempt, since)
}

// orphanLab is a real tunneld, served over HTTP on loopback, and a console
// whose control plane is that tunneld, over HTTP through a faultTransport
// (ft) or in process through a lostAnswerPlane (lp).
type orphanLab struct {
	td      *tunneld.Server
	console *Server
	logs    *syncBuffer
	ft      *faultTransport
	lp      *lostAnswerPlane
}

// newOrphanLab starts the lab; with inProcess the console calls tunneld in
// process, else over HTTP losing OpenTunnel answers with lose.
func newOrphanLab(t *testing.T, tdCfg tunneld.Config, inProcess bool, lose lostAnswer) *orphanLab {
	t.Helper()
	l := &orphanLab{logs: &syncBuffer{t: t}}
	tdCfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	td, err := tunneld.New(tdCfg)
	if err != nil {
		t.Fatal(err)
	}
	l.td = td
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); td.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		td.Shutdown(ctx)
		<-served
	})
	var cp ControlPlane
	if inProcess {
		l.lp = &lostAnswerPlane{ControlPlane: TunneldServer(td)}
		cp = l.lp
	} else {
		l.ft = &faultTransport{rt: &http.Transport{DisableKeepAlives: true}, lose: lose}
		cp = &ControlPlaneAPI{URL: "http://" + ln.Addr().String(), Client: &http.Client{Transport: l.ft}}
	}
	// The console's Close runs before tunneld's Shutdown (cleanups run last
	// first).
	l.console = newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1", orphanTimeout: time.Second,
		closeTimeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(l.logs, nil))})
	return l
}

// setMeanwhile sets what runs between the open and the console's error.
func (l *orphanLab) setMeanwhile(f func()) {
	if l.lp != nil {
		l.lp.meanwhile = f
	} else {
		l.ft.meanwhile = f
	}
}

// lost returns the id and source token of the tunnel whose answer was lost.
func (l *orphanLab) lost() (string, string) {
	if l.lp != nil {
		l.lp.mu.Lock()
		defer l.lp.mu.Unlock()
		return l.lp.lost, l.lp.token.Reveal()
	}
	_, out := l.ft.calls()
	return out.TunnelID, out.SourceAccessToken
}

// searched reports whether the console looked for the tunnel: ListTunnels or
// DescribeTunnel over HTTP, FindAttempt in process.
func (l *orphanLab) searched() bool {
	if l.lp != nil {
		l.lp.mu.Lock()
		defer l.lp.mu.Unlock()
		return l.lp.finds > 0
	}
	ops, _ := l.ft.calls()
	return slices.Contains(ops, "ListTunnels") || slices.Contains(ops, "DescribeTunnel")
}

func (l *orphanLab) status(t *testing.T, id string) string {
	t.Helper()
	d, err := l.td.DescribeTunnel(context.Background(), &tunneld.DescribeTunnelInput{TunnelID: id})
	if err != nil {
		t.Fatalf("DescribeTunnel(%s): %v", id, err)
	}
	return d.Tunnel.Status
}

// openOther opens a tunnel to dev1 as someone else does, with tags.
func (l *orphanLab) openOther(t *testing.T, description string, tags ...tunneld.Tag) string {
	t.Helper()
	out, err := l.td.OpenTunnel(context.Background(), &tunneld.OpenTunnelInput{Description: description, Tags: tags,
		DestinationConfig: &tunneld.DestinationConfig{ThingName: "dev1", Services: []string{"SSH"}}})
	if err != nil {
		t.Fatal(err)
	}
	return out.TunnelID
}

// lostAnswerCases are the ways an OpenTunnel's answer is lost after the
// service opened the tunnel.
var lostAnswerCases = []struct {
	name      string
	inProcess bool
	lose      lostAnswer
	wantErr   string // in the page's error, as before the search
}{
	{"connection cut", false, connectionCut, "opening the tunnel: OpenTunnel: Post "},
	{"proxy's 504", false, proxyTimeout, "opening the tunnel: OpenTunnel: 504 Gateway Timeout : <html>"},
	{"proxy's 4xx page", false, proxyPage4xx, "opening the tunnel: OpenTunnel: 408 Request Timeout : <html>"},
	{"timeout in process", true, nil, "opening the tunnel: OpenTunnel: context deadline exceeded"},
}

// checkOrphanClosed checks that the console's answer keeps the open's error,
// says that the tunnel it opened was closed, and that it was, deleted not;
// and that no token reached the logs or the page.
func checkOrphanClosed(t *testing.T, l *orphanLab, code int, msg, wantErr string) {
	t.Helper()
	id, tok := l.lost()
	if id == "" {
		t.Fatal("the service opened no tunnel")
	}
	if code != http.StatusBadGateway || !strings.HasPrefix(msg, wantErr) {
		t.Errorf("open = %d %q, want 502 starting %q", code, msg, wantErr)
	}
	if !strings.Contains(msg, "opened the tunnel all the same ("+id+")") || !strings.Contains(msg, "closed") {
		t.Errorf("open's error %q does not say that tunnel %s was closed", msg, id)
	}
	if st := l.status(t, id); st != tunneld.StatusClosed {
		t.Errorf("the tunnel whose answer was lost is %s, want CLOSED (described: not deleted)", st)
	}
	if !strings.Contains(l.logs.String(), `msg="closed the tunnel the failed open left open"`) {
		t.Errorf("logs do not say the tunnel was closed:\n%s", l.logs)
	}
	if strings.Contains(l.logs.String(), tok) || strings.Contains(msg, tok) {
		t.Errorf("the source token reached the logs or the page")
	}
}

// TestOpenAnswerLostClosesTheTunnel: when OpenTunnel's answer is lost after the
// service opened the tunnel, the console finds it by its tag and closes it;
// else it stayed open with nobody to use or close it, its device connected and
// counted against the service's limit, for its lifetime.
func TestOpenAnswerLostClosesTheTunnel(t *testing.T) {
	for _, tc := range lostAnswerCases {
		t.Run(tc.name, func(t *testing.T) {
			l := newOrphanLab(t, tunneld.Config{}, tc.inProcess, tc.lose)
			code, msg := post(t, l.console, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 30})
			checkOrphanClosed(t, l, code, msg, tc.wantErr)
			if n := len(l.console.tunnels.views()); n != 0 {
				t.Errorf("%d tunnels started after a failed open, want 0", n)
			}
		})
	}
}

// TestOpenAnswerLostLeavesOthersOpen: tunnels opened for the same thing while
// the answer was lost, by someone else or by another console (the same
// description, a tag of another attempt), stay open: only the one of this
// attempt is closed.
func TestOpenAnswerLostLeavesOthersOpen(t *testing.T) {
	for _, tc := range lostAnswerCases {
		t.Run(tc.name, func(t *testing.T) {
			l := newOrphanLab(t, tunneld.Config{}, tc.inProcess, tc.lose)
			before := l.openOther(t, openDescription, tunneld.Tag{Key: attemptTagKey, Value: newAttempt()})
			var others []string
			l.setMeanwhile(func() {
				others = append(others,
					l.openOther(t, "an administrator's"),
					l.openOther(t, openDescription, tunneld.Tag{Key: attemptTagKey, Value: newAttempt()}),
					l.openOther(t, openDescription))
			})
			code, msg := post(t, l.console, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 30})
			checkOrphanClosed(t, l, code, msg, tc.wantErr)
			for _, id := range append(others, before) {
				if st := l.status(t, id); st != tunneld.StatusOpen {
					t.Errorf("tunnel %s, someone else's, is %s, want OPEN", id, st)
				}
			}
		})
	}
}

// TestOpenRefusedDoesNotSearch: the service's own refusal (a 4xx with its
// error body) opened nothing: the console does not look for a tunnel, and
// shows the refusal as it was. The limit of open tunnels refuses here; the
// tunnel that fills it stays open. A 4xx page without the service's error body
// (a proxy's) is no refusal: it is looked for and closed.
func TestOpenRefusedDoesNotSearch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inProcess bool
		want      string
	}{
		{"over HTTP", false, "opening the tunnel: OpenTunnel: 400 Bad Request LimitExceededException: 1 tunnels are open, the limit is 1"},
		{"in process", true, "opening the tunnel: tunneld: LimitExceededException: 1 tunnels are open, the limit is 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newOrphanLab(t, tunneld.Config{MaxOpenTunnels: 1}, tc.inProcess, connectionCut)
			full := l.openOther(t, openDescription)
			code, msg := post(t, l.console, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 30})
			if code != http.StatusBadGateway || msg != tc.want {
				t.Errorf("open = %d %q, want 502 %q and nothing more", code, msg, tc.want)
			}
			if l.searched() {
				t.Error("the console looked for a tunnel after the service's refusal")
			}
			if strings.Contains(l.logs.String(), "looking for a tunnel") {
				t.Errorf("logs say the console looked for a tunnel:\n%s", l.logs)
			}
			if st := l.status(t, full); st != tunneld.StatusOpen {
				t.Errorf("the open tunnel is %s, want OPEN", st)
			}
		})
	}
	t.Run("proxy's 4xx page", func(t *testing.T) {
		l := newOrphanLab(t, tunneld.Config{}, false, proxyPage4xx)
		code, msg := post(t, l.console, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 30})
		if !l.searched() {
			t.Error("the console did not look for the tunnel after a proxy's 4xx page")
		}
		checkOrphanClosed(t, l, code, msg, "opening the tunnel: OpenTunnel: 408 Request Timeout")
	})
}

// TestOpenNotSentDoesNotSearch: an OpenTunnel that never reached the service
// (its address refuses connections) opened nothing: the page has the error
// alone, at once, and the console does not look for a tunnel.
func TestOpenNotSentDoesNotSearch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logs := &syncBuffer{t: t}
	console := newTestServer(t, Config{ControlPlane: &ControlPlaneAPI{URL: "http://" + addr, Client: &http.Client{Transport: &http.Transport{}}},
		Endpoint: "wss://127.0.0.1:1", orphanTimeout: time.Second, closeTimeout: time.Second, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	code, msg := post(t, console, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 30})
	if code != http.StatusBadGateway || !strings.HasPrefix(msg, "opening the tunnel: OpenTunnel: Post ") || !strings.HasSuffix(msg, "connection refused") {
		t.Errorf("open = %d %q, want 502 with the refused connection and nothing more", code, msg)
	}
	if strings.Contains(logs.String(), "looking for a tunnel") {
		t.Errorf("logs say the console looked for a tunnel:\n%s", logs)
	}
}

// TestOrphanSearchRetriesWhenThrottled: the search's ListTunnels refused for
// its rate (ThrottlingException) is asked again, as is a search that found
// nothing yet, and the tunnel is found and closed.
func TestOrphanSearchRetriesWhenThrottled(t *testing.T) {
	l := newOrphanLab(t, tunneld.Config{}, false, connectionCut)
	l.ft.throttled = 2
	code, msg := post(t, l.console, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 30})
	checkOrphanClosed(t, l, code, msg, "opening the tunnel: OpenTunnel: Post ")
	if ops, _ := l.ft.calls(); slices.Index(ops, "DescribeTunnel") < 0 || strings.Count(strings.Join(ops, " "), "ListTunnels") < 3 {
		t.Errorf("control-plane calls %v, want ListTunnels asked again after two throttled ones", ops)
	}
}

// TestOrphanNotFoundNamesTheTag: a search that finds nothing says that a
// tunnel the service opens later stays open, and gives the attempt's tag to
// find it by.
func TestOrphanNotFoundNamesTheTag(t *testing.T) {
	l := newOrphanLab(t, tunneld.Config{}, false, connectionCut)
	l.setMeanwhile(func() {
		id, _ := l.lost()
		if err := l.td.CloseTunnel(context.Background(), &tunneld.CloseTunnelInput{TunnelID: id, Delete: true}); err != nil {
			t.Error(err)
		}
	})
	_, msg := post(t, l.console, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 30})
	if !regexp.MustCompile(`No tunnel of this attempt was found open at the service within 1s; if the service opens it later, it stays open until its lifetime ends \(its tag: porthole-console-attempt=[0-9a-f]{32}\)$`).MatchString(msg) {
		t.Errorf("open = %q, want it to say none was found, and the attempt's tag", msg)
	}
}

// TestOrphanCloseFailedIsClosedAtStop: a tunnel the failed open left open,
// found by its tag, whose CloseTunnel fails stays among the tunnels the
// console closes when it stops; the page and the log say so. Before, it was
// left open for its lifetime.
func TestOrphanCloseFailedIsClosedAtStop(t *testing.T) {
	l := newOrphanLab(t, tunneld.Config{}, false, connectionCut)
	l.ft.closeFails = 1
	_, msg := post(t, l.console, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 30})
	id, _ := l.lost()
	want := "The service had opened the tunnel all the same (" + id + "), and closing it failed (CloseTunnel: 500 Internal Server Error InternalServerException: Internal failure): " +
		"this console tries again to close it every minute and at its stop; till then it stays open at the service"
	if !strings.HasSuffix(msg, want) {
		t.Errorf("open = %q, want it to end %q", msg, want)
	}
	if st := l.status(t, id); st != tunneld.StatusOpen {
		t.Fatalf("the tunnel whose close failed is %s, want OPEN", st)
	}
	l.console.Close()
	if st := l.status(t, id); st != tunneld.StatusClosed {
		t.Errorf("after the console's stop the tunnel is %s, want CLOSED", st)
	}
	if !strings.Contains(l.logs.String(), "tunnel closed at shutdown") {
		t.Errorf("logs do not say the tunnel was closed at shutdown:\n%s", l.logs)
	}
}

// TestFindAttemptPages: the tunnel of an attempt is found on ListTunnels'
// second page (tunneld, as AWS, lists the newest first, 100 to a page), behind
// newer tunnels of the same thing that someone else opened.
func TestFindAttemptPages(t *testing.T) {
	for _, inProcess := range []bool{false, true} {
		t.Run(fmt.Sprintf("in process %v", inProcess), func(t *testing.T) {
			l := newOrphanLab(t, tunneld.Config{MaxOpenTunnels: 200}, inProcess, nil)
			since, attempt := time.Now(), newAttempt()
			want := l.openOther(t, openDescription, tunneld.Tag{Key: attemptTagKey, Value: attempt})
			for range 100 {
				l.openOther(t, "an administrator's")
			}
			ids, err := l.console.cfg.ControlPlane.FindAttempt(context.Background(), "dev1", attempt, since)
			if err != nil || !slices.Equal(ids, []string{want}) {
				t.Errorf("FindAttempt = %q, %v; want [%s]", ids, err, want)
			}
		})
	}
}

// foundPlane's search for an attempt finds the tunnels ids (the service acted
// on the lost request and on a retry of it).
type foundPlane struct {
	*fakeControlPlane
	ids []string
}

func (p foundPlane) FindAttempt(ctx context.Context, thing, attempt string, since time.Time) ([]string, error) {
	return p.ids, nil
}

// TestOrphanSearchFindsSeveral: when the search finds more than one tunnel, the
// page gives each its own outcome, not the last one's for all.
func TestOrphanSearchFindsSeveral(t *testing.T) {
	failed := errors.New("fake: CloseTunnel failed")
	for _, tc := range []struct {
		name    string
		answers []error // CloseTunnel's, for tunnel-a, tunnel-b, and tunnel-c if it is found
		want    string
	}{
		{"both closed", []error{nil, nil}, "The service had opened the tunnel all the same (tunnel-a, tunnel-b): it was found by this attempt's tag and closed"},
		{"gone and failing", []error{closeRefused("ResourceNotFoundException"), failed},
			"The service had opened 2 tunnels all the same (found by this attempt's tag): " +
				"tunnel-a: the service no longer has it; " +
				"closing tunnel-b failed (fake: CloseTunnel failed): this console tries again to close it every minute and at its stop; till then it stays open at the service"},
		{"one closed", []error{failed, nil},
			"The service had opened 2 tunnels all the same (found by this attempt's tag): " +
				"closing tunnel-a failed (fake: CloseTunnel failed): this console tries again to close it every minute and at its stop; till then it stays open at the service; " +
				"tunnel-b was closed"},
		{"two closed of three", []error{failed, nil, nil},
			"The service had opened 3 tunnels all the same (found by this attempt's tag): " +
				"closing tunnel-a failed (fake: CloseTunnel failed): this console tries again to close it every minute and at its stop; till then it stays open at the service; " +
				"tunnel-b, tunnel-c were closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := foundPlane{&fakeControlPlane{closeErrs: tc.answers}, []string{"tunnel-a", "tunnel-b", "tunnel-c"}[:len(tc.answers)]}
			s := newTestServer(t, Config{ControlPlane: cp, Endpoint: "wss://127.0.0.1:1"})
			if msg := s.closeAttempt(context.Background(), "dev1", "attempt-1", time.Now(), time.Hour); msg != tc.want {
				t.Errorf("closeAttempt says\n%q\nwant\n%q", msg, tc.want)
			}
		})
	}
}
