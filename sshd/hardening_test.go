package sshd

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// heapAfterGC is the live heap after a full collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestThousandFailedLogins: 1000 connections from one source that fail to log in.
// With the default limit (10 a minute) the rest are closed before the key
// exchange, the limiter remembers at most 10 failures for the source, and the
// server's heap and goroutines do not grow with the attempts.
func TestThousandFailedLogins(t *testing.T) {
	e := newEnv(t, nil)
	bad := newSigner(t)
	heap0, g0 := heapAfterGC(), runtime.NumGoroutine()
	var authTried, refusedEarly atomic.Int32
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for range 1000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cfg := e.clientConfig("root", gossh.PublicKeysCallback(func() ([]gossh.Signer, error) {
				authTried.Add(1)
				return []gossh.Signer{bad}, nil
			}))
			cfg.Timeout = 10 * time.Second
			c, err := gossh.Dial("tcp", e.addr, cfg)
			if err == nil {
				c.Close()
				t.Error("a bad key logged in")
				return
			}
			refusedEarly.Add(1)
		}()
	}
	wg.Wait()
	waitFor(t, "connections to end", func() bool { return runtime.NumGoroutine() <= g0+2 })
	heap1 := heapAfterGC()
	e.srv.limiter.mu.Lock()
	tracked, hits := len(e.srv.limiter.hits), len(e.srv.limiter.hits["127.0.0.1"])
	e.srv.limiter.mu.Unlock()
	t.Logf("1000 failed logins: %d reached authentication; limiter tracks %d source(s), %d failures; heap %d KiB -> %d KiB; goroutines %d -> %d",
		authTried.Load(), tracked, hits, heap0>>10, heap1>>10, g0, runtime.NumGoroutine())
	// A failure is recorded when its connection ends, so the connections
	// accepted before the 10th is recorded reach authentication too: up to the
	// 8 in flight, and as many again when the server's ends lag behind the
	// clients' (21 was seen with two busy CPUs). Without the limit all 1000 would.
	if n := int(authTried.Load()); n > 10+2*cap(sem) {
		t.Errorf("%d connections reached authentication, want about 10 (the rate limit) plus those in flight", n)
	}
	if hits > 10 || tracked > 1 {
		t.Errorf("limiter holds %d sources and %d failures, want 1 and at most 10", tracked, hits)
	}
	if heap1 > heap0+2<<20 {
		t.Errorf("heap grew from %d to %d bytes over 1000 failed logins", heap0, heap1)
	}
}

// TestFailureLimiterBoundedSources: failures from many distinct sources (tunnel
// stream labels, spoofed addresses) never make the limiter track more than
// maxTrackedSources.
func TestFailureLimiterBoundedSources(t *testing.T) {
	l := newFailureLimiter(10, time.Minute)
	now := time.Unix(1000, 0)
	for i := range 3 * maxTrackedSources {
		l.fail(fmt.Sprintf("tunnel:%d", i), now)
	}
	if n := len(l.hits); n > maxTrackedSources {
		t.Fatalf("limiter tracks %d sources, want at most %d", n, maxTrackedSources)
	}
}

// TestThousandChannels: a logged-in client that opens 1000 session channels at
// once gets MaxSessions (default 10) of them; 1000 channels of an unknown type
// are all refused; after it disconnects the server is back to its goroutines.
func TestThousandChannels(t *testing.T) {
	e := newEnv(t, nil)
	g0 := runtime.NumGoroutine()
	c := e.login("root")
	var opened, refused atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var chans []gossh.Channel
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, reqs, err := c.OpenChannel("session", nil)
			if err != nil {
				refused.Add(1)
				return
			}
			go gossh.DiscardRequests(reqs)
			opened.Add(1)
			mu.Lock()
			chans = append(chans, ch)
			mu.Unlock()
		}()
	}
	wg.Wait()
	var unknown atomic.Int32
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ch, _, err := c.OpenChannel("bogus-channel", nil); err == nil {
				ch.Close()
				unknown.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("1000 session channels: %d opened, %d refused; 1000 unknown channels: %d opened; goroutines %d (before login %d)",
		opened.Load(), refused.Load(), unknown.Load(), runtime.NumGoroutine(), g0)
	if opened.Load() > 10 {
		t.Errorf("%d session channels opened, want at most MaxSessions (10)", opened.Load())
	}
	if unknown.Load() != 0 {
		t.Errorf("%d channels of an unknown type opened", unknown.Load())
	}
	for _, ch := range chans {
		ch.Close()
	}
	c.Close()
	waitFor(t, "goroutines back", func() bool { return runtime.NumGoroutine() <= g0+2 })
}
