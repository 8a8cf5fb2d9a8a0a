package tunnel

import (
	"testing"
	"time"
)

// WithoutNotsentLowat makes local connections' TCP_NOTSENT_LOWAT fail as a
// kernel before 3.12 fails it (ENOPROTOOPT, for an option it does not know),
// until t ends. No test may run in parallel with t.
func WithoutNotsentLowat(t testing.TB) {
	old := tcpNotsentLowat
	tcpNotsentLowat = 0x7777
	t.Cleanup(func() { tcpNotsentLowat = old })
}

// WithDeadPathTimeout sets deadPathTimeout to d until t ends. No test may run
// in parallel with t.
func WithDeadPathTimeout(t testing.TB, d time.Duration) {
	old := deadPathTimeout
	deadPathTimeout = d
	t.Cleanup(func() { deadPathTimeout = old })
}
