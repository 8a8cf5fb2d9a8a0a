package tunneld

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify"
)

// fakeNotifier records notifications; while down, Notify waits for ctx as a
// disconnected MQTT client does, then fails.
type fakeNotifier struct {
	mu   sync.Mutex
	down bool
	got  chan Notification
}

func newFakeNotifier(down bool) *fakeNotifier {
	return &fakeNotifier{down: down, got: make(chan Notification, 16)}
}

func (f *fakeNotifier) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakeNotifier) Notify(ctx context.Context, n Notification) error {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
		return errors.New("broker down")
	}
	f.got <- n
	return nil
}

func (f *fakeNotifier) next(t *testing.T) Notification {
	t.Helper()
	select {
	case n := <-f.got:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	return Notification{}
}

func (f *fakeNotifier) none(t *testing.T, wait time.Duration) {
	t.Helper()
	select {
	case n := <-f.got:
		t.Fatalf("unexpected notification for %s", n.ThingName)
	case <-time.After(wait):
	}
}

func TestNotificationPayload(t *testing.T) {
	n := Notification{ThingName: "dev1", ClientAccessToken: "tok", Region: "eu-west-1", Services: []string{"SSH", "WEB"}}
	if got, want := n.Topic(), "$aws/things/dev1/tunnels/notify"; got != want {
		t.Errorf("Topic() = %q, want %q", got, want)
	}
	var m map[string]any
	if err := json.Unmarshal(n.Payload(), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"clientAccessToken": "tok", "clientMode": "destination", "region": "eu-west-1", "services": []any{"SSH", "WEB"}}
	if len(m) != 4 || m["clientAccessToken"] != want["clientAccessToken"] || m["clientMode"] != want["clientMode"] ||
		m["region"] != want["region"] || !slices.Equal(m["services"].([]any), want["services"].([]any)) {
		t.Errorf("Payload() = %s, want exactly %v", n.Payload(), want)
	}
}

// TestRegionRuleIsTheAgents: every notification carries the server's region,
// and the agent refuses all of them for a region it does not take, so New and
// --region take exactly what the agent's parser does (regionPattern is a copy:
// tunneld may not import agent/notify). Every byte is tried in a region, and
// the lengths at the bounds.
func TestRegionRuleIsTheAgents(t *testing.T) {
	regions := []string{"", "a", strings.Repeat("a", 64), strings.Repeat("a", 65), "us-east-1", "bad region", "US_EAST.1", "é"}
	for b := 0; b < 256; b++ {
		regions = append(regions, "eu"+string(rune(b))+"1", "eu"+string([]byte{byte(b)})+"1")
	}
	for _, r := range regions {
		p := Notification{ThingName: "dev1", ClientAccessToken: "AQGAAXiUfaketoken1234567890", Region: r, Services: []string{"SSH"}}.Payload()
		_, agentErr := notify.ParseNotification(p)
		if ours := checkRegion(r); (ours == nil) != (agentErr == nil) {
			t.Errorf("region %q: checkRegion = %v, the agent's parser = %v; want both to take it or both to refuse it", r, ours, agentErr)
		}
	}
}

func TestNotifyOnOpenAndRotate(t *testing.T) {
	fn := newFakeNotifier(false)
	ts := startServer(t, Config{Notifier: fn, Region: "ap-south-1"})
	out := ts.open(t, "dev1", "SSH", "WEB")
	n := fn.next(t)
	if n.ThingName != "dev1" || n.ClientAccessToken != out.DestinationAccessToken || n.Region != "ap-south-1" || !slices.Equal(n.Services, []string{"SSH", "WEB"}) {
		t.Errorf("notification = %+v (token is the destination's: %v)", n, n.ClientAccessToken == out.DestinationAccessToken)
	}
	ctx := context.Background()
	if _, err := ts.RotateTunnelAccessToken(ctx, &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: ClientModeSource}); err != nil {
		t.Fatal(err)
	}
	ts.open(t, "", "SSH") // no thing: nobody to notify
	fn.none(t, 100*time.Millisecond)
	for _, mode := range []string{ClientModeDestination, ClientModeAll} {
		r, err := ts.RotateTunnelAccessToken(ctx, &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: mode})
		if err != nil {
			t.Fatal(err)
		}
		if n := fn.next(t); n.ClientAccessToken != r.DestinationAccessToken {
			t.Errorf("rotation %s notified another token than the new destination token", mode)
		}
	}
}

// A destination rotation whose save fails is answered InternalFailure but is
// in effect (the old token revoked, the device cut off): its new token is
// published at once. It waited for an unrelated wake of the notifier.
func TestRotationNotifiedWhenItsSaveFails(t *testing.T) {
	release := make(chan struct{})
	h := &gatedNotifier{gates: map[string]chan struct{}{"dev1": release}, got: make(chan Notification, 4), entered: make(chan string, 4)}
	ts := startServer(t, Config{DataDir: t.TempDir(), Notifier: h})
	out := ts.open(t, "dev1", "SSH")
	<-h.entered // publishing the first token
	// Any wake already asked for is taken: only the rotation can ask for
	// the next round.
	select {
	case <-ts.wake:
	default:
	}
	restore := replaceWriteState(ts.Server, func(writeFunc) writeFunc {
		return func(string, os.FileMode, func(io.Writer) error) error { return errors.New("no space left on device") }
	})
	defer restore()
	r, err := ts.RotateTunnelAccessToken(context.Background(), &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: ClientModeDestination})
	if err == nil {
		t.Fatalf("rotation answered as saved with every write failing: %+v", r)
	}
	close(release)
	if n := <-h.got; n.ClientAccessToken != out.DestinationAccessToken {
		t.Fatal("the first notification was not the first token's")
	}
	select {
	case n := <-h.got:
		if n.ClientAccessToken == out.DestinationAccessToken {
			t.Error("the revoked destination token was published again")
		}
	case <-time.After(5 * time.Second):
		t.Error("the rotated destination token was not published in 5 s; the device stays cut off")
	}
}

