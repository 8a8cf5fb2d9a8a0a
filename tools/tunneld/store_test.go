package tunneld

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/tools/internal/atomicfile"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// dialWS performs a data-plane handshake; it returns the connection (closed at the
// end of the test) or the refusal.
func dialWS(t *testing.T, addr, mode, token, clientToken string) (*websocket.Conn, int, string) {
	t.Helper()
	h := http.Header{"access-token": {token}}
	if clientToken != "" {
		h.Set("client-token", clientToken)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws://"+addr+"/tunnel?local-proxy-mode="+mode, &websocket.DialOptions{
		HTTPHeader: h, Subprotocols: []string{dataplane.SubprotocolV3}})
	if err != nil {
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		return nil, resp.StatusCode, string(b)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws, http.StatusSwitchingProtocols, ""
}

func TestStateSurvivesRestart(t *testing.T) {
	const ct = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	dir := t.TempDir()
	ts := startServer(t, Config{DataDir: dir})
	a := ts.open(t, "dev1", "SSH")
	b := ts.open(t, "dev2", "WEB")
	if err := ts.TagResource(context.Background(), &TagResourceInput{ResourceArn: a.TunnelArn, Tags: []Tag{{"k", "v"}}}); err != nil {
		t.Fatal(err)
	}
	if err := ts.CloseTunnel(context.Background(), &CloseTunnelInput{TunnelID: b.TunnelID}); err != nil {
		t.Fatal(err)
	}
	// The destination consumes its token with a client token; the source's stays fresh.
	if _, status, body := dialWS(t, ts.addr, "destination", a.DestinationAccessToken, ct); status != 101 {
		t.Fatalf("destination: %d %s", status, body)
	}
	eventuallyTrue(t, func() bool { return ts.Dataplane(a.TunnelID).Connected(dataplane.Destination) })
	ts.shutdown(t)

	fi, err := os.Stat(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}

	ts = startServer(t, Config{DataDir: dir})
	ctx := context.Background()
	da, err := ts.DescribeTunnel(ctx, &DescribeTunnelInput{TunnelID: a.TunnelID})
	if err != nil {
		t.Fatal(err)
	}
	if da.Tunnel.Status != StatusOpen || da.Tunnel.DestinationConfig.ThingName != "dev1" || len(da.Tunnel.Tags) != 1 ||
		da.Tunnel.DestinationConnectionState.Status != StatusDisconnected {
		t.Errorf("restored tunnel = %+v", da.Tunnel)
	}
	if db, err := ts.DescribeTunnel(ctx, &DescribeTunnelInput{TunnelID: b.TunnelID}); err != nil || db.Tunnel.Status != StatusClosed {
		t.Errorf("restored closed tunnel: %v, %v", db, err)
	}
	// Tokens keep their state: the used one needs its client token, the fresh one works.
	if _, status, body := dialWS(t, ts.addr, "destination", a.DestinationAccessToken, ""); status != 400 || body != dataplane.BodyTokenUsed {
		t.Errorf("used token without client token after restart: %d %q", status, body)
	}
	if _, status, body := dialWS(t, ts.addr, "destination", a.DestinationAccessToken, ct); status != 101 {
		t.Errorf("reconnect with the client token after restart: %d %q", status, body)
	}
	if _, status, body := dialWS(t, ts.addr, "source", a.SourceAccessToken, ""); status != 101 {
		t.Errorf("fresh source token after restart: %d %q", status, body)
	}
	if _, status, body := dialWS(t, ts.addr, "source", b.SourceAccessToken, ""); status != 400 {
		t.Errorf("closed tunnel's token after restart: %d %q, want 400", status, body)
	}
}

func TestCorruptStateIsAnError(t *testing.T) {
	dir := t.TempDir()
	for _, body := range []string{"{", `{"version":2,"tunnels":[]}`, `{"version":1,"tunnels":[{"id":""}]}`} {
		if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := New(Config{DataDir: dir}); err == nil {
			s.Close()
			t.Errorf("New with state %q succeeded, want an error", body)
		}
	}
}

func TestExpiryAndRetention(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)}
	ts := startServer(t, Config{now: clock.now, tick: time.Hour})
	out, err := ts.OpenTunnel(context.Background(), &OpenTunnelInput{
		DestinationConfig: &DestinationConfig{Services: []string{"SSH"}},
		TimeoutConfig:     &TimeoutConfig{MaxLifetimeTimeoutMinutes: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	ws, status, body := dialWS(t, ts.addr, "source", out.SourceAccessToken, "")
	if status != 101 {
		t.Fatalf("source: %d %s", status, body)
	}
	clock.advance(59 * time.Second)
	ts.sweep()
	if ts.Dataplane(out.TunnelID) == nil {
		t.Fatal("tunnel closed before its lifetime")
	}
	clock.advance(time.Second)
	ts.sweep()
	d, _ := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID})
	if d.Tunnel.Status != StatusClosed || !d.Tunnel.LastUpdatedAt.Equal(clock.now()) {
		t.Errorf("after the lifetime: %s at %v, want CLOSED at %v", d.Tunnel.Status, d.Tunnel.LastUpdatedAt, clock.now())
	}
	// The source got a Close frame, 1000 "tunnel expired".
	for {
		if _, _, err := ws.Read(context.Background()); err != nil {
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Errorf("source connection ended with %v, want a Close frame 1000", err)
			}
			break
		}
	}
	clock.advance(3*time.Hour - time.Second)
	ts.sweep()
	if _, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID}); err != nil {
		t.Errorf("closed tunnel gone before 3 h: %v", err)
	}
	clock.advance(time.Second)
	ts.sweep()
	if _, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID}); !IsNotFound(err) {
		t.Errorf("closed tunnel after 3 h: %v, want ResourceNotFoundException", err)
	}
}

