package e2e

// Rotation through the real path: the built agent and porthole connect, Mosquitto
// with mutual TLS, OpenSSH. tunneld cuts the side whose token it rotates; the
// agent must move to the new destination token whether the notification arrives
// after the cut (tunneld's order) or before it (a service may publish first), and
// porthole connect must end saying the token was rotated.

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

func TestRotationWithAgentAndConnect(t *testing.T) {
	if testing.Short() {
		t.Skip("builds porthole and runs Mosquitto and ssh")
	}
	s := stack.Start(t, stack.Options{})
	open := s.OpenTunnel("SSH")
	port, clog, _ := s.Connect(open)
	s.MustSSH(port, "true")
	ctx := context.Background()

	waitAgentOn := func(token string) {
		t.Helper()
		tok, err := tunnel.NewAccessToken(token)
		if err != nil {
			t.Fatal(err)
		}
		s.AgentLog.Wait(t, regexp.MustCompile(`msg="tunnel connected" tunnel=`+tok.Fingerprint()+` `), 0, 30*time.Second)
		s.WaitDestination(open.TunnelID, 30*time.Second)
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := s.SSH(port, "echo ok")
			if err == nil && out == "ok\n" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ssh after the rotation: %v %q\nagent log:\n%s", err, out, s.AgentLog)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Cut, then notified: the agent's old session is refused, the new one joins.
	rot, err := s.TD().RotateTunnelAccessToken(ctx, &tunneld.RotateTunnelAccessTokenInput{TunnelID: open.TunnelID, ClientMode: tunneld.ClientModeDestination})
	if err != nil {
		t.Fatal(err)
	}
	s.AddSecret(rot.DestinationAccessToken)
	waitAgentOn(rot.DestinationAccessToken)
	s.AgentLog.Wait(t, regexp.MustCompile(`msg="tunnel over" .*rotated`), 0, 30*time.Second)

	// Notified, then cut: the new token reaches the agent while the old
	// connection is up (rotated on the data plane only, published by hand); the
	// new session takes the old one's place.
	fresh := s.TD().Dataplane(open.TunnelID).Rotate(dataplane.Destination)
	s.AddSecret(fresh)
	cert, key := s.Broker.PKI.Client(t, mqtttest.PublisherCN)
	pub, err := tunneld.NewMQTTNotifier(tunneld.MQTTConfig{Broker: s.Broker.Addr, CAFile: s.Broker.PKI.CAFile, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(ctx)
	nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pub.Notify(nctx, tunneld.Notification{ThingName: stack.Thing, ClientAccessToken: fresh, Region: stack.Region, Services: []string{"SSH"}}); err != nil {
		t.Fatal(err)
	}
	waitAgentOn(fresh)

	// The source's token rotated: porthole connect ends and says why.
	rot, err = s.TD().RotateTunnelAccessToken(ctx, &tunneld.RotateTunnelAccessTokenInput{TunnelID: open.TunnelID, ClientMode: tunneld.ClientModeSource})
	if err != nil {
		t.Fatal(err)
	}
	s.AddSecret(rot.SourceAccessToken)
	clog.Wait(t, regexp.MustCompile(`porthole connect: .*access token was rotated`), 0, 30*time.Second)
}

// TestRotationDuringTransfer: the destination token rotated during a transfer: tunneld cuts the
// destination's WebSocket; the transfer must end (fail, not hang, not succeed
// with a bad file), the agent must join with the new token from the
// notification, and the operator's running porthole connect must carry new
// sessions without a restart.
func TestRotationDuringTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds porthole and runs Mosquitto and ssh")
	}
	s := stack.Start(t, stack.Options{})
	open := s.OpenTunnel("SSH")
	port, _, stop := s.Connect(open)
	defer stop()
	s.MustSSH(port, "true")
	dp := s.TD().Dataplane(open.TunnelID)
	dir := t.TempDir()
	src, want := randomFile(t, dir, 48<<20)
	dp.SetBandwidth(8 << 20)
	dst := filepath.Join(dir, "up.bin")
	done := make(chan error, 1)
	go func() { done <- scp(s, port, src, "root@127.0.0.1:"+dst) }()
	time.Sleep(1500 * time.Millisecond)
	rot, err := s.TD().RotateTunnelAccessToken(context.Background(), &tunneld.RotateTunnelAccessTokenInput{TunnelID: open.TunnelID, ClientMode: tunneld.ClientModeDestination})
	if err != nil {
		t.Fatal(err)
	}
	s.AddSecret(rot.DestinationAccessToken)
	start := time.Now()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the transfer hangs 60 s after the destination token was rotated")
	}
	dp.SetBandwidth(0)
	t.Logf("scp after rotation: %v (ended %v after the rotation)", err, time.Since(start).Round(time.Millisecond))
	if err == nil && hashFile(t, dst) != want {
		t.Fatalf("scp reported success for a file that differs (%s)", fileDiff(t, src, dst))
	}
	s.WaitDestination(open.TunnelID, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := s.SSH(port, "echo ok")
		if err == nil && out == "ok\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ssh through the same porthole connect after the rotation: %v %q", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	os.Remove(dst)
	if err := scp(s, port, src, "root@127.0.0.1:"+dst); err != nil || hashFile(t, dst) != want {
		t.Fatalf("transfer after rotation: %v", err)
	}
}
