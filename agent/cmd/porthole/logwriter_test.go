package main

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/testlog"
)

// stuckWriter blocks every Write until released, then keeps the lines.
type stuckWriter struct {
	release chan struct{}
	testlog.Lines
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.Lines.Write(p)
}

// TestLogWriterDoesNotBlock: while the log's destination takes nothing (a
// stalled serial console, an undrained pipe), logging returns at once; what
// fits in the queue is written in order once the destination takes lines
// again, what did not is dropped and counted in a line of the logger's own
// format, and flush waits for the queue, or gives up on a destination that
// stays stuck.
func TestLogWriterDoesNotBlock(t *testing.T) {
	dst := &stuckWriter{release: make(chan struct{})}
	out := newLogWriter(dst)
	defer out.close(0)
	log := slog.New(slog.NewJSONHandler(out, nil))
	out.onDropped(func(n int) { log.Warn("log lines dropped", "dropped", n) })

	const lines = 5000 // ~0.5 MiB of records, several times logQueue
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		for i := range lines {
			log.Info("login", "n", i, "pad", strings.Repeat("x", 40))
		}
	}()
	select {
	case <-logged:
	case <-time.After(20 * time.Second):
		close(dst.release)
		t.Fatal("logging blocked on a destination that takes nothing")
	}

	t0 := time.Now()
	out.flush(200 * time.Millisecond) // stuck: gives up
	if time.Since(t0) > 10*time.Second {
		t.Fatal("flush did not give up on a stuck destination")
	}

	close(dst.release)
	out.flush(10 * time.Second)
	log.Info("after", "n", lines) // room again: written
	out.flush(10 * time.Second)

	recs := strings.Split(dst.String(), "\n")
	next, dropped, after := 0, 0, false
	for _, r := range recs {
		switch {
		case strings.Contains(r, `"msg":"login"`):
			want := fmt.Sprintf(`"n":%d,`, next)
			if !strings.Contains(r, want) || after || dropped > 0 {
				t.Fatalf("record out of order or torn: %q (want n=%d, before the drop report)", r, next)
			}
			next++
		case strings.Contains(r, `"msg":"log lines dropped"`):
			if _, err := fmt.Sscanf(r[strings.Index(r, `"dropped":`):], `"dropped":%d}`, &dropped); err != nil {
				t.Fatalf("drop report %q: %v", r, err)
			}
		case strings.Contains(r, `"msg":"after"`):
			after = true
		default:
			t.Fatalf("unexpected record %q", r)
		}
	}
	if next == 0 || next+dropped != lines || !after {
		t.Errorf("%d records written, %d reported dropped, after=%v: want %d in all, then the last", next, dropped, after, lines)
	}
	if limit := logQueue / 60; next > limit+1 {
		t.Errorf("%d records of ~100 bytes queued, more than logQueue (%d bytes) holds", next, logQueue)
	}
}

// TestLogWriterLongLine: a record longer than the whole queue is written when
// nothing else waits, not dropped for its length.
func TestLogWriterLongLine(t *testing.T) {
	var got testlog.Lines
	out := newLogWriter(&got)
	defer out.close(0)
	long := strings.Repeat("y", logQueue+1)
	out.Write([]byte(long + "\n"))
	out.flush(10 * time.Second)
	if got.String() != long {
		t.Errorf("a %d-byte line alone: %d bytes written", len(long)+1, len(got.String()))
	}
}