// A tunnel's lifetime ends when it says, not at the janitor's next round: a
// handshake, DescribeTunnel, ListTunnels and RotateTunnelAccessToken after it
// find the tunnel closed, even if the janitor has not run since.
func TestExpiryBetweenSweeps(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)}
	ts := startServer(t, Config{now: clock.now, tick: time.Hour})
	open := func() *OpenTunnelOutput {
		out, err := ts.OpenTunnel(context.Background(), &OpenTunnelInput{
			DestinationConfig: &DestinationConfig{Services: []string{"SSH"}},
			TimeoutConfig:     &TimeoutConfig{MaxLifetimeTimeoutMinutes: 1},
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b, c := open(), open(), open()
	clock.advance(time.Minute)

	if _, status, body := dialWS(t, ts.addr, "source", a.SourceAccessToken, ""); status == 101 {
		t.Errorf("handshake after the lifetime: %d %s, want refused", status, body)
	}
	if d, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: b.TunnelID}); err != nil {
		t.Error(err)
	} else if d.Tunnel.Status != StatusClosed {
		t.Errorf("DescribeTunnel after the lifetime: %s, want CLOSED", d.Tunnel.Status)
	}
	if l, err := ts.ListTunnels(context.Background(), &ListTunnelsInput{}); err != nil {
		t.Error(err)
	} else {
		for _, s := range l.TunnelSummaries {
			if s.Status != StatusClosed {
				t.Errorf("ListTunnels after the lifetime: %s is %s, want CLOSED", s.TunnelID, s.Status)
			}
		}
	}
	if _, err := ts.RotateTunnelAccessToken(context.Background(), &RotateTunnelAccessTokenInput{TunnelID: c.TunnelID, ClientMode: "SOURCE"}); err == nil {
		t.Error("RotateTunnelAccessToken after the lifetime succeeded, want refused")
	}
}

// A token's first use is on disk before the client has its 101: a crash just
// after the 101 must not let a single-use token in again. If it cannot be
// written, the handshake is refused (503, retried by clients) and the token is
// still good.
func TestFirstUseSavedBeforeUpgrade(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{DataDir: dir})
	out, err := ts.OpenTunnel(context.Background(), &OpenTunnelInput{
		DestinationConfig: &DestinationConfig{Services: []string{"SSH"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	used := func() [2]bool {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, stateFile))
		if err != nil {
			t.Fatal(err)
		}
		var st state
		if err := json.Unmarshal(b, &st); err != nil || len(st.Tunnels) != 1 {
			t.Fatalf("state file: %v, %d tunnels", err, len(st.Tunnels))
		}
		return st.Tunnels[0].Used
	}

	// The saver cannot beat the check: it is held off for the whole test.
	ts.saveMu.Lock()
	ts.saveEnded = true
	ts.saveMu.Unlock()
	if _, status, body := dialWS(t, ts.addr, "source", out.SourceAccessToken, ""); status != http.StatusServiceUnavailable {
		t.Errorf("handshake whose use cannot be saved: %d %s, want 503", status, body)
	}
	ts.saveMu.Lock()
	ts.saveEnded = false
	ts.saveMu.Unlock()
	if u := used(); u[0] {
		t.Fatal("a refused handshake's token is saved as used")
	}
	if _, status, body := dialWS(t, ts.addr, "source", out.SourceAccessToken, ""); status != http.StatusSwitchingProtocols {
		t.Fatalf("handshake after the refusal: %d %s, want 101 (the token given back)", status, body)
	}
	if u := used(); !u[0] {
		t.Error("the source's token is not saved as used when its client has the 101")
	}
}

// A tunnel whose lifetime ended while tunneld was down is closed when the
// state is restored, before the first handshake, not at the janitor's tick;
// and closed at its expiry, not at the restart: DescribeTunnel's lastUpdatedAt
// says when, and the 3 h of describability count from then (they counted from
// the restart).
func TestTunnelExpiredWhileDown(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: t0}
	ts := startServer(t, Config{DataDir: dir, now: clock.now, tick: time.Hour})
	out, err := ts.OpenTunnel(context.Background(), &OpenTunnelInput{
		DestinationConfig: &DestinationConfig{Services: []string{"SSH"}},
		TimeoutConfig:     &TimeoutConfig{MaxLifetimeTimeoutMinutes: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.shutdown(t)
	clock.advance(2 * time.Hour) // down for two hours
	ts = startServer(t, Config{DataDir: dir, now: clock.now, tick: time.Hour})
	if _, status, body := dialWS(t, ts.addr, "source", out.SourceAccessToken, ""); status == 101 {
		t.Errorf("source of a tunnel expired while tunneld was down: %d %s, want refused", status, body)
	}
	d, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID})
	if err != nil {
		t.Fatal(err)
	}
	if expiry := t0.Add(time.Minute); d.Tunnel.Status != StatusClosed || !d.Tunnel.LastUpdatedAt.Equal(expiry) {
		t.Errorf("tunnel expired at %v while tunneld was down: %s, lastUpdatedAt %v; want CLOSED at its expiry",
			expiry, d.Tunnel.Status, d.Tunnel.LastUpdatedAt.Time)
	}
	// Closed at 01:01, it is forgotten at 04:01, not 3 h after the restart (03:00).
	clock.advance(time.Hour)
	if _, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID}); err != nil {
		t.Errorf("at %v, before its retention ended, DescribeTunnel = %v; want the tunnel", clock.now(), err)
	}
	clock.advance(time.Minute)
	if _, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID}); !IsNotFound(err) {
		t.Errorf("at %v, 3 h after the tunnel expired, DescribeTunnel = %v; want ResourceNotFoundException", clock.now(), err)
	}
}

