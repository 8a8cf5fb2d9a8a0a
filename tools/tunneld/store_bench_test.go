package tunneld

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
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
