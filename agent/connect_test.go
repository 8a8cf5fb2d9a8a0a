package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

func mustAccessToken(t *testing.T, s string) tunnel.Token {
	t.Helper()
	tok, err := AccessToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestLockToken: while one holds the lock on an access token, a second lock on it
// fails with a usage error naming the holder's pid; the lock of another token is
// free, and unlocking leaves no file.
func TestLockToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "client-tokens")
	a, b := mustAccessToken(t, "token-a"), mustAccessToken(t, "token-b")
	unlock, err := lockToken(t.Context(), dir, a, 0)
	if err != nil {
		t.Fatalf("lockToken(a) = %v", err)
	}
	_, err = lockToken(t.Context(), dir, a, 0)
	want := "another porthole connect (pid " + strconv.Itoa(os.Getpid()) + ") is using this token"
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lockToken(a) = %v, want a usage error with %q", err, want)
	}
	unlockB, err := lockToken(t.Context(), dir, b, 0)
	if err != nil {
		t.Fatalf("lockToken(b) while a is locked = %v", err)
	}
	unlockB()
	unlock()
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Fatalf("unlocking left %v", left)
	}
	unlock, err = lockToken(t.Context(), dir, a, 0)
	if err != nil {
		t.Fatalf("lockToken(a) after unlock = %v", err)
	}

	// A holder on its way out is waited for, up to the wait given.
	time.AfterFunc(100*time.Millisecond, unlock)
	unlock, err = lockToken(t.Context(), dir, a, 10*time.Second)
	if err != nil {
		t.Fatalf("lockToken(a) while its holder lets go = %v", err)
	}
	unlock()
}

// TestLockTokenRace: of many concurrent lockers of one token, at most one holds
// it at a time, even as holders unlock (remove the file) meanwhile.
func TestLockTokenRace(t *testing.T) {
	dir := t.TempDir()
	a := mustAccessToken(t, "token-a")
	var mu sync.Mutex
	holders := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				unlock, err := lockToken(t.Context(), dir, a, 0)
				if errors.Is(err, ErrUsage) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				holders++
				if holders > 1 {
					t.Error("two holders of one lock")
				}
				mu.Unlock()
				time.Sleep(50 * time.Microsecond) // hold it while others try
				mu.Lock()
				holders--
				mu.Unlock()
				unlock()
			}
		})
	}
	wg.Wait()
}

// TestClientTokenCachePrune: saving a client token removes what the cache holds
// for tunnels that ended more than a day ago, keeps what is newer, and keeps a
// lock file that is held however old.
func TestClientTokenCachePrune(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-clientTokenMaxAge - time.Hour)
	recent := time.Now().Add(-clientTokenMaxAge + time.Hour)
	write := func(name string, mtime time.Time) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	held := mustAccessToken(t, "held")
	unlock, err := lockToken(t.Context(), dir, held, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	heldLock := tokenKey(held.Reveal()) + tokenLockSuffix
	os.Chtimes(filepath.Join(dir, heldLock), old, old)
	write("0123456789abcdef01234567", old)                 // a client token of an ended tunnel
	write("0123456789abcdef0123456a", recent)              // one of a tunnel that may be open
	write(".0123456789abcdef0123456a.tmp42", old)          // a crashed write's
	write("0123456789abcdef0123456b"+tokenLockSuffix, old) // a killed connect's

	access := mustAccessToken(t, "new")
	if err := saveClientToken(dir, access, tunnel.GenerateClientToken()); err != nil {
		t.Fatal(err)
	}
	var got []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{"0123456789abcdef0123456a", heldLock, tokenKey(access.Reveal())}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("cache after saving holds %q, want %q", got, want)
	}
	for _, name := range want {
		fi, _ := os.Stat(filepath.Join(dir, name))
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	if ct, cached, err := cachedClientToken(dir, access); !cached || ct.IsZero() || err != nil {
		t.Fatalf("cachedClientToken after save = %v, %v, %v", ct, cached, err)
	}
	// Not cached yet: a new one, no error. There but unreadable (out of
	// descriptors, EIO; a directory stands in): the error, which connect
	// warns of, since the new token differs from the one the service holds.
	other := mustAccessToken(t, "another-source-token")
	if ct, cached, err := cachedClientToken(dir, other); cached || ct.IsZero() || err != nil {
		t.Fatalf("cachedClientToken of a token not kept = %v, %v, %v; want a new one", ct, cached, err)
	}
	if err := os.Mkdir(filepath.Join(dir, tokenKey(other.Reveal())), 0o700); err != nil {
		t.Fatal(err)
	}
	if ct, cached, err := cachedClientToken(dir, other); cached || ct.IsZero() || err == nil {
		t.Fatalf("cachedClientToken of an unreadable entry = %v, %v, %v; want a new one and the error", ct, cached, err)
	}
}

