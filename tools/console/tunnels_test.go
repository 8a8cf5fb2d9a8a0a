package console

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// TestShutdownClosesOpenedTunnels: at shutdown the console closes at the service
// the tunnels it opened and has not closed, with a log line each; a tunnel it
// closed already is not closed again, and the tunnel of a pasted token, the
// administrator's, stays open.
func TestShutdownClosesOpenedTunnels(t *testing.T) {
	l := newTestLab(t, Config{}, "dev-open", "dev-closed", "dev-pasted")
	c := l.client()
	opened := l.openTunnel(c, "dev-open")
	closed := l.openTunnel(c, "dev-closed")
	l.api(c, http.MethodDelete, "/api/tunnels/"+closed.ID+"?forget=1", nil, nil, http.StatusOK)
	pasted, _, _ := l.pasteToken("dev-pasted", "dev-pasted")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l.console.Shutdown(ctx)

	for id, want := range map[string]string{opened.TunnelID: tunneld.StatusClosed, closed.TunnelID: tunneld.StatusClosed,
		pasted.TunnelID: tunneld.StatusOpen} {
		d, err := l.td.DescribeTunnel(context.Background(), &tunneld.DescribeTunnelInput{TunnelID: id})
		if err != nil {
			t.Fatal(err)
		}
		if d.Tunnel.Status != want {
			t.Errorf("tunnel %s after shutdown: %s, want %s", id, d.Tunnel.Status, want)
		}
	}
	logs := l.logs.String()
	var lines []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "at shutdown") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], `msg="tunnel closed at shutdown"`) ||
		!strings.Contains(lines[0], "tunnel_id="+opened.TunnelID) || !strings.Contains(lines[0], "thing=dev-open") {
		t.Errorf("shutdown logged %q, want one line: tunnel %s of dev-open closed", lines, opened.TunnelID)
	}
	for _, lt := range l.console.tunnels.list {
		if strings.Contains(logs, lt.spec.Token.Reveal()) {
			t.Errorf("the source token of %s reached the log", lt.spec.Thing)
		}
	}
}

// TestShutdownCloseBounded: closing the opened tunnels at shutdown takes at most
// closeTimeout in all, however slow the control plane, and a failure is logged.
func TestShutdownCloseBounded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cp     *fakeControlPlane
		ctx    time.Duration // Shutdown's; 0 means Close
		want   string
		within time.Duration
	}{
		// within: far above closeTimeout (a loaded machine), far below the fake's hang (for ever).
		{"hanging, Close", &fakeControlPlane{hang: true}, 0, "context deadline exceeded", 5 * time.Second},
		{"hanging, Shutdown", &fakeControlPlane{hang: true}, 200 * time.Millisecond, "context deadline exceeded", 5 * time.Second},
		{"refusing", &fakeControlPlane{closeErr: errors.New("fake: CloseTunnel refused")}, 0, "CloseTunnel refused", 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{t: t}
			s, err := New(Config{AccessToken: "the-access-token", ControlPlane: tc.cp, Endpoint: "wss://127.0.0.1:1",
				closeTimeout: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			for _, thing := range []string{"dev1", "dev2"} {
				if code, msg := post(t, s, openRequest{Mode: "open", Thing: thing, LifetimeMinutes: 5}); code != http.StatusOK {
					t.Fatalf("open %s = %d %q", thing, code, msg)
				}
			}
			start := time.Now()
			if tc.ctx == 0 {
				s.Close()
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), tc.ctx)
				s.Shutdown(ctx)
				cancel()
			}
			if d := time.Since(start); d > tc.within {
				t.Errorf("shutdown took %v, want at most %v", d, tc.within)
			}
			_, closed := tc.cp.calls()
			slices.Sort(closed)
			if !slices.Equal(closed, []string{"tunnel-dev1", "tunnel-dev2"}) {
				t.Errorf("CloseTunnel calls %q, want both tunnels", closed)
			}
			for _, thing := range []string{"dev1", "dev2"} {
				if n := strings.Count(logs.String(), `msg="closing a tunnel at shutdown" thing=`+thing+" tunnel_id=tunnel-"+thing); n != 1 {
					t.Errorf("%d failure lines for %s, want 1", n, thing)
				}
			}
			if !strings.Contains(logs.String(), tc.want) || strings.Contains(logs.String(), "source-token-of") {
				t.Errorf("logs %q: want %q and no token", logs, tc.want)
			}
		})
	}
}

// ctxControlPlane is a fakeControlPlane whose CloseTunnel fails, as an HTTP
// call does, when its ctx has ended.
type ctxControlPlane struct{ fakeControlPlane }

func (c *ctxControlPlane) CloseTunnel(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.fakeControlPlane.CloseTunnel(ctx, id)
}