func eventuallyTrue(t *testing.T, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !f(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
	}
}

// waitSaverIdle waits up to 10 s until no save of the state is under way
// or due: the saver waits in its select with nothing signalled, no save
// holds saveMu, and nothing durable changed since the last save.
func waitSaverIdle(t *testing.T, s *Server) {
	t.Helper()
	saverWaits := func() bool {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		for n == len(buf) { // cut short: every goroutine's, or none
			buf = make([]byte, 2*len(buf))
			n = runtime.Stack(buf, true)
		}
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, " [select") && strings.Contains(g, "tunneld.(*Server).saver(") {
				return true
			}
		}
		return false
	}
	idle := func() bool {
		if len(s.dirty) > 0 || !saverWaits() || len(s.dirty) > 0 || !s.saveMu.TryLock() {
			return false
		}
		s.saveMu.Unlock()
		return !s.durableChanged()
	}
	for deadline := time.Now().Add(10 * time.Second); !idle(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a save of the state still under way or due 10 s on")
		}
	}
}

func TestUnwritableDataDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := New(Config{DataDir: filepath.Join(file, "sub")}); err == nil {
		s.Close()
		t.Error("New with a data directory under a file succeeded, want an error")
	}
}

// A data directory another local user could change is refused before its
// state is read: whoever replaces tunnels.json plants tunnels whose tokens
// they know, announced to devices at start. A sticky directory above (/tmp)
// is fine.
func TestUnsafeDataDirRefused(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		t.Helper()
		d := filepath.Join(base, name)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		return d
	}
	shared := mk("shared", 0o777)
	sticky := mk("sticky", 0o777|os.ModeSticky)
	refused := map[string]string{
		mk("open", 0o777):                  "is writable by group or others (mode 0777)",
		mk("group", 0o770):                 "is writable by group or others (mode 0770)",
		filepath.Join(shared, "tunneld"):   shared + " is writable by group or others",
		filepath.Join(shared, "a", "b"):    shared + " is writable by group or others",
		filepath.Join(sticky, "x", "y"):    "", // below a sticky directory: allowed
		mk("sticky/own", 0o700):            "",
		filepath.Join(base, "link-shared"): shared + " is writable by group or others",
	}
	if err := os.Symlink(shared, filepath.Join(base, "link-shared")); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		other := mk("other", 0o755)
		if err := os.Chown(other, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		refused[filepath.Join(other, "tunneld")] = other + " belongs to uid 4242"
		// Another user's link in a sticky directory, to a directory that
		// passes: its owner chooses where the tokens go.
		link := filepath.Join(sticky, "link-other")
		if err := os.Symlink(mk("sticky/own2", 0o700), link); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(link, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		refused[link] = "the link " + link + " belongs to uid 4242"
	}
	for dir, want := range refused {
		s, err := New(Config{DataDir: dir, Logger: testLogger(t)})
		if err == nil {
			s.Close()
		}
		switch {
		case want == "" && err != nil:
			t.Errorf("New with data directory %s: %v, want it accepted", dir, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "tokens")):
			t.Errorf("New with data directory %s = %v, want an error saying %q and why", dir, err, want)
		}
	}
	// Nothing is made in a refused directory: no state file, no directory.
	for _, p := range []string{filepath.Join(base, "open", stateFile), filepath.Join(shared, "a")} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("refusing the data directory made %s: %v", p, err)
		}
	}
}

func TestDataDirIsExclusive(t *testing.T) {
	dir := t.TempDir()
	first := startServer(t, Config{DataDir: dir})
	a := first.open(t, "dev1", "SSH")

	// A second server on the same directory would overwrite the first's tunnels.
	if s, err := New(Config{DataDir: dir, Logger: testLogger(t)}); !errors.Is(err, ErrDataDirInUse) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("second New on %s = %v, want ErrDataDirInUse", dir, err)
	}
	// Through the command too: Run fails at start, naming the directory.
	o, err := ParseFlags([]string{"--listen", "127.0.0.1:0", "--data-dir", dir}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), o, io.Discard, tlogWriter{t}); !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Run on a held data directory = %v, want ErrDataDirInUse naming %s", err, dir)
	}

	// Once the first has stopped, the directory is free and holds its tunnel.
	first.shutdown(t)
	second := startServer(t, Config{DataDir: dir})
	if _, err := second.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: a.TunnelID}); err != nil {
		t.Errorf("DescribeTunnel(%s) after restart: %v", a.TunnelID, err)
	}
}

// Past Config.MaxClosedTunnels the tunnels closed first are forgotten, at once and
// after a restart with a lower limit; the later ones stay describable as CLOSED.
func TestMaxClosedTunnels(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{DataDir: dir, MaxClosedTunnels: 3})
	ctx := context.Background()
	var ids []string
	for range 5 {
		out := ts.open(t, "dev1", "SSH")
		if err := ts.CloseTunnel(ctx, &CloseTunnelInput{TunnelID: out.TunnelID}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, out.TunnelID)
	}
	open := ts.open(t, "dev1", "SSH")
	check := func(when string, gone, kept []string) {
		t.Helper()
		for _, id := range gone {
			if _, err := ts.DescribeTunnel(ctx, &DescribeTunnelInput{TunnelID: id}); !IsNotFound(err) {
				t.Errorf("%s: DescribeTunnel(%s) = %v, want ResourceNotFoundException", when, id, err)
			}
		}
		for _, id := range kept {
			if d, err := ts.DescribeTunnel(ctx, &DescribeTunnelInput{TunnelID: id}); err != nil || d.Tunnel.Status != StatusClosed {
				t.Errorf("%s: DescribeTunnel(%s) = %v, want CLOSED", when, id, err)
			}
		}
		if d, err := ts.DescribeTunnel(ctx, &DescribeTunnelInput{TunnelID: open.TunnelID}); err != nil || d.Tunnel.Status != StatusOpen {
			t.Errorf("%s: the open tunnel: %v, want OPEN", when, err)
		}
	}
	check("limit 3", ids[:2], ids[2:])
	ts.shutdown(t)
	ts = startServer(t, Config{DataDir: dir, MaxClosedTunnels: 1})
	check("restarted with limit 1", ids[:4], ids[4:])
}

