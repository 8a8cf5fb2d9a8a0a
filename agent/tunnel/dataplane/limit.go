package dataplane

import (
	"context"
	"sync"
	"time"
)

// limiter is a token bucket of one second's worth of bytes. A wait larger than the
// bucket runs it into debt, so frames bigger than the rate still pass, later.
type limiter struct {
	mu     sync.Mutex
	rate   float64 // bytes per second; 0 = unlimited
	tokens float64
	last   time.Time
}

func (l *limiter) set(bytesPerSecond int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate = max(float64(bytesPerSecond), 0)
	l.tokens, l.last = l.rate, time.Now()
}

// wait takes n bytes from the bucket, sleeping until it is out of debt or ctx ends.
func (l *limiter) wait(ctx context.Context, n int) {
	l.mu.Lock()
	if l.rate == 0 {
		l.mu.Unlock()
		return
	}
	now := time.Now()
	l.tokens = min(l.tokens+now.Sub(l.last).Seconds()*l.rate, l.rate)
	l.last = now
	l.tokens -= float64(n)
	var d time.Duration
	if l.tokens < 0 {
		d = time.Duration(-l.tokens / l.rate * float64(time.Second))
	}
	l.mu.Unlock()
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}
