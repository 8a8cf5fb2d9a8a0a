package notify

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is exponential backoff with jitter: attempt n (n ≥ 1) waits a
// random duration in [min, min·2ⁿ], with min·2ⁿ capped at max. Attempt 0
// waits nothing. The floor keeps a flapping link from spinning; the jitter keeps
// a fleet of devices from reconnecting in step after a broker restart.
type backoff struct {
	min, max time.Duration
	rand     func(n int64) int64 // nil means math/rand/v2.Int64N; a test seam
}

func (b backoff) delay(attempt int) time.Duration {
	if attempt <= 0 {
		return 0
	}
	ceil := b.min
	for i := 0; i < attempt && ceil < b.max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, b.max)
	if ceil <= b.min {
		return b.min
	}
	r := rand.Int64N
	if b.rand != nil {
		r = b.rand
	}
	return b.min + time.Duration(r(int64(ceil-b.min)+1))
}

// sleep waits d or until ctx ends, and reports whether it waited the full d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