// TestShutdownClosesTunnelsAfterItsDeadline: the tunnels the console opened are
// closed at the service within closeTimeout of their own, not what is left of
// Shutdown's ctx, which a request in flight may have used up: they stayed open,
// their devices connected, for their lifetime.
func TestShutdownClosesTunnelsAfterItsDeadline(t *testing.T) {
	logs := &syncBuffer{t: t}
	cp := &ctxControlPlane{}
	s, err := New(Config{AccessToken: "the-access-token", ControlPlane: cp, Endpoint: "wss://127.0.0.1:1",
		Vendor: standInVendor(), Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if code, msg := post(t, s, openRequest{Mode: "open", Thing: "dev1", LifetimeMinutes: 5}); code != http.StatusOK {
		t.Fatalf("open dev1 = %d %q", code, msg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // used up
	s.Shutdown(ctx)
	if !strings.Contains(logs.String(), `msg="tunnel closed at shutdown" thing=dev1`) {
		t.Errorf("Shutdown with an ended ctx did not close the tunnel at the service; logs:\n%s", logs)
	}
}

func TestCloseReason(t *testing.T) {
	for _, tc := range []struct {
		err     error
		stopped bool
		want    string
	}{
		{tunnel.ErrClosedByService, false, "closed by the service"},
		{fmt.Errorf("joining: %w", &tunnel.HandshakeError{StatusCode: 401, Body: "invalid token"}), false,
			"refused the access token (HTTP 401: invalid token): it is mistyped, already used by another client, or its tunnel is closed"},
		{errors.New("dial tcp: connection refused"), false, "dial tcp: connection refused"},
		{nil, true, "disconnected from this console"},
		{nil, false, "the tunnel ended"},
	} {
		if got := closeReason(tc.err, tc.stopped); !strings.Contains(got, tc.want) {
			t.Errorf("closeReason(%v, %v) = %q, want %q in it", tc.err, tc.stopped, got, tc.want)
		}
	}
}

// TestTunnelReadyOnlyWithTheDevice: a tunnel the console opened is "ready" only
// once the device's agent has joined it (DescribeTunnel's destination connection
// state), not as soon as the console's own source side has connected: till then it
// is "waiting" for the device, and says so. A pasted token's tunnel, whose device
// the console cannot see, is never "ready" either: it is "connected".
func TestTunnelReadyOnlyWithTheDevice(t *testing.T) {
	l := newTestLab(t, Config{}) // no device yet: the notification reaches nobody
	c := l.client()
	var opened tunnelView
	l.api(c, http.MethodPost, "/api/tunnels", openRequest{Mode: "open", Thing: "dev-late", Services: []string{"SSH"}, LifetimeMinutes: 5},
		&opened, http.StatusOK)
	view := func(id string) tunnelView {
		t.Helper()
		var st stateView
		l.api(c, http.MethodGet, "/api/state", nil, &st, http.StatusOK)
		for _, v := range st.Tunnels {
			if v.ID == id {
				return v
			}
		}
		t.Fatalf("tunnel %s not in %+v", id, st.Tunnels)
		return tunnelView{}
	}
	until := func(what string, f func(tunnelView) bool) tunnelView {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if v := view(opened.ID); f(v) {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: tunnel %+v", what, view(opened.ID))
			}
		}
	}
	// The console's side connects and learns the tunnel's services ...
	until("the source side connected", func(v tunnelView) bool { return len(v.Services) > 0 })
	d, err := l.td.DescribeTunnel(context.Background(), &tunneld.DescribeTunnelInput{TunnelID: opened.TunnelID})
	if err != nil || d.Tunnel.SourceConnectionState.Status != tunneld.StatusConnected ||
		d.Tunnel.DestinationConnectionState.Status != tunneld.StatusDisconnected {
		t.Fatalf("DescribeTunnel = %+v, %v; want the source connected and the destination not", d, err)
	}
	// ... which does not make the tunnel ready while the device is away.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if v := view(opened.ID); v.State == stateReady {
			t.Fatalf("tunnel %+v is ready, but its device has not joined it", v)
		}
	}
	if v := view(opened.ID); v.State != stateWaiting || !strings.Contains(v.Reason, "device") {
		t.Fatalf("tunnel %+v, want waiting for the device", v)
	}
	// The device joins (its agent gets a rotated token): now the tunnel is ready.
	l.addDevice("dev-late")
	if _, err := l.td.RotateTunnelAccessToken(context.Background(), &tunneld.RotateTunnelAccessTokenInput{
		TunnelID: opened.TunnelID, ClientMode: tunneld.ClientModeDestination}); err != nil {
		t.Fatal(err)
	}
	until("ready once the device joined", func(v tunnelView) bool { return v.State == stateReady })

	_, _, pasted := l.pasteToken("dev-late", "dev-late-pasted")
	opened = pasted
	v := until("the pasted token's source side connected", func(v tunnelView) bool { return len(v.Services) > 0 })
	if v.State != stateConnected || !strings.Contains(v.Reason, "device") {
		t.Fatalf("pasted tunnel %+v, want connected, with a reason about the device", v)
	}
}

// TestPastedTokenUnknownService: a pasted token's tunnel whose services do
// not include SSH (the page asks for the default service). The source side has
// the tunnel's services from SERVICE_IDS at once: the login should say at once
// that there is no such service, not wait a minute and then claim that the
// source side is not connected.
func TestPastedTokenUnknownService(t *testing.T) {
	l := newTestLab(t, Config{})
	out, err := l.td.OpenTunnel(context.Background(), &tunneld.OpenTunnelInput{
		DestinationConfig: &tunneld.DestinationConfig{ThingName: "dev-two", Services: []string{"HTTP", "SSH2"}}})
	if err != nil {
		t.Fatal(err)
	}
	c := l.client()
	var v tunnelView
	l.api(c, http.MethodPost, "/api/tunnels", openRequest{Mode: "token", Token: out.SourceAccessToken, Label: "dev-two",
		Endpoint: "ws://" + l.tdAddr}, &v, http.StatusOK)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var st stateView
		l.api(c, http.MethodGet, "/api/state", nil, &st, http.StatusOK)
		if len(st.Tunnels) == 1 && st.Tunnels[0].State == stateConnected && len(st.Tunnels[0].Services) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tunnel not connected: %+v", st.Tunnels)
		}
	}
	start := time.Now()
	w := l.terminal(loginRequest{Tunnel: v.ID, Auth: "key", Key: "operator key"})
	m := w.end()
	if took := time.Since(start); took > 5*time.Second || !strings.Contains(m.Text, `no service "SSH"`) {
		t.Fatalf("after %v: end %+v, want at once that the tunnel has no service \"SSH\"", took.Round(time.Second), m)
	}
}
