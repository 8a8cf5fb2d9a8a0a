package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// TestConnectBadCAFile: a --ca-file that is missing or holds no certificate ends
// Connect at once with a usage error, before it listens (it retried forever, with
// the -L ports open, before).
func TestConnectBadCAFile(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate\n"), 0o600)
	for _, tc := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "missing.pem"), "no such file"},
		{"not PEM", garbage, "no PEM certificate found in " + garbage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := Connect(ctx, ConnectConfig{
				Tunnel: tunnel.Config{Endpoint: "127.0.0.1:1", AccessToken: mustAccessToken(t, "t"), CAFile: tc.path,
					RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond},
				Listen: map[string]string{"SSH": "127.0.0.1:0"}, Logger: slog.New(slog.NewTextHandler(tbLog{t}, nil)),
			})
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--ca-file") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect with --ca-file %s = %v, want a usage error saying %q", tc.path, err, tc.want)
			}
			if ctx.Err() != nil {
				t.Fatal("Connect waited for its context")
			}
		})
	}
}

// tbLog writes log lines to t.Log.
type tbLog struct{ t *testing.T }

func (w tbLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func fakeService(t *testing.T, services ...string) (*tunneltest.Server, *tunneltest.Tunnel) {
	srv := tunneltest.NewServer(t)
	srv.Logf = t.Logf
	return srv, srv.OpenTunnel(services...)
}

// TestConnectStdioUnnamedOnSeveralServices: --stdio - on a tunnel of several
// services asks for a service by name and lists the tunnel's (it named an empty
// service before).
func TestConnectStdioUnnamedOnSeveralServices(t *testing.T) {
	srv, tun := fakeService(t, "SSH", "WEB")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inR, inW := io.Pipe()
	defer inW.Close()
	err := Connect(ctx, ConnectConfig{
		Tunnel: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, tun.SourceToken)},
		Stdio:  "-", Stdin: inR, Stdout: io.Discard, Logger: slog.New(slog.NewTextHandler(tbLog{t}, nil)),
	})
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), `one-service tunnel; it has ["SSH" "WEB"]`) ||
		!strings.Contains(err.Error(), "--stdio SERVICE") {
		t.Fatalf("Connect --stdio - on SSH and WEB = %v, want a usage error asking for --stdio SERVICE", err)
	}
}

func TestRefusalHint(t *testing.T) {
	const inUse = "Invalid client token: The provided client token is already in use."
	const env = "AWSIOT_TUNNEL_CLIENT_TOKEN"
	for _, tc := range []struct{ body, from, want, not string }{
		{dataplane.BodyTokenUsed, "", "rotate-tunnel-access-token --tunnel-id ID --client-mode SOURCE", ""},
		{dataplane.BodyClientTokenMismatch, "", "another source", ""},
		{dataplane.BodyClientTokenMismatch, env, "than the one in " + env + ": by a porthole connect without it", ""},
		// Unique across open tunnels (spec §2.1): a new access token does not help.
		{inUse, "", "use one client token per tunnel", "rotate"},
		{inUse, env, "or unset " + env, "rotate"},
		{"Invalid access token: The tunnel is closed.", "", "open a new one", ""},
		{"Invalid local-proxy-mode: the access token is for destination mode", "", "sourceAccessToken", ""},
		{"Invalid access token: The access token is not valid.", "", "another region", ""},
		// A rotation while the laptop slept: the new token is the remedy.
		{"Invalid access token: The access token is not valid.", "", "the token rotated (use the one the rotation gave)", ""},
		{"", "", "--client-mode SOURCE (ID: from aws iotsecuretunneling list-tunnels)", ""},
	} {
		got := refusalHint(&tunnel.HandshakeError{StatusCode: 400, Body: tc.body}, tc.from, "--region or --endpoint")
		if !strings.Contains(got, tc.want) || tc.not != "" && strings.Contains(got, tc.not) {
			t.Errorf("refusalHint(400 %q, %q) = %q, want it to say %q and not %q", tc.body, tc.from, got, tc.want, tc.not)
		}
	}
	// Not a refused token: the endpoint is no tunneling service.
	for _, code := range []int{200, 301, 404} {
		if got := refusalHint(&tunnel.HandshakeError{StatusCode: code, Body: "Invalid access token"}, "", "--region or --endpoint"); !strings.Contains(got, fmt.Sprintf("answered HTTP %d instead of a tunnel", code)) ||
			strings.Contains(got, "rotate") {
			t.Errorf("refusalHint(%d) = %q, want it to doubt the endpoint, not the token", code, got)
		}
	}
	// An endpoint or region from the environment is named as the variable:
	// one left from another session is mended by unsetting it.
	const region = "AWSIOT_TUNNEL_REGION"
	for _, tc := range []struct {
		code int
		body string
	}{{404, ""}, {400, "Invalid access token: The access token is not valid."}, {400, ""}} {
		if got := refusalHint(&tunnel.HandshakeError{StatusCode: tc.code, Body: tc.body}, "", region); !strings.Contains(got, region) || strings.Contains(got, "--region") {
			t.Errorf("refusalHint(%d %q) with the region from %s = %q, want it to name the variable, not the flags", tc.code, tc.body, region, got)
		}
	}
}

