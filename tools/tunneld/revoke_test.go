package tunneld

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// The side connected with a rotated token gets a Close frame, 1008 with
// CloseReasonTokenRotated, on the wire: a bare TCP close read as a network
// failure, and every client reconnected with the revoked token.
func TestRotationSendsCloseFrame(t *testing.T) {
	ts := startServer(t, Config{})
	out := ts.open(t, "", "SSH")
	ws, status, body := dialWS(t, ts.addr, "destination", out.DestinationAccessToken, "")
	if status != 101 {
		t.Fatalf("handshake: %d %q", status, body)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	if _, _, err := ws.Read(ctx); err != nil { // SERVICE_IDS
		t.Fatal(err)
	}
	if _, err := ts.RotateTunnelAccessToken(ctx, &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: ClientModeDestination}); err != nil {
		t.Fatal(err)
	}
	_, _, err := ws.Read(ctx)
	if ce := (websocket.CloseError{}); !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != CloseReasonTokenRotated {
		t.Errorf("read after the rotation: %v; want a Close frame 1008 %q", err, CloseReasonTokenRotated)
	}
}

// A holder of a rotated token that had stopped reading, with its queue full
// and the data plane's writer blocked, still gets the Close frame once it reads
// again within the grace: what was queued for it is dropped, not written first.
func TestRotationClosesAStalledReader(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	ts := startServer(t, Config{TLS: pki.ServerTLS(t, "tunneld")})
	out, _, ws, sender := stalledDestination(t, ts, pki)
	waitStalled(t, sender) // the buffers fill and the data plane's writer blocks
	ctx := context.Background()
	if _, err := ts.RotateTunnelAccessToken(ctx, &RotateTunnelAccessTokenInput{TunnelID: out.TunnelID, ClientMode: ClientModeDestination}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws.SetReadLimit(-1)
	n, data := 0, 0
	var err error
	for ; err == nil; n++ {
		var b []byte
		if _, b, err = ws.Read(rctx); len(b) > 60000 {
			data++ // a DATA frame of stalledDestination's, not SERVICE_IDS
		}
	}
	if ce := (websocket.CloseError{}); !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != CloseReasonTokenRotated {
		t.Errorf("after %d messages, read: %v; want a Close frame 1008 %q", n-1, err, CloseReasonTokenRotated)
	}
	if total := sender.sent.Load(); int64(data) >= total {
		t.Errorf("the revoked reader got all %d DATA frames queued for it, want those still queued dropped", total)
	} else {
		t.Logf("%d of %d DATA frames reached the revoked reader", data, total)
	}
}
