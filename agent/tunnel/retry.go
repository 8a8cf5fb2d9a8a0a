// The waits between retries. (Named retry.go, not backoff.go: files are laid
// out in name order, and none of this runs while the agent is idle, so it sorts
// after check.go's start-up code: docs/size.md, "Thirty-first round".)

package tunnel

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is exponential backoff with full jitter (spec §3.8, as aws-c-iot): the n-th
// retry waits a random time in [0, min(max, base·2^n)].
type backoff struct {
	base, max time.Duration
	attempt   int
}

func (b *backoff) next() time.Duration {
	d := b.base << min(b.attempt, 30)
	if d <= 0 || d > b.max {
		d = b.max
	}
	b.attempt++
	return rand.N(d + 1)
}

func (b *backoff) reset() { b.attempt = 0 }

// sleepCtx waits d or until ctx ends; it reports whether the full time passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