// A data-plane connect that uses a token is written at once (a single-use token
// must stay used across a restart); a reconnect with the client token, or a
// disconnect, changes nothing durable and leaves the state file alone.
func TestReconnectDoesNotRewriteState(t *testing.T) {
	const ct = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	dir := t.TempDir()
	path := filepath.Join(dir, stateFile)
	ts := startServer(t, Config{DataDir: dir})
	out := ts.open(t, "dev1", "SSH")
	if _, status, body := dialWS(t, ts.addr, "destination", out.DestinationAccessToken, ct); status != 101 {
		t.Fatalf("destination: %d %s", status, body)
	}
	eventuallyTrue(t, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), ct)
	})
	// A save in flight lands first: a fixed 100 ms could end before it did
	// on a slow machine, and the file then changed under the check below.
	waitSaverIdle(t, ts.Server)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	dp := ts.Dataplane(out.TunnelID)
	for i := range 3 {
		dp.Drop(dataplane.Destination)
		if _, status, body := dialWS(t, ts.addr, "destination", out.DestinationAccessToken, ct); status != 101 {
			t.Fatalf("reconnect %d: %d %s", i, status, body)
		}
	}
	time.Sleep(200 * time.Millisecond) // a save the reconnects would cause is due by now
	waitSaverIdle(t, ts.Server)        // and has landed
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("the state file was rewritten for reconnects that changed nothing durable")
	}
}

