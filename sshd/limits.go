package sshd

import (
	"sync"
	"time"
)

// failureLimiter counts connections that ended without authenticating, per
// source, in a sliding window.
type failureLimiter struct {
	max    int // <0: off
	window time.Duration

	mu   sync.Mutex
	hits map[string][]time.Time
}

// maxTrackedSources bounds the limiter's memory on a small device; when it is
// reached, sources whose failures have all expired are dropped first and,
// if that is not enough, everything is forgotten.
const maxTrackedSources = 4096

func newFailureLimiter(max int, window time.Duration) *failureLimiter {
	return &failureLimiter{max: max, window: window, hits: make(map[string][]time.Time)}
}

// prunedLocked drops the failures of src older than the window.
func (l *failureLimiter) prunedLocked(src string, now time.Time) []time.Time {
	h := l.hits[src]
	i := 0
	for i < len(h) && now.Sub(h[i]) >= l.window {
		i++
	}
	h = h[i:]
	if len(h) == 0 {
		delete(l.hits, src)
		return nil
	}
	l.hits[src] = h
	return h
}

// blocked reports whether src has reached the limit.
func (l *failureLimiter) blocked(src string, now time.Time) bool {
	if l.max < 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.prunedLocked(src, now)) >= l.max
}

// fail records one failed connection from src.
func (l *failureLimiter) fail(src string, now time.Time) {
	if l.max < 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.hits[src]; !ok && len(l.hits) >= maxTrackedSources {
		for k := range l.hits {
			l.prunedLocked(k, now)
		}
		if len(l.hits) >= maxTrackedSources {
			clear(l.hits)
		}
	}
	h := append(l.prunedLocked(src, now), now)
	if len(h) > l.max {
		h = h[len(h)-l.max:]
	}
	l.hits[src] = h
}

// acquireSession takes one of the MaxSessions slots.
func (s *Server) acquireSession() bool {
	limit := s.MaxSessions
	if limit == 0 {
		limit = 10
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit > 0 && s.sessions >= limit {
		return false
	}
	s.sessions++
	return true
}

func (s *Server) releaseSession() {
	s.mu.Lock()
	s.sessions--
	s.mu.Unlock()
}
