package console

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/tunneld"
)

// TestTunneldAPI opens and closes a tunnel over HTTP, as porthole-console --tunneld
// does, against a tunneld that wants a SigV4-shaped Authorization header.
func TestTunneldAPI(t *testing.T) {
	td, err := tunneld.New(tunneld.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); td.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		td.Shutdown(ctx)
		<-done
	}()

	api := &TunneldAPI{URL: "http://" + ln.Addr().String()}
	ctx := context.Background()
	id, tok, err := api.OpenTunnel(ctx, "dev1", []string{"SSH", "HTTP"}, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if id == "" || tok.IsZero() {
		t.Fatalf("OpenTunnel = %q, %v", id, tok)
	}
	d, err := td.DescribeTunnel(ctx, &tunneld.DescribeTunnelInput{TunnelID: id})
	if err != nil {
		t.Fatal(err)
	}
	if d.Tunnel.DestinationConfig.ThingName != "dev1" || len(d.Tunnel.DestinationConfig.Services) != 2 ||
		d.Tunnel.TimeoutConfig.MaxLifetimeTimeoutMinutes != 30 {
		t.Fatalf("the tunnel opened: %+v", d.Tunnel)
	}
	if err := api.CloseTunnel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if d, _ := td.DescribeTunnel(ctx, &tunneld.DescribeTunnelInput{TunnelID: id}); d.Tunnel.Status != tunneld.StatusClosed {
		t.Fatalf("status after CloseTunnel: %s", d.Tunnel.Status)
	}
	// The service's errors come back with their type and message.
	err = api.CloseTunnel(ctx, "no-such-tunnel")
	if err == nil || !strings.Contains(err.Error(), "ResourceNotFoundException") {
		t.Fatalf("CloseTunnel(unknown) = %v, want ResourceNotFoundException", err)
	}
}
