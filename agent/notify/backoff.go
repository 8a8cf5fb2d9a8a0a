package notify

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is exponential backoff with jitter: attempt n (n ≥ 1) waits a
// random duration in [min, min·2ⁿ], with min·2ⁿ capped at max. Attempt 0 (the
// reconnect after a lasting connection) waits a random duration in [0, min]:
// full jitter below the floor. The floor keeps a flapping link from spinning;
// the jitter keeps a fleet of devices from reconnecting in step when the broker
// drops every connection at once (a broker restarted or a load balancer node
// drained, AWS IoT Core's SERVER_INITIATED_DISCONNECT), into the account's
// connect-rate quota.
type backoff struct {
	min, max time.Duration
	rand     func(n int64) int64 // nil means math/rand/v2.Int64N; a test seam
}

func (b backoff) delay(attempt int) time.Duration {
	r := rand.Int64N
	if b.rand != nil {
		r = b.rand
	}
	if attempt <= 0 {
		return time.Duration(r(int64(b.min) + 1))
	}
	ceil := b.min
	for i := 0; i < attempt && ceil < b.max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, b.max)
	if ceil <= b.min {
		return b.min
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
