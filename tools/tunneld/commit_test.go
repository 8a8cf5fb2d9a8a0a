package tunneld

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// commitGate holds the next commit, once armed, at Config.beforeCommit: the
// call it belongs to has made its change and not yet saved it.
type commitGate struct {
	armed  atomic.Bool
	held   chan struct{} // closed when a commit is held
	resume chan struct{} // closed by the test to let it go on
}

func newCommitGate() *commitGate {
	return &commitGate{held: make(chan struct{}), resume: make(chan struct{})}
}

func (g *commitGate) beforeCommit() {
	if g.armed.CompareAndSwap(true, false) {
		close(g.held)
		<-g.resume
	}
}

// savedTunnels reads the state file as a restart after a kill -9 would find
// it: each tunnel's status by id.
func savedTunnels(t *testing.T, dir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string)
	for _, r := range st.Tunnels {
		m[r.ID] = r.Status
	}
	return m
}

// writeFunc is writeState's type.
type writeFunc = func(string, os.FileMode, func(io.Writer) error) error

// replaceWriteState makes writeState wrap(writeState) and returns what puts
// it back; both under s's saveMu, which every read of writeState is.
func replaceWriteState(s *Server, wrap func(write writeFunc) writeFunc) (restore func()) {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	old := writeState
	writeState = wrap(old)
	return func() {
		s.saveMu.Lock()
		defer s.saveMu.Unlock()
		writeState = old
	}
}

type openResult struct {
	out *OpenTunnelOutput
	err error
}

// checkOpenSaved fails unless the state file agrees with what OpenTunnel
// answered: the tunnel open in it after a success, absent after an error
// (OpenTunnel forgets a tunnel it could not save; one left in the file
// would be open again after a restart, notified to its thing, with tokens
// nobody was given). before are the tunnels there before the open.
func checkOpenSaved(t *testing.T, res openResult, saved map[string]string, before ...string) {
	t.Helper()
	for _, id := range before {
		delete(saved, id)
	}
	if res.err == nil {
		if saved[res.out.TunnelID] != StatusOpen || len(saved) != 1 {
			t.Errorf("OpenTunnel answered %s, but the state file holds %v besides the tunnels before", res.out.TunnelID, saved)
		}
		return
	}
	if len(saved) != 0 {
		t.Errorf("OpenTunnel answered %v, but the state file holds %v besides the tunnels before: open again after a restart", res.err, saved)
	}
}

// An OpenTunnel whose change the server's last save wrote, as the server
// stops, is answered with its tokens: the next instance has the tunnel. It
// was answered with an error (the save had ended) and forgotten, while the
// file kept it open and its notification pending.
func TestOpenDuringStopAgreesWithFile(t *testing.T) {
	dir := t.TempDir()
	gate := newCommitGate()
	s, err := New(Config{DataDir: dir, Logger: testLogger(t), beforeCommit: gate.beforeCommit})
	if err != nil {
		t.Fatal(err)
	}
	gate.armed.Store(true)
	done := make(chan openResult, 1)
	go func() {
		out, err := s.OpenTunnel(context.Background(), &OpenTunnelInput{DestinationConfig: &DestinationConfig{ThingName: "dev1", Services: []string{"SSH"}}})
		done <- openResult{out, err}
	}()
	<-gate.held
	s.Close() // its last save finds the tunnel opened
	close(gate.resume)
	res := <-done
	checkOpenSaved(t, res, savedTunnels(t, dir))
}

// logGate holds, once armed, the API call that logs its own line (msg, with
// an attribute named key): written after its change and before its commit,
// which is where the call used to take its save's ticket.
type logGate struct {
	slog.Handler
	gate     *commitGate
	msg, key string
}

func (g *logGate) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == g.msg {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == g.key {
				g.gate.beforeCommit()
				return false
			}
			return true
		})
	}
	return g.Handler.Handle(ctx, r)
}

func (g *logGate) WithAttrs(as []slog.Attr) slog.Handler {
	return &logGate{g.Handler.WithAttrs(as), g.gate, g.msg, g.key}
}

func (g *logGate) WithGroup(name string) slog.Handler {
	return &logGate{g.Handler.WithGroup(name), g.gate, g.msg, g.key}
}