// TestConnectRefusedSaysWhatToDo: a 4xx from the service ends Connect with the
// service's words and the developer guide's remedy, and no token.
func TestConnectRefusedSaysWhatToDo(t *testing.T) {
	srv, tun := fakeService(t, "SSH")
	srv.FailHandshakes(1, 400, dataplane.BodyClientTokenMismatch)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := tunnel.GenerateClientToken()
	err := Connect(ctx, ConnectConfig{
		Tunnel: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, tun.SourceToken), ClientToken: client},
		Listen: map[string]string{"SSH": "127.0.0.1:0"}, Logger: slog.New(slog.NewTextHandler(tbLog{t}, nil)),
	})
	if err == nil || !strings.Contains(err.Error(), dataplane.BodyClientTokenMismatch) ||
		!strings.Contains(err.Error(), "rotate-tunnel-access-token --tunnel-id ID --client-mode SOURCE") {
		t.Fatalf("Connect refused = %v, want the body and the remedy", err)
	}
	if strings.Contains(err.Error(), tun.SourceToken) || strings.Contains(err.Error(), client.Reveal()) {
		t.Fatalf("Connect's error shows a token: %v", err)
	}
}

// TestConnectClosedByService: when the service ends the tunnel connection, Connect
// says what may have caused it, a rotated token among them.
func TestConnectClosedByService(t *testing.T) {
	srv, tun := fakeService(t, "SSH")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	up := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- Connect(ctx, ConnectConfig{
			Tunnel: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, tun.SourceToken),
				OnState: func(connected bool, _ error) {
					if connected {
						select {
						case up <- struct{}{}:
						default:
						}
					}
				}},
			Listen: map[string]string{"SSH": "127.0.0.1:0"}, Logger: slog.New(slog.NewTextHandler(tbLog{t}, nil)),
		})
	}()
	select {
	case <-up:
	case err := <-errc:
		t.Fatalf("Connect ended before it connected: %v", err)
	}
	tun.Close()
	err := <-errc
	if !errors.Is(err, tunnel.ErrClosedByService) || !strings.Contains(err.Error(), "closed or expired, or its source token was rotated") {
		t.Fatalf("Connect after CloseTunnel = %v, want ErrClosedByService naming closing, expiry and rotation", err)
	}
}

// TestConnectSaysItKeepsTrying: when the service cannot be reached, Connect keeps
// trying as localproxy does, and says so once, with how to stop it.
func TestConnectSaysItKeepsTrying(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers there now
	var logged testlog.Lines
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Connect(ctx, ConnectConfig{
			Tunnel: tunnel.Config{Endpoint: "ws://" + addr, AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, "t"),
				RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond},
			Listen: map[string]string{"SSH": "127.0.0.1:0"}, Logger: slog.New(slog.NewTextHandler(&logged, nil)),
		})
	}()
	for logged.Count("cannot connect to the tunnel, retrying") < 3 {
		if ctx.Err() != nil {
			t.Fatalf("Connect did not retry:\n%s", logged.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Connect = %v after cancel, want nil", err)
	}
	if n := logged.Count("keeps trying until it connects"); n != 1 || logged.Count("Ctrl-C") != 1 {
		t.Fatalf("Connect said %d times that it keeps trying, want once, with how to stop:\n%s", n, logged.String())
	}
}

// TestConnectCtrlCDuringHandshakeKeepsClientToken: a run stopped while the
// service was taking its handshake keeps its client token, so that the next
// run, with the same one, gets in. The token was kept only once the run knew
// it had connected, so the service held a client token nobody had, and every
// later run was refused until the source token was rotated.
func TestConnectCtrlCDuringHandshakeKeepsClientToken(t *testing.T) {
	srv, tun := fakeService(t, "SSH")
	admitted, release := make(chan struct{}), make(chan struct{})
	srv.Handler().OnFirstUse = func(*dataplane.Tunnel) error {
		close(admitted) // the first use only
		<-release
		return nil
	}
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	cc := ConnectConfig{
		Tunnel:        tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, tun.SourceToken)},
		TokenCacheDir: filepath.Join(t.TempDir(), "client-tokens"),
		Listen:        map[string]string{"SSH": "127.0.0.1:0"}, Logger: slog.New(slog.NewTextHandler(tbLog{t}, nil)),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Connect(first, cc) }()
	select {
	case <-admitted:
	case err := <-done:
		t.Fatalf("the first run ended before its handshake was taken: %v", err)
	}
	stop() // Ctrl-C, the 101 not yet sent
	if err := <-done; err != nil {
		t.Fatalf("the first run, stopped: %v, want nil", err)
	}
	close(release)

	up := make(chan struct{})
	cc.Tunnel.OnState = func(connected bool, _ error) {
		if connected {
			select {
			case <-up:
			default:
				close(up)
			}
		}
	}
	second, stop := context.WithCancel(ctx)
	defer stop()
	go func() { done <- Connect(second, cc) }()
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("the next run: %v, want it connected", err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("the next run, stopped: %v, want nil", err)
	}
}