// A token rotated away is still refused as rotated after a restart, even one
// from a crash just after the rotation's answer (the file as it was then), and
// the file keeps no more of it than its hash. Older ones beyond
// maxRevokedPerTunnel get the generic answer, as before the restart.
func TestRotatedTokenRefusedAfterRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ts := startServer(t, Config{DataDir: dir})
	out := ts.open(t, "dev1", "SSH")
	var old []string // source tokens rotated away, oldest first
	tok := out.SourceAccessToken
	for range maxRevokedPerTunnel + 1 {
		old = append(old, tok)
		r, err := ts.RotateTunnelAccessToken(ctx, &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: ClientModeSource})
		if err != nil {
			t.Fatal(err)
		}
		tok = r.SourceAccessToken
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range old {
		if bytes.Contains(b, []byte(o)) {
			t.Fatalf("the state file holds a rotated token in clear:\n%s", b)
		}
	}
	crashed := t.TempDir()
	if err := os.WriteFile(filepath.Join(crashed, stateFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ts = startServer(t, Config{DataDir: crashed})
	if _, status, body := dialWS(t, ts.addr, "source", old[0], ""); status != 400 || body == BodyTokenRotated {
		t.Errorf("token rotated %d rotations ago, after a restart: %d %q, want 400 and the generic body", len(old), status, body)
	}
	for i, o := range old[1:] {
		if _, status, body := dialWS(t, ts.addr, "source", o, ""); status != 400 || body != BodyTokenRotated {
			t.Errorf("token rotated %d rotations ago, after a restart: %d %q, want 400 %q", len(old)-1-i, status, body, BodyTokenRotated)
		}
	}
	if _, status, body := dialWS(t, ts.addr, "source", tok, ""); status != 101 {
		t.Errorf("the current token after a restart: %d %q", status, body)
	}
}

// What a crash (kill -9) leaves while a side is connected is the file of its
// token's first use: the side is restored DISCONNECTED, since no earlier than
// DescribeTunnel said it was CONNECTED.
func TestConnectTimeSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{DataDir: dir})
	out := ts.open(t, "dev1", "SSH")
	time.Sleep(20 * time.Millisecond) // the connect is well after the open
	if _, status, body := dialWS(t, ts.addr, "source", out.SourceAccessToken, ""); status != 101 {
		t.Fatalf("source: %d %s", status, body)
	}
	side := func(ts *testServer) *ConnectionState {
		t.Helper()
		d, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID})
		if err != nil {
			t.Fatal(err)
		}
		return d.Tunnel.SourceConnectionState
	}
	connected := side(ts)
	if connected.Status != StatusConnected {
		t.Fatalf("source after its 101: %s", connected.Status)
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	crashed := t.TempDir()
	if err := os.WriteFile(filepath.Join(crashed, stateFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	restored := side(startServer(t, Config{DataDir: crashed}))
	if restored.Status != StatusDisconnected || restored.LastUpdatedAt.Time.Before(connected.LastUpdatedAt.Time) {
		t.Errorf("source after a crash: %s since %v, want DISCONNECTED since no earlier than %v (CONNECTED since then before the crash)",
			restored.Status, restored.LastUpdatedAt.Time, connected.LastUpdatedAt.Time)
	}
}

// A delivered notification is saved: after a crash (the file as it was, no
// clean stop) the destination token is not published again.
func TestDeliveredNotificationSaved(t *testing.T) {
	dir := t.TempDir()
	fn := newFakeNotifier(false)
	ts := startServer(t, Config{DataDir: dir, Notifier: fn})
	ts.open(t, "dev1", "SSH")
	fn.next(t)
	var b []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ = os.ReadFile(filepath.Join(dir, stateFile))
		if len(b) > 0 && !strings.Contains(string(b), `"notifyPending": true`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the state file still says the notification is pending after it was delivered:\n%s", b)
		}
	}
	crashed := t.TempDir()
	os.WriteFile(filepath.Join(crashed, stateFile), b, 0o600)
	fn2 := newFakeNotifier(false)
	startServer(t, Config{DataDir: crashed, Notifier: fn2})
	select {
	case n := <-fn2.got:
		t.Errorf("after a crash, the delivered destination token was published again to %s", n.ThingName)
	case <-time.After(time.Second):
	}
}

// gatedNotifier delivers notifications at once, except those of the things in
// gates, which wait until their gate is closed (or their ctx ends), as a
// broker that does not answer their PUBLISH, and those of refused, which fail.
// A gated one sends its thing to entered, if not nil, as it starts to wait.
type gatedNotifier struct {
	gates   map[string]chan struct{} // not changed once in use
	refused string
	got     chan Notification
	entered chan string
}

func (g *gatedNotifier) Notify(ctx context.Context, n Notification) error {
	if gate, ok := g.gates[n.ThingName]; ok {
		if g.entered != nil {
			g.entered <- n.ThingName
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if n.ThingName == g.refused {
		return fmt.Errorf("reason code 0x87: %w", ErrNotifyRefused)
	}
	g.got <- n
	return nil
}

// A delivered notification is saved while a later one of the same round
// still waits for its broker (up to notifyTimeout): a crash meanwhile would
// publish the delivered token again at the next start.
func TestDeliveredNotificationSavedWhileAnotherWaits(t *testing.T) {
	dir := t.TempDir()
	first, hung := make(chan struct{}), make(chan struct{})
	defer close(hung)
	// The first tunnel's notification holds the notifier while the next two
	// are opened, and then fails: no save follows its round, and the next
	// round has all three.
	g := &gatedNotifier{gates: map[string]chan struct{}{"first": first, "hung": hung}, refused: "first", got: make(chan Notification, 4)}
	ts := startServer(t, Config{DataDir: dir, Notifier: g, retry: 10 * time.Millisecond})
	ts.open(t, "first", "SSH")
	delivered := ts.open(t, "delivered", "SSH")
	ts.open(t, "hung", "SSH")
	close(first)
	select {
	case n := <-g.got:
		if n.ThingName != "delivered" {
			t.Fatalf("notification for %s, want one for delivered", n.ThingName)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification for delivered")
	}
	var b []byte
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ = os.ReadFile(filepath.Join(dir, stateFile))
		var st struct {
			Tunnels []struct {
				ID            string `json:"id"`
				NotifyPending bool   `json:"notifyPending"`
			} `json:"tunnels"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("state file: %v", err)
		}
		saved := false
		for _, r := range st.Tunnels {
			saved = saved || r.ID == delivered.TunnelID && !r.NotifyPending
		}
		if saved {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after its delivery, while another notification waits, the state file still says it is pending:\n%s", b)
		}
	}
}

// A call that runs on a server after it stopped (a request still in flight when
// Shutdown's deadline passed, or at Close) is refused and writes nothing: the
// next instance may hold the directory by then, and its state would be
// overwritten with the stopped one's.
func TestStoppedServerDoesNotSave(t *testing.T) {
	dir := t.TempDir()
	old, err := New(Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := old.OpenTunnel(context.Background(), &OpenTunnelInput{})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	next, err := New(Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	a, err := next.OpenTunnel(context.Background(), &OpenTunnelInput{})
	if err != nil {
		t.Fatal(err)
	}

	late, err := old.OpenTunnel(context.Background(), &OpenTunnelInput{})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Type != ErrTypeInternalFailure {
		t.Errorf("OpenTunnel on a stopped server = %+v, %v; want an InternalFailure", late, err)
	}
	if err := old.CloseTunnel(context.Background(), &CloseTunnelInput{TunnelID: kept.TunnelID}); err == nil {
		t.Error("CloseTunnel on a stopped server succeeded")
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), a.TunnelID) {
		t.Errorf("the state file no longer holds %s, opened by the running server:\n%s", a.TunnelID, b)
	}
	d, err := next.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: kept.TunnelID})
	if err != nil || d.Tunnel.Status != StatusOpen {
		t.Errorf("DescribeTunnel(%s) on the running server = %+v, %v; want it open", kept.TunnelID, d, err)
	}
}

// A change whose state cannot be saved is reported as failed, not done: a
// restart would forget it (a revoked token valid again, a closed tunnel open).
// An open that fails leaves no tunnel behind.
func TestFailedSaveIsAnError(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	open, err := s.OpenTunnel(ctx, &OpenTunnelInput{})
	if err != nil {
		t.Fatal(err)
	}
	// The rename onto the state file fails where a directory holds its name
	// (root ignores permissions, so a read-only directory would not do).
	p := filepath.Join(dir, stateFile)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(p, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	var ae *APIError
	if out, err := s.OpenTunnel(ctx, &OpenTunnelInput{}); !errors.As(err, &ae) || ae.Type != ErrTypeInternalFailure {
		t.Errorf("OpenTunnel with the state unsaved = %+v, %v; want an InternalFailure", out, err)
	}
	if l, err := s.ListTunnels(ctx, &ListTunnelsInput{}); err != nil || len(l.TunnelSummaries) != 1 {
		t.Errorf("ListTunnels after a failed open = %+v, %v; want the one tunnel opened before", l, err)
	}
	if out, err := s.RotateTunnelAccessToken(ctx, &RotateTunnelAccessTokenInput{TunnelID: open.TunnelID, ClientMode: ClientModeAll}); !errors.As(err, &ae) {
		t.Errorf("RotateTunnelAccessToken with the state unsaved = %+v, %v; want an error", out, err)
	}
	if err := s.CloseTunnel(ctx, &CloseTunnelInput{TunnelID: open.TunnelID}); !errors.As(err, &ae) {
		t.Errorf("CloseTunnel with the state unsaved = %v; want an error", err)
	}
}

// A client token may be used again once the tunnel that used it is closed (client
// tokens are unique across open tunnels only, spec §2.1). The state file then holds
// the closed tunnel and the open one with the same client token, and must load.
func TestRestoreClientTokenReusedAfterClose(t *testing.T) {
	const ct = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	dir := t.TempDir()
	ts := startServer(t, Config{DataDir: dir})
	ctx := context.Background()
	a := ts.open(t, "dev1", "SSH")
	if _, status, body := dialWS(t, ts.addr, "destination", a.DestinationAccessToken, ct); status != 101 {
		t.Fatalf("first tunnel: %d %s", status, body)
	}
	if err := ts.CloseTunnel(ctx, &CloseTunnelInput{TunnelID: a.TunnelID}); err != nil {
		t.Fatal(err)
	}
	// The open tunnel sorts first in the state file.
	var b *OpenTunnelOutput
	for {
		b = ts.open(t, "dev1", "SSH")
		if b.TunnelID < a.TunnelID {
			break
		}
		if err := ts.CloseTunnel(ctx, &CloseTunnelInput{TunnelID: b.TunnelID, Delete: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, status, body := dialWS(t, ts.addr, "destination", b.DestinationAccessToken, ct); status != 101 {
		t.Fatalf("second tunnel, same client token: %d %s", status, body)
	}
	ts.shutdown(t)

	s, err := New(Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	s.Close()
	ts = startServer(t, Config{DataDir: dir})
	if _, status, body := dialWS(t, ts.addr, "destination", b.DestinationAccessToken, ct); status != 101 {
		t.Errorf("reconnect with the client token after restart: %d %s", status, body)
	}
}

// A restart restores closed tunnels without logging them closed, as if they
// had just been (a line each, up to MaxClosedTunnels at every start); a close
// after the restart is logged as ever.
func TestRestoreLogsNoClose(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ts := startServer(t, Config{DataDir: dir})
	for range 2 {
		if err := ts.CloseTunnel(ctx, &CloseTunnelInput{TunnelID: ts.open(t, "dev1", "SSH").TunnelID}); err != nil {
			t.Fatal(err)
		}
	}
	a := ts.open(t, "dev1", "SSH")
	ts.shutdown(t)

	logs := &syncBuffer{}
	ts = startServer(t, Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.MultiWriter(logs, tlogWriter{t}), nil))})
	if l := logs.String(); strings.Contains(l, "msg=closed") || !strings.Contains(l, "tunnels=3 open=1") {
		t.Errorf("restoring 2 closed tunnels and 1 open logged:\n%s\nwant no close, and state restored with tunnels=3 open=1", l)
	}
	if err := ts.CloseTunnel(ctx, &CloseTunnelInput{TunnelID: a.TunnelID}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "msg=closed plane=data tunnel="+a.TunnelID); n != 1 {
		t.Errorf("closing the open tunnel after the restart logged %d close lines, want 1", n)
	}
}

// FuzzLoadState starts a server on a state file as it may be found after a
// crash or a hand edit: a file it refuses is left as it was (the operator
// may mend it), and one it takes is saved in a form the next start takes the
// same way.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"version":1,"tunnels":[]}`))
	f.Add([]byte(`{"version":1,"tunnels":[{"id":"00000000-0000-4000-8000-000000000001","status":"OPEN","lifetimeMinutes":720,` +
		`"destinationConfig":{"thingName":"dev1","services":["SSH"]},"createdAt":"2026-01-01T00:00:00Z","expiresAt":"2099-01-01T00:00:00Z",` +
		`"tokens":["src-token-0123456789abcdefghij","dst-token-0123456789abcdefghij"],"used":[false,true],` +
		`"clientTokens":["","aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"]}]}`))
	f.Add([]byte(`{"version":1,"tunnels":[{"id":"a","status":"CLOSED"},{"id":"b","status":"OPEN","tokens":["x","x"]}]}`))
	f.Add([]byte(`{"version":1,"tunnels":[{"id":"a","status":"OPEN","tokens":["x","y"]},{"id":"a","status":"OPEN"}]}`))
	f.Add([]byte(`{"version":1,"tunnels":[null]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, state []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, stateFile)
		if err := os.WriteFile(path, state, 0o600); err != nil {
			t.Fatal(err)
		}
		clock := func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }
		s, err := New(Config{DataDir: dir, now: clock})
		if err != nil {
			if b, _ := os.ReadFile(path); !bytes.Equal(b, state) {
				t.Fatalf("New refused state %q (%v) and rewrote it as %q", state, err, b)
			}
			return
		}
		list := func(s *Server) map[string]string {
			s.mu.Lock()
			defer s.mu.Unlock()
			m := map[string]string{}
			for id, r := range s.tunnels {
				m[id] = r.Status + " " + strings.Join(servicesOf(r), ",")
			}
			return m
		}
		first := list(s)
		s.Close()
		saved, _ := os.ReadFile(path)
		s2, err := New(Config{DataDir: dir, now: clock})
		if err != nil {
			t.Fatalf("state %q loaded, saved as %q, which does not load: %v", state, saved, err)
		}
		defer s2.Close()
		if second := list(s2); !reflect.DeepEqual(first, second) {
			t.Fatalf("state %q: tunnels %v, after a save and load %v", state, first, second)
		}
	})
}

// A save cut short (SIGKILL, a power cut) between its temporary file and the
// rename leaves that file, which holds every tunnel's tokens: the next start
// removes it, as the agent removes its own (agent/state.go), instead of keeping
// old tokens on disk for ever, one more file per crash.
func TestLeftTemporaryStateFileRemoved(t *testing.T) {
	dir := t.TempDir()
	left := filepath.Join(dir, "."+stateFile+".123456789")
	if err := os.WriteFile(left, []byte(`{"version":1,"tunnels":[{"tokens":["SECRET-SOURCE-TOKEN","SECRET-DESTINATION-TOKEN"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(left); err == nil {
		t.Errorf("%s, left by a save that did not finish, is still there after a start", filepath.Base(left))
	}
}

// TestLeftStateFileDataDirNameNoPattern: the leftover of a cut-short save is
// looked for in the data directory itself, whatever its name: a name with a
// glob character ("[", "*", "?") is no pattern, neither leaving that
// directory's leftover (every tunnel's tokens) nor removing another
// directory's file, such as the save in progress of another tunneld.
func TestLeftStateFileDataDirNameNoPattern(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "tunneld[1]")
	other := filepath.Join(root, "tunneld1")
	for _, d := range []string{dir, other} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "."+stateFile+".123456789"), []byte(`{}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, "."+stateFile+".123456789")); err == nil {
		t.Errorf("the leftover in the data directory %s is still there after a start", dir)
	}
	if _, err := os.Stat(filepath.Join(other, "."+stateFile+".123456789")); err != nil {
		t.Errorf("a start with data directory %s removed the file of another directory, %s: %v", dir, other, err)
	}
}

// A data directory reached through a link that another local user can
// change: tunneld wrote tunnels.json through the path as given at every save,
// having checked only where the link pointed at start, so whoever re-pointed
// the link received every tunnel's tokens. It now uses the directory it
// checked.
func TestDataDirLinkOthersCanChange(t *testing.T) {
	cases := []struct {
		name   string
		mode   os.FileMode // of the directory holding the link
		linkBy int         // the link's owner; -1: this user
	}{
		{"link in a directory others can write", 0o777, -1},
		{"link of another user in a sticky directory", 0o777 | os.ModeSticky, 4242},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.linkBy >= 0 && os.Geteuid() != 0 {
				t.Skip("needs root to give the link to another user")
			}
			base := t.TempDir()
			shared := filepath.Join(base, "shared")
			safe := filepath.Join(base, "safe")
			evil := filepath.Join(base, "evil")
			for _, d := range []string{shared, safe, evil} {
				if err := os.Mkdir(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(shared, c.mode); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(shared, "tunneld")
			if err := os.Symlink(safe, link); err != nil {
				t.Fatal(err)
			}
			if c.linkBy >= 0 {
				if err := os.Lchown(link, c.linkBy, c.linkBy); err != nil {
					t.Fatal(err)
				}
			}
			s, err := New(Config{DataDir: link, Logger: testLogger(t)})
			if err != nil {
				return // refused: fine
			}
			// The other user re-points the link, which the directory allows.
			if err := os.Remove(link); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(evil, link); err != nil {
				t.Fatal(err)
			}
			out, err := s.OpenTunnel(context.Background(), &OpenTunnelInput{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Shutdown(context.Background()); err != nil { // saved, for sure
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(evil, stateFile)); strings.Contains(string(b), out.SourceAccessToken) {
				t.Errorf("data directory %s (%s, %v): once the link was re-pointed, the source token was written to the other user's directory",
					link, c.name, c.mode)
			}
			if b, _ := os.ReadFile(filepath.Join(safe, stateFile)); !strings.Contains(string(b), out.SourceAccessToken) {
				t.Errorf("data directory %s: the state is not in the directory checked at start", link)
			}
		})
	}
}

// A tunnel that expired more than ClosedRetention before a restart is
// forgotten at the restart, not kept 3 h more.
func TestExpiredLongBeforeRestartForgotten(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)}
	ts := startServer(t, Config{DataDir: dir, now: clock.now, tick: time.Hour})
	out := ts.open(t, "", "SSH")
	ts.shutdown(t)
	clock.advance(maxLifetimeMinutes*time.Minute + DefaultClosedRetention)
	ts = startServer(t, Config{DataDir: dir, now: clock.now, tick: time.Hour})
	if _, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: out.TunnelID}); !IsNotFound(err) {
		t.Errorf("tunnel expired 3 h before the restart: DescribeTunnel = %v, want ResourceNotFoundException", err)
	}
}

// TestSavesShareWrites: changes that queue behind a state file write are saved
// by one write, not one each (group commit): each rewrites the whole file, and
// at 2,000 tunnels the first uses of 400 tokens (each handshake's 101 waits for
// its save) took 30 s one write at a time. Every change is in the file.
func TestSavesShareWrites(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{DataDir: dir})
	var writes atomic.Int32
	defer func(w func(string, os.FileMode, func(io.Writer) error) error) { writeState = w }(writeState)
	writeState = func(path string, mode os.FileMode, write func(io.Writer) error) error {
		writes.Add(1)
		return atomicfile.WriteFunc(path, mode, write)
	}
	const n = 8
	ts.mu.Lock()
	base := ts.saveTickets
	ts.mu.Unlock()
	ts.saveMu.Lock() // a write in progress
	ids := make(chan string, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			out, err := ts.OpenTunnel(context.Background(), &OpenTunnelInput{DestinationConfig: &DestinationConfig{ThingName: fmt.Sprint("dev", i), Services: []string{"SSH"}}})
			if err != nil {
				errs <- err
				return
			}
			ids <- out.TunnelID
		}()
	}
	eventuallyTrue(t, func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return ts.saveTickets == base+n // all queued behind the write
	})
	ts.saveMu.Unlock()
	var opened []string
	for range n {
		select {
		case id := <-ids:
			opened = append(opened, id)
		case err := <-errs:
			t.Fatal(err)
		}
	}
	if w := writes.Load(); w != 1 {
		t.Errorf("%d changes queued behind a write were saved in %d writes, want 1", n, w)
	}
	ts.shutdown(t)
	ts = startServer(t, Config{DataDir: dir})
	for _, id := range opened {
		if _, err := ts.DescribeTunnel(context.Background(), &DescribeTunnelInput{TunnelID: id}); err != nil {
			t.Errorf("tunnel %s after a restart: %v", id, err)
		}
	}
}

// TestStateFileFormat: the state file is streamed one tunnel at a time, and is
// byte for byte what json.MarshalIndent of the whole state wrote before, so
// that an older tunneld, and anyone reading the file, reads it as before.
func TestStateFileFormat(t *testing.T) {
	at := time.Date(2026, 11, 30, 6, 15, 56, 123e6, time.UTC)
	rec := func(id string) *record {
		return &record{ID: id, Arn: "arn:aws:iot:us-east-1:123456789012:tunnel/" + id,
			Description: "a <b> & \u2028 \"c\"", Dest: &DestinationConfig{ThingName: "dev", Services: []string{"SSH", "BULK"}},
			Lifetime: 720, Tags: []Tag{{"k", "v"}, {"e", ""}}, Status: StatusOpen,
			CreatedAt: at, LastUpdatedAt: at, ExpiresAt: at.Add(12 * time.Hour),
			Tokens: [2]string{"AQ1", "AQ2"}, Used: [2]bool{true, false}, ClientTokens: [2]string{"c1", ""},
			SideUpdated: [2]time.Time{at, {}}, NotifyPending: true, Revoked: []tokenKey{{}}}
	}
	closed := rec("00000003")
	closed.Status, closed.ClosedAt, closed.Tags, closed.Dest = StatusClosed, at, nil, &DestinationConfig{Services: []string{}}
	for _, tunnels := range [][]*record{nil, {}, {rec("00000001")}, {rec("00000001"), rec("00000002"), closed}} {
		st := state{Version: stateVersion, Tunnels: tunnels}
		want, err := json.MarshalIndent(&st, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		var got bytes.Buffer
		if err := st.encode(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%d tunnels: encode wrote\n%s\nwant (json.MarshalIndent)\n%s", len(tunnels), got.Bytes(), want)
		}
	}
}

// TestSaveMemoryDoesNotScaleWithFile: while a save writes the state file, the
// heap holds a small part of the file's size over what it held before: the
// save streams the file one tunnel at a time. Encoding the whole file into
// memory (json.MarshalIndent, then a copy to append the newline) held it there
// whole, after peaks of three times its size: with the most tags on the
// default 1,100 tunnels, a 95 MiB file, 386 MiB more heap at every save, which
// an API client can make happen at every change (docs/benchmarks.md). The
// live heap is measured (after a GC) at each write to the file; what a save
// allocates, on a second save of its own (below).
func TestSaveMemoryDoesNotScaleWithFile(t *testing.T) {
	var measuring atomic.Bool
	var peak atomic.Uint64
	defer func(w func(string, os.FileMode, func(io.Writer) error) error) { writeState = w }(writeState)
	writeState = func(path string, mode os.FileMode, write func(io.Writer) error) error {
		return atomicfile.WriteFunc(path, mode, func(w io.Writer) error {
			return write(writerFunc(func(b []byte) (int, error) {
				if measuring.Load() {
					runtime.GC()
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					peak.Store(max(peak.Load(), ms.HeapAlloc))
				}
				return w.Write(b)
			}))
		})
	}
	s := newMaxTagsServer(t, 100)
	defer s.Close()
	runtime.GC()
	runtime.GC() // and what sync.Pools kept through the first
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	measuring.Store(true)
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	measuring.Store(false)
	fi, err := os.Stat(filepath.Join(s.cfg.DataDir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot (a record and its tag list per tunnel, 0.7 MB) and one
	// tunnel's encoding, twice (90 KB); the file is 9 MB.
	added := int64(peak.Load()) - int64(before.HeapAlloc)
	t.Logf("a save of a %d-byte state file added %d bytes to the live heap", fi.Size(), added)
	if limit := fi.Size() / 4; added > limit {
		t.Errorf("a save of a %d-byte state file added %d bytes to the live heap, want at most %d (a quarter of the file)", fi.Size(), added, limit)
	}
	// Nor are the file's bytes allocated several times over, to be
	// collected later: the heap's peak counts garbage too. json.MarshalIndent
	// per tunnel, new buffers each time, allocated 4 times the file (5 under
	// the race detector) and peaked at 210 MiB with the benchmark's 95 MiB
	// file; reused buffers, 0.1 of it (1.0–1.4 under the race detector, whose
	// sync.Pool drops json's buffers). Measured on a save of its own, without
	// the GCs above, which empty that pool at every write.
	var mid, end runtime.MemStats
	runtime.ReadMemStats(&mid)
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&end)
	alloc := int64(end.TotalAlloc - mid.TotalAlloc)
	t.Logf("a save of a %d-byte state file allocated %d bytes", fi.Size(), alloc)
	if limit := 2 * fi.Size(); alloc > limit {
		t.Errorf("a save of a %d-byte state file allocated %d bytes, want at most %d (twice the file)", fi.Size(), alloc, limit)
	}
}

// writerFunc is an io.Writer that is a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