// A change the server's last save wrote, as the server stops, is answered as
// done: the next instance has it. Each call takes its save's ticket with its
// change; one taken after it, once the stop's save had ended, was answered
// InternalFailure ("could not save its state") for a change that was saved.
// The stop comes while the call is held at its log line (where the ticket
// was taken after the change) and at its commit.
func TestChangesDuringStopAnsweredDone(t *testing.T) {
	// Each call's own log line: its message and an attribute of it alone.
	lines := map[string][2]string{
		"CloseTunnel": {"tunnel closed", "deleted"}, "RotateTunnelAccessToken": {"tokens rotated", "mode"},
		"TagResource": {"tunnel tagged", "keys"}, "UntagResource": {"tunnel untagged", "keys"},
	}
	calls := map[string]func(*Server, *OpenTunnelOutput) error{
		"CloseTunnel": func(s *Server, o *OpenTunnelOutput) error {
			return s.CloseTunnel(context.Background(), &CloseTunnelInput{TunnelID: o.TunnelID})
		},
		"RotateTunnelAccessToken": func(s *Server, o *OpenTunnelOutput) error {
			_, err := s.RotateTunnelAccessToken(context.Background(), &RotateTunnelAccessTokenInput{TunnelID: o.TunnelID, ClientMode: ClientModeAll})
			return err
		},
		"TagResource": func(s *Server, o *OpenTunnelOutput) error {
			return s.TagResource(context.Background(), &TagResourceInput{ResourceArn: o.TunnelArn, Tags: []Tag{{"k", "v"}}})
		},
		"UntagResource": func(s *Server, o *OpenTunnelOutput) error {
			return s.UntagResource(context.Background(), &UntagResourceInput{ResourceArn: o.TunnelArn, TagKeys: []string{"k"}})
		},
	}
	for name, call := range calls {
		for _, at := range []string{"log", "commit"} {
			t.Run(name+"/"+at, func(t *testing.T) {
				dir := t.TempDir()
				gate := newCommitGate()
				cfg := Config{DataDir: dir, Logger: testLogger(t)}
				if at == "log" {
					cfg.Logger = slog.New(&logGate{cfg.Logger.Handler(), gate, lines[name][0], lines[name][1]})
				} else {
					cfg.beforeCommit = gate.beforeCommit
				}
				s, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				o, err := s.OpenTunnel(context.Background(), &OpenTunnelInput{})
				if err != nil {
					t.Fatal(err)
				}
				gate.armed.Store(true)
				done := make(chan error, 1)
				go func() { done <- call(s, o) }()
				<-gate.held
				s.Close() // its last save finds the change made
				close(gate.resume)
				if err := <-done; err != nil {
					t.Errorf("%s held at its %s during the stop: %v; the stop's last save wrote its change", name, at, err)
				}
				if name == "CloseTunnel" && savedTunnels(t, dir)[o.TunnelID] != StatusClosed {
					t.Errorf("the stop's last save left the tunnel %s", savedTunnels(t, dir)[o.TunnelID])
				}
			})
		}
	}
}

