package agent

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestClockIn1970 feeds the session's state callback the error a TLS handshake
// gives when the device's clock is in 1970 (every certificate "expired" or not
// yet valid): the log says the clock is behind, once the clock is set the same
// error is an ordinary network failure again.
func TestClockIn1970(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	now := time.Unix(0, 0)
	a := &Agent{cfg: &Config{}, log: log, now: func() time.Time { return now }}
	onState := a.onState(&session{fp: "abcd"}, log)
	certErr := fmt.Errorf("tunnel: connecting: tls: failed to verify certificate: %w",
		x509.CertificateInvalidError{Reason: x509.Expired, Detail: "current time 1970-01-01T00:00:00Z is before 2026-01-01T00:00:00Z"})

	onState(false, certErr)
	if got := buf.String(); !strings.Contains(got, "the clock is before this binary was built") || !strings.Contains(got, "clock=1970-01-01") {
		t.Fatalf("with the clock in 1970 the log says:\n%s", got)
	}
	buf.Reset()
	now = BuildTime().Add(time.Hour) // NTP set the clock
	onState(false, certErr)
	onState(true, nil)
	if got := buf.String(); strings.Contains(got, "clock") {
		t.Fatalf("with the clock set the log still blames it:\n%s", got)
	}
}
