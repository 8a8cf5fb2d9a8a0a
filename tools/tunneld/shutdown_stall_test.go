package tunneld

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// Devices that have stopped reading do not hold up Shutdown: each cut of a
// stalled TLS WebSocket waited out close_notify's 5 s write deadline, one after
// the other, past Shutdown's ctx (the command's 10 s stop budget, systemd's
// TimeoutStopSec, then SIGKILL before the final save).
func TestShutdownNotHeldByStalledTLSClients(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	ts := startServer(t, Config{TLS: pki.ServerTLS(t, "tunneld")})
	ctx := context.Background()
	var dones []chan struct{}
	for range 3 {
		out := ts.open(t, "", "SSH")
		h := http.Header{}
		h.Set("access-token", out.DestinationAccessToken)
		ws, _, err := websocket.Dial(ctx, "wss://"+ts.addr+"/tunnel?local-proxy-mode=destination", &websocket.DialOptions{
			HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLS(t)}},
			HTTPHeader:   h,
			Subprotocols: []string{"aws.iot.securetunneling-3.0"},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow() // never read: its socket buffers fill up
		dp := ts.Dataplane(out.TunnelID)
		if err := dp.WaitConnects(ctx, dataplane.Destination, 1); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		dones = append(dones, done)
		go func() {
			defer close(done)
			payload := make([]byte, 60000)
			for dp.Send(dataplane.Destination, &tunnel.Message{Type: tunnel.TypeData, StreamID: 1, ServiceID: "SSH", Payload: payload}) == nil {
			}
		}()
	}
	time.Sleep(2 * time.Second) // buffers fill, writers block

	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	start := time.Now()
	ts.Shutdown(sctx)
	if d := time.Since(start); d >= 5*time.Second {
		t.Errorf("Shutdown with a 1 s context and 3 stalled TLS clients took %v", d.Round(100*time.Millisecond))
	}
	for _, d := range dones {
		<-d
	}
}