// TestConnectStdioWithListen: Connect refuses --stdio with -L (RunStdio would
// ignore -L), before it dials.
func TestConnectStdioWithListen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := Connect(ctx, ConnectConfig{
		Tunnel: tunnel.Config{Endpoint: "ws://127.0.0.1:1", AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, "t")},
		Listen: map[string]string{"SSH": "127.0.0.1:0"}, Stdio: "SSH", Stdin: strings.NewReader(""), Stdout: io.Discard,
	})
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "give either -L or --stdio, not both") {
		t.Fatalf("Connect with Stdio and Listen = %v, want a usage error", err)
	}
}

// lineWriter calls seen with each log line written.
type lineWriter func(string)

func (w lineWriter) Write(p []byte) (int, error) { w(string(p)); return len(p), nil }

// TestConnectLogsEndpointOfRegion: with a region, the "connecting" line names the
// region's endpoint host under endpoint=, not the region.
func TestConnectLogsEndpointOfRegion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	var line string
	log := slog.New(slog.NewTextHandler(lineWriter(func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(s, "msg=connecting") && line == "" {
			line = s
			cancel() // no need to reach it
		}
	}), nil))
	Connect(ctx, ConnectConfig{
		Tunnel: tunnel.Config{Region: "xx-nowhere-9", AccessToken: mustAccessToken(t, "t"),
			Proxy: func(*url.URL) (*url.URL, error) { return nil, errors.New("no network in this test") }},
		Listen: map[string]string{"SSH": "127.0.0.1:0"}, Logger: log,
	})
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(line, "endpoint=data.tunneling.iot.xx-nowhere-9.amazonaws.com") {
		t.Fatalf("connecting line %q, want endpoint=data.tunneling.iot.xx-nowhere-9.amazonaws.com", line)
	}
}

// floodTunnel: a tunnel whose destination's SSH target writes without end.
func floodTunnel(t *testing.T) (*tunneltest.Server, *tunneltest.Tunnel) {
	return tunneltest.ConnectedTunnel(t, "SSH", tunneltest.ServeTCP(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}))
}

// TestConnectStdioCtrlC: Ctrl-C (ctx) ends porthole connect --stdio, with the
// process reading its stdout (ssh) reading on, and when it has stopped reading.
func TestConnectStdioCtrlC(t *testing.T) {
	for _, reading := range []bool{true, false} {
		srv, tun := floodTunnel(t)
		inR, inW := io.Pipe()
		defer inW.Close()
		outR, outW := io.Pipe()
		defer outR.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- Connect(ctx, ConnectConfig{
				Tunnel: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, tun.SourceToken)},
				Stdio:  "SSH", Stdin: inR, Stdout: outW, Logger: slog.New(slog.NewTextHandler(tbLog{t}, nil)),
			})
		}()
		if _, err := io.ReadFull(outR, make([]byte, 100<<10)); err != nil {
			t.Fatal(err)
		}
		if reading {
			go io.Copy(io.Discard, outR)
		}
		cancel()
		select {
		case err := <-done:
			t.Logf("stdout read %v: Connect = %v", reading, err)
		case <-time.After(5 * time.Second):
			outR.Close() // let it go
			<-done
			t.Fatalf("stdout read %v: Connect did not return within 5 s of Ctrl-C", reading)
		}
	}
}

