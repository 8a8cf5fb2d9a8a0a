//go:build unix

package lab

import (
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// emfileWriter is a log that closes emfile at the first line saying accept(2)
// ran out of descriptors.
type emfileWriter struct {
	emfile chan struct{}
}

func (w *emfileWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "too many open files") && w.emfile != nil {
		close(w.emfile)
		w.emfile = nil
	}
	return len(p), nil
}

// TestBrokerSurvivesEMFILE: the lab's MQTT broker outlives a moment without
// descriptors. mochi's TCP listener returns from its accept loop at the first
// error, EMFILE included, and leaves the port open, so the agent's MQTT
// reconnect and tunneld's publisher then waited in a backlog nobody served,
// and the device got no more tunnel notifications. The broker runs in a child
// process whose descriptor limit is lowered.
func TestBrokerSurvivesEMFILE(t *testing.T) {
	if os.Getenv("PORTHOLE_EMFILE_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
		cmd.Env = append(os.Environ(), "PORTHOLE_EMFILE_CHILD=1")
		out, err := cmd.CombinedOutput()
		t.Logf("child:\n%s", out)
		if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
			t.Fatalf("child: %v", err)
		}
		return
	}
	emfile := make(chan struct{})
	b := startTestBroker(t, slog.New(slog.NewTextHandler(&emfileWriter{emfile}, nil)))
	defer b.stop()
	tlsConfig := b.tlsConfig(t, Thing) // before the descriptors run out
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 64, Max: 64}); err != nil {
		t.Fatal(err)
	}
	var fill []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		fill = append(fill, f)
	}
	// One descriptor left, for the client's socket: the broker's accept(2) then
	// fails with EMFILE.
	fill[len(fill)-1].Close()
	c1, err := net.DialTimeout("tcp", b.addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial with one descriptor left: %v", err)
	}
	select {
	case <-emfile:
	case <-time.After(3 * time.Second): // mochi's own listener says nothing
		t.Log("the broker did not log EMFILE")
	}
	for _, f := range fill[:len(fill)-1] {
		f.Close()
	}
	c1.Close()
	// The TLS handshake needs the broker to accept: its deadline covers the
	// retry's backoff (at most 1 s).
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.addr, tlsConfig)
	if err != nil {
		t.Fatalf("TLS to the broker once descriptors are free again: %v (nobody accepts on its listener any more)", err)
	}
	c.Close()
}
