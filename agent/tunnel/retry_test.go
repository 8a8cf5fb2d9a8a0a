package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordedDelays is a slog handler that keeps the delay of each line whose
// message starts with prefix.
type recordedDelays struct {
	prefix string
	mu     *sync.Mutex
	delays *[]time.Duration
}

func (h recordedDelays) Enabled(context.Context, slog.Level) bool { return true }
func (h recordedDelays) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h recordedDelays) WithGroup(string) slog.Handler            { return h }
func (h recordedDelays) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, h.prefix) {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "delay" {
			h.mu.Lock()
			*h.delays = append(*h.delays, a.Value.Duration())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

// TestStableConnectionStartsTheBackoffAgain: after connections that each
// ended at once (the backoff grew), one that lasted stableConnection makes
// the next wait the first one's again (at most RetryMin), as after a fresh
// start. Without the reset that wait is drawn from [0, 2^12·RetryMin]; the
// chance that it is still at most RetryMin is below 1 in 2,000.
func TestStableConnectionStartsTheBackoffAgain(t *testing.T) {
	defer func(d time.Duration) { stableConnection = d }(stableConnection)
	stableConnection = 200 * time.Millisecond
	srv := tlsService(t, func(*http.Request) int { return 0 })
	tok, _ := NewAccessToken("t")
	var mu sync.Mutex
	var delays []time.Duration
	cfg := Config{Endpoint: strings.TrimPrefix(srv.URL, "https://"), AccessToken: tok, CAFile: writeCA(t, srv),
		RetryMin: time.Millisecond, RetryMax: time.Hour,
		Logger: slog.New(recordedDelays{prefix: "tunnel connection lost", mu: &mu, delays: &delays})}
	const short = 12 // connections that end at once
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	served := 0
	err := run(ctx, cfg, ModeDestination, func(ctx context.Context, c *Conn) error {
		served++
		switch {
		case served <= short:
		case served == short+1:
			time.Sleep(stableConnection + 50*time.Millisecond)
		default:
			cancel()
		}
		return errors.New("connection ended by the test")
	})
	if err != nil || served != short+2 {
		t.Fatalf("run: %v after %d connections (the test's 60 s ran out?)", err, served)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(delays) != short+1 {
		t.Fatalf("%d lost connections logged with a delay, want %d", len(delays), short+1)
	}
	if d := delays[short]; d > cfg.RetryMin {
		t.Errorf("the wait after a connection of %v was %v, want at most RetryMin (%v): the backoff did not start again", stableConnection, d, cfg.RetryMin)
	}
}
