package tunneld

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// BenchmarkOpenTunnelAtScale: OpenTunnel from 8 goroutines per CPU with 2,000
// tunnels in the state file, each call returning once its change is saved (the
// whole file, fsynced). docs/benchmarks.md has the figures, with and without
// group commit (store.go's save).
func BenchmarkOpenTunnelAtScale(b *testing.B) {
	const existing = 2000
	dir := b.TempDir()
	open := func(s *Server, i int) error {
		_, err := s.OpenTunnel(context.Background(), &OpenTunnelInput{Description: fmt.Sprint("bench ", i),
			DestinationConfig: &DestinationConfig{ThingName: fmt.Sprint("thing-", i%50), Services: []string{"SSH"}}})
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{MaxOpenTunnels: 1 << 20, MaxClosedTunnels: 1 << 20, Logger: quiet}
	// The existing tunnels, made in memory and written once.
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for i := range existing {
		if err := open(s, i); err != nil {
			b.Fatal(err)
		}
	}
	s.cfg.DataDir = dir
	if err := s.save(); err != nil {
		b.Fatal(err)
	}
	s.cfg.DataDir = ""
	s.Close()

	cfg.DataDir = dir
	s, err = New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetParallelism(8) // goroutines per CPU: 16 callers on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := open(s, existing+i); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// maxTagsTunnels is how many tunnels the max-tags benchmarks keep: the default
// limits, --max-open-tunnels 100 and --max-closed-tunnels 1000.
const maxTagsTunnels = 1100

// maxTagsDir returns a data directory whose state file holds n open tunnels,
// each with the most tags an API client may give (validate.go: 200 tags,
// 128-character keys, 256-character values, here ASCII).
func maxTagsDir(tb testing.TB, n int) string {
	tb.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(Config{MaxOpenTunnels: n, MaxClosedTunnels: n, Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	for i := range n {
		tags := make([]Tag, maxTags)
		for j := range tags {
			tags[j] = Tag{Key: fmt.Sprintf("%03d-%0*d", j, maxTagKey-4, i), Value: fmt.Sprintf("%0*d", maxTagValue, i)}
		}
		if _, err := s.OpenTunnel(context.Background(), &OpenTunnelInput{Tags: tags,
			DestinationConfig: &DestinationConfig{ThingName: fmt.Sprint("thing-", i), Services: []string{"SSH"}}}); err != nil {
			tb.Fatal(err)
		}
	}
	st := state{Version: stateVersion}
	s.mu.Lock()
	for _, r := range s.tunnels {
		s.syncLocked(r)
		st.Tunnels = append(st.Tunnels, r)
	}
	b, err := json.Marshal(&st)
	s.mu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFile), b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// newMaxTagsServer is New restoring maxTagsDir(tb, n).
func newMaxTagsServer(tb testing.TB, n int) *Server {
	tb.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(Config{MaxOpenTunnels: n, MaxClosedTunnels: n, Logger: quiet, DataDir: maxTagsDir(tb, n)})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// heapPeak samples the bytes of heap objects (live or not yet collected)
// until stop is called, which returns the highest sample.
func heapPeak() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	done, peak := make(chan struct{}), make(chan uint64)
	go func() {
		var top uint64
		for {
			metrics.Read(sample)
			top = max(top, sample[0].Value.Uint64())
			select {
			case <-done:
				peak <- top
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	return func() uint64 { close(done); return <-peak }
}

// measureHeap runs f with b's timer on, and with it off around it: after a GC,
// it reads the heap (before), samples the heap's peak while f runs, and
// returns those and what f allocated. The timer is left off.
func measureHeap(b *testing.B, f func()) (before, peak, alloc uint64) {
	b.StopTimer()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before, total := ms.HeapAlloc, ms.TotalAlloc
	stopPeak := heapPeak()
	b.StartTimer()
	f()
	b.StopTimer()
	peak = stopPeak()
	runtime.ReadMemStats(&ms)
	return before, peak, ms.TotalAlloc - total
}

// lockWait measures, until stop is called, the longest s.mu was waited for
// by a goroutine that takes it again and again: how long a save holds it.
func lockWait(s *Server) (stop func() time.Duration) {
	done, longest := make(chan struct{}), make(chan time.Duration)
	go func() {
		var top time.Duration
		for {
			t := time.Now()
			s.mu.Lock()
			//lint:ignore SA2001 the wait for the lock is what is measured
			s.mu.Unlock()
			top = max(top, time.Since(t))
			select {
			case <-done:
				longest <- top
				return
			case <-time.After(50 * time.Microsecond):
			}
		}
	}()
	return func() time.Duration { close(done); return <-longest }
}

// BenchmarkSaveMaxTags: one save of 1,100 tunnels with the most tags each. It
// reports the state file's size, the heap a save adds at its peak over the
// live heap before it (sampled every 100 µs), the bytes it allocates, and the
// longest wait for s.mu during it. docs/benchmarks.md has the figures.
func BenchmarkSaveMaxTags(b *testing.B) {
	s := newMaxTagsServer(b, maxTagsTunnels)
	defer s.Close()
	var peak, alloc uint64
	var wait time.Duration
	b.ResetTimer()
	for range b.N {
		var err error
		before, top, a := measureHeap(b, func() {
			stopWait := lockWait(s)
			err = s.save()
			wait = max(wait, stopWait())
		})
		if err != nil {
			b.Fatal(err)
		}
		peak, alloc = max(peak, top-before), max(alloc, a)
		b.StartTimer()
	}
	fi, err := os.Stat(filepath.Join(s.cfg.DataDir, stateFile))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "file-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-added-MiB")
	b.ReportMetric(float64(alloc)/(1<<20), "alloc-MiB")
	b.ReportMetric(float64(wait.Microseconds())/1000, "max-mu-wait-ms")
}

// BenchmarkLoadMaxTags: New restoring the state file of BenchmarkSaveMaxTags.
// It reports the live heap New's server holds (the tunnels themselves), the
// heap at its peak over it, sampled every 100 µs, and the bytes allocated.
func BenchmarkLoadMaxTags(b *testing.B) {
	s := newMaxTagsServer(b, maxTagsTunnels)
	dir := s.cfg.DataDir
	if err := s.save(); err != nil { // as tunneld writes it
		b.Fatal(err)
	}
	s.Close()
	s = nil
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{MaxOpenTunnels: maxTagsTunnels, MaxClosedTunnels: maxTagsTunnels, Logger: quiet, DataDir: dir}
	var peakOver, alloc, live uint64
	b.ResetTimer()
	for range b.N {
		var err error
		_, top, a := measureHeap(b, func() { s, err = New(cfg) })
		if err != nil {
			b.Fatal(err)
		}
		// The live heap New left is what freeing its server frees: the heap
		// before New still held the previous server's (its Close lets go of
		// it later).
		var after, gone runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		s.Close()
		s = nil
		runtime.GC()
		runtime.ReadMemStats(&gone)
		live = after.HeapAlloc - min(gone.HeapAlloc, after.HeapAlloc)
		peakOver, alloc = max(peakOver, top-after.HeapAlloc), max(alloc, a)
		b.StartTimer()
	}
	b.ReportMetric(float64(live)/(1<<20), "live-MiB")
	b.ReportMetric(float64(peakOver)/(1<<20), "peak-over-live-MiB")
	b.ReportMetric(float64(alloc)/(1<<20), "alloc-MiB")
}
