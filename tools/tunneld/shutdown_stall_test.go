package tunneld

import (
	"context"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// Devices that have stopped reading do not hold up Shutdown: each cut of a
// stalled TLS WebSocket waited out close_notify's 5 s write deadline, one after
// the other, past Shutdown's ctx (the command's 10 s stop budget, systemd's
// TimeoutStopSec, then SIGKILL before the final save).
func TestShutdownNotHeldByStalledTLSClients(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	ts := startServer(t, Config{TLS: pki.ServerTLS(t, "tunneld")})
	for range 3 {
		_, _, _, sender := stalledDestination(t, ts, pki)
		waitStalled(t, sender) // buffers fill, writers block
	}

	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	ts.Shutdown(sctx)
	if d := time.Since(start); d >= 5*time.Second {
		t.Errorf("Shutdown with a 1 s context and 3 stalled TLS clients took %v", d.Round(100*time.Millisecond))
	}
}