// TestConnectListenCtrlCWhileClientBlocked: same with -L and a local client
// that does not read.
func TestConnectListenCtrlCWhileClientBlocked(t *testing.T) {
	srv, tun := floodTunnel(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().String()
	ln.Close()
	done := make(chan error, 1)
	go func() {
		done <- Connect(ctx, ConnectConfig{
			Tunnel: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, tun.SourceToken)},
			Listen: map[string]string{"SSH": port}, Logger: slog.New(slog.NewTextHandler(tbLog{t}, nil)),
		})
	}()
	var c net.Conn
	var err error
	for i := 0; i < 100; i++ {
		if c, err = net.Dial("tcp", port); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 100<<10)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // buffers fill
	cancel()
	select {
	case err := <-done:
		t.Logf("Connect = %v", err)
	case <-time.After(5 * time.Second):
		c.Close()
		<-done
		t.Fatal("Connect did not return within 5 s of Ctrl-C while the local client did not read")
	}
}

// FuzzAccessToken checks an access token as it comes from --token, a token
// file or the environment: one that is taken is the input without the white
// space and byte order mark around it, and an error never repeats the token.
func FuzzAccessToken(f *testing.F) {
	for _, s := range []string{"AQGAAXh0token\n", "\ufeffAQGA tok\r\n", `"AQGAAXh0"`, "", " \t\n", "tok\x00en", strings.Repeat("a", 4097), "\ufeff\ufeffx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := AccessToken(s)
		core := trimToken(s)
		if err != nil {
			if len(core) >= 8 && strings.Contains(err.Error(), core) {
				t.Fatalf("AccessToken(%q) error %q repeats the token", s, err)
			}
			return
		}
		got := tok.Reveal()
		if got != core || got == "" || strings.TrimSpace(got) != got || strings.HasPrefix(got, "\ufeff") && got != strings.TrimSpace(got) {
			t.Fatalf("AccessToken(%q) = %q", s, got)
		}
		if strings.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("AccessToken(%q) took a control character: %q", s, got)
		}
		if str := fmt.Sprint(tok); len(got) >= 8 && strings.Contains(str, got) {
			t.Fatalf("Token prints itself: %s", str)
		}
	})
}

// TestConnectLeavesAPathThatDied: porthole connect closes a connection whose
// service answered pings and then fell silent (the laptop slept, or moved to
// another network), saying why; --stdio ends with it. It waited for the
// kernel to give up on the pings, some 15 minutes, without a word.
func TestConnectLeavesAPathThatDied(t *testing.T) {
	defer func(d time.Duration) { connectPongTimeout = d }(connectPongTimeout)
	connectPongTimeout = 400 * time.Millisecond
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	inR, inW := io.Pipe()
	defer inW.Close()
	done := make(chan error, 1)
	go func() {
		done <- Connect(context.Background(), ConnectConfig{
			Tunnel: tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: mustAccessToken(t, tun.SourceToken),
				PingInterval: 50 * time.Millisecond},
			Stdio: "SSH", Stdin: inR, Stdout: io.Discard, Logger: slog.New(slog.NewTextHandler(tbLog{t}, nil)),
		})
	}()
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Source, 1); err != nil {
		t.Fatal(err)
	}
	// A pong has come: before it, silence is the service's right (spec §3.7).
	for deadline := time.Now().Add(30 * time.Second); tun.Pongs() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no pong within 30 s of pings every 50 ms")
		}
	}
	tun.SetPong(false)
	select {
	case err := <-done:
		if !errors.Is(err, tunnel.ErrSilent) {
			t.Fatalf("Connect = %v, want it to end for the silent service (tunnel.ErrSilent)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Connect kept a connection 10 s after its service stopped answering pings")
	}
}
