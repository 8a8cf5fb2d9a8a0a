package stack

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/tunneld"
)

// TestWatchTokensTunneldState: Start watches tunneld's data directory so that
// the tokens its state file held are looked for after the tunnel ended. The
// state file holds them as arrays ("tokens": [source, destination],
// "clientTokens": [...]), which tokenFieldRE alone did not match: nothing was
// recorded.
func TestWatchTokensTunneldState(t *testing.T) {
	dir := t.TempDir()
	s := &Stack{TB: t}
	s.watchTokens(dir)
	td, err := tunneld.New(tunneld.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer td.Close()
	out, err := td.OpenTunnel(context.Background(), &tunneld.OpenTunnelInput{
		DestinationConfig: &tunneld.DestinationConfig{ThingName: "thing", Services: []string{"SSH"}}})
	if err != nil {
		t.Fatal(err)
	}
	state, _ := os.ReadFile(filepath.Join(dir, "tunnels.json"))
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		got := slices.Contains(s.secrets, out.SourceAccessToken) && slices.Contains(s.secrets, out.DestinationAccessToken)
		s.mu.Unlock()
		if got {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("watchTokens recorded none of the tokens of tunneld's state file, which is:\n%.300s…\n(its token fields: %s)", state, regexp.MustCompile(`"(tokens|clientTokens)": \[`).FindAll(state, -1))
}