func TestNotifyWhileBrokerDown(t *testing.T) {
	fn := newFakeNotifier(true)
	ts := startServer(t, Config{Notifier: fn, retry: 10 * time.Millisecond})
	start := time.Now()
	out := ts.open(t, "dev1", "SSH")
	if el := time.Since(start); el > time.Second {
		t.Errorf("OpenTunnel took %v with the broker down, want no wait", el)
	}
	fn.none(t, 200*time.Millisecond)
	// Rotated while still down: only the newest token is worth publishing.
	r, err := ts.RotateTunnelAccessToken(context.Background(), &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: ClientModeDestination})
	if err != nil {
		t.Fatal(err)
	}
	fn.setDown(false)
	// An attempt under way during the rotation may still deliver the old token (as it
	// could at AWS); the new one must follow, and nothing after it.
	n := fn.next(t)
	if n.ClientAccessToken == out.DestinationAccessToken {
		n = fn.next(t)
	}
	if n.ClientAccessToken != r.DestinationAccessToken {
		t.Errorf("after the broker came back: %v, want the rotated token", n)
	}
	fn.none(t, 200*time.Millisecond)
}

func TestNotifyPendingSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	down := newFakeNotifier(true)
	ts := startServer(t, Config{DataDir: dir, Notifier: down, retry: 10 * time.Millisecond})
	out := ts.open(t, "dev1", "SSH")
	ts.shutdown(t)

	up := newFakeNotifier(false)
	startServer(t, Config{DataDir: dir, Notifier: up})
	if n := up.next(t); n.ClientAccessToken != out.DestinationAccessToken || n.ThingName != "dev1" {
		t.Errorf("after restart, notification %+v, want the tunnel's destination token for dev1", n.ThingName)
	}
}

func TestSecretsDoNotPrint(t *testing.T) {
	const secret = "s3cr3t-token-value-that-must-not-print"
	for _, v := range []any{
		Notification{ThingName: "dev1", ClientAccessToken: secret},
		OpenTunnelOutput{TunnelID: "t", SourceAccessToken: secret, DestinationAccessToken: secret},
		&OpenTunnelOutput{SourceAccessToken: secret, DestinationAccessToken: secret},
		RotateTunnelAccessTokenOutput{SourceAccessToken: secret, DestinationAccessToken: secret},
		&RotateTunnelAccessTokenOutput{DestinationAccessToken: secret},
	} {
		for _, s := range []string{fmt.Sprint(v), fmt.Sprintf("%v %+v %#v", v, v, v)} {
			if strings.Contains(s, secret) {
				t.Errorf("%T prints its token: %s", v, s)
			}
		}
	}
}

// refusingNotifier refuses the notifications of one thing, as a broker whose ACL
// does not let tunneld publish on that thing's topic, and delivers the others.
type refusingNotifier struct {
	bad      string
	refusals chan struct{}
	got      chan Notification
}

func (f *refusingNotifier) Notify(ctx context.Context, n Notification) error {
	if n.ThingName == f.bad {
		select {
		case f.refusals <- struct{}{}:
		default:
		}
		return fmt.Errorf("reason code 0x87: %w", ErrNotifyRefused)
	}
	f.got <- n
	return nil
}

// A notification that keeps failing for one thing must not hold up the
// notification of a tunnel opened for another: the device waits for it, and the
// operator with it.
func TestFailingNotificationDoesNotDelayOthers(t *testing.T) {
	f := &refusingNotifier{bad: "bad", refusals: make(chan struct{}, 1), got: make(chan Notification, 4)}
	ts := startServer(t, Config{Notifier: f, retry: 40 * time.Second})
	ts.open(t, "bad", "SSH")
	<-f.refusals // the notifier now backs off for 20-60 s
	ts.open(t, "good", "SSH")
	select {
	case <-f.got:
	case <-time.After(15 * time.Second):
		t.Fatal("no notification for good within 15 s: it waited for the back-off (20-60 s) of another thing's")
	}
}

// A notification cut by the stop is said to stay pending for the next start,
// not warned of as a failure "will retry" with "context canceled", at every
// stop with a publish under way.
func TestStopDuringNotificationSaysItStaysPending(t *testing.T) {
	h := &gatedNotifier{gates: map[string]chan struct{}{"dev1": make(chan struct{})}, got: make(chan Notification, 1), entered: make(chan string, 1)}
	var logs syncBuffer
	s, err := New(Config{DataDir: t.TempDir(), Notifier: h, Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tlogWriter{t}), nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenTunnel(context.Background(), &OpenTunnelInput{DestinationConfig: &DestinationConfig{ThingName: "dev1", Services: []string{"SSH"}}}); err != nil {
		t.Fatal(err)
	}
	<-h.entered
	s.Close()
	if l := logs.String(); !strings.Contains(l, "it stays pending") || strings.Contains(l, "will retry") {
		t.Errorf("a notification cut by the stop; log:\n%s", l)
	}
}