// An OpenTunnel whose change another call's save wrote is answered with its
// tokens even if its own write then fails: it was answered with an error and
// forgotten, while the file kept it open until some later save.
func TestOpenSavedByAnotherWriteAgreesWithFile(t *testing.T) {
	dir := t.TempDir()
	gate := newCommitGate()
	s, err := New(Config{DataDir: dir, Logger: testLogger(t), beforeCommit: gate.beforeCommit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	other, err := s.OpenTunnel(ctx, &OpenTunnelInput{})
	if err != nil {
		t.Fatal(err)
	}
	gate.armed.Store(true)
	done := make(chan openResult, 1)
	go func() {
		out, err := s.OpenTunnel(ctx, &OpenTunnelInput{})
		done <- openResult{out, err}
	}()
	<-gate.held
	// Written with the tunnel being opened in it.
	if err := s.TagResource(ctx, &TagResourceInput{ResourceArn: other.TunnelArn, Tags: []Tag{{"k", "v"}}}); err != nil {
		t.Fatal(err)
	}
	// Every write from now on fails (a full disk).
	defer replaceWriteState(s, func(writeFunc) writeFunc {
		return func(string, os.FileMode, func(io.Writer) error) error { return errors.New("no space left on device") }
	})()
	close(gate.resume)
	res := <-done
	checkOpenSaved(t, res, savedTunnels(t, dir), other.TunnelID)
}

// An OpenTunnel whose own write failed, but whose change a later write of
// another call saved before OpenTunnel forgot the tunnel, is answered with its
// tokens: it was answered with an error and forgotten, while the file kept the
// tunnel open, its notification pending, until some later save.
func TestOpenSavedAfterItsWriteFailedAgreesWithFile(t *testing.T) {
	dir := t.TempDir()
	var armed atomic.Bool
	var s *Server
	var other *OpenTunnelOutput
	var otherErr error
	afterFailedCommit := func() {
		if armed.CompareAndSwap(true, false) {
			// Written with the tunnel being opened in it.
			otherErr = s.TagResource(context.Background(), &TagResourceInput{ResourceArn: other.TunnelArn, Tags: []Tag{{"k", "v"}}})
		}
	}
	s, err := New(Config{DataDir: dir, Logger: testLogger(t), afterFailedCommit: afterFailedCommit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if other, err = s.OpenTunnel(ctx, &OpenTunnelInput{}); err != nil {
		t.Fatal(err)
	}
	// The next write fails (a full disk for a moment), the later ones do
	// not.
	failed := false
	defer replaceWriteState(s, func(write writeFunc) writeFunc {
		return func(path string, mode os.FileMode, f func(io.Writer) error) error {
			if !failed {
				failed = true
				return errors.New("no space left on device")
			}
			return write(path, mode, f)
		}
	})()
	armed.Store(true)
	out, err := s.OpenTunnel(ctx, &OpenTunnelInput{})
	if otherErr != nil {
		t.Fatal(otherErr)
	}
	if !failed || armed.Load() {
		t.Fatal("OpenTunnel's write did not fail, or no other write followed it")
	}
	checkOpenSaved(t, openResult{out, err}, savedTunnels(t, dir), other.TunnelID)
}

// savedUsed reads from the state file whether tunnel id's side has its
// token used.
func savedUsed(dir, id string, side dataplane.Side) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return false, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return false, err
	}
	for _, r := range st.Tunnels {
		if r.ID == id {
			return r.Used[side], nil
		}
	}
	return false, fmt.Errorf("tunnel %s is not in the state file", id)
}

// A first connect whose use could not be saved gives its token back, and the
// state file follows even when another call's save wrote the token used in
// the meantime: it kept saying so, and after a kill -9 the token's real first
// connect was refused as used.
func TestGivenBackTokenSaved(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	out, err := s.OpenTunnel(ctx, &OpenTunnelInput{})
	if err != nil {
		t.Fatal(err)
	}
	// The first use's write fails (a full disk for a moment); before its
	// handshake is refused, another call saves, with the token used.
	var armed atomic.Bool
	defer replaceWriteState(s, func(write writeFunc) writeFunc {
		return func(path string, mode os.FileMode, f func(io.Writer) error) error {
			if armed.CompareAndSwap(true, false) {
				return errors.New("no space left on device")
			}
			return write(path, mode, f)
		}
	})()
	var written atomic.Bool // the other call's save wrote the token used
	firstUse := s.dp.OnFirstUse
	s.dp.OnFirstUse = func(tun *dataplane.Tunnel) error {
		err := firstUse(tun)
		if err := s.TagResource(ctx, &TagResourceInput{ResourceArn: out.TunnelArn, Tags: []Tag{{"k", "v"}}}); err != nil {
			t.Error(err)
		}
		// Read before the token is given back: after, the saver may have
		// written it unused already.
		used, rerr := savedUsed(dir, out.TunnelID, dataplane.Destination)
		if rerr != nil {
			t.Error(rerr)
		}
		written.Store(used)
		return err
	}
	go s.Serve(l)
	armed.Store(true)
	if _, status, body := dialWS(t, l.Addr().String(), "destination", out.DestinationAccessToken, ""); status != http.StatusServiceUnavailable {
		t.Fatalf("first connect, its use not saved: %d %s, want 503", status, body)
	}
	if !written.Load() {
		t.Fatal("the other call's save did not write the token used: the test is not testing")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		used, err := savedUsed(dir, out.TunnelID, dataplane.Destination)
		if err != nil {
			t.Fatal(err)
		}
		if !used {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the state file still has the given-back token used")
		}
	}
}
