package tunnel

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
)

// A peer's flood of frames writes peerLogBurst lines of a message per window;
// the first line of the next window counts those dropped. Other messages
// have their own count.
func TestPeerLogLimited(t *testing.T) {
	var lines testlog.Lines
	log := slog.New(slog.NewTextHandler(&lines, nil))
	var p peerLog
	for i := range 1000 {
		p.log(log, slog.LevelWarn, "refusing connection", "conn", i)
	}
	p.log(log, slog.LevelInfo, "stream started")
	if n := strings.Count(lines.String(), "refusing connection"); n != peerLogBurst {
		t.Errorf("%d lines for 1000 refusals, want %d", n, peerLogBurst)
	}
	if !strings.Contains(lines.String(), "stream started") {
		t.Error("another message was held back by the first one's limit")
	}
	p.mu.Lock()
	p.bursts["refusing connection"].start = time.Now().Add(-peerLogWindow)
	p.mu.Unlock()
	p.log(log, slog.LevelWarn, "refusing connection", "conn", 1000)
	if want := "suppressed_before=990"; !strings.Contains(lines.String(), want) {
		t.Errorf("the first line of the next window lacks %q:\n%s", want, lines.String())
	}
}
