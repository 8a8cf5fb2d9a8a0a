package e2e

// Rotation through the real path: the built agent and porthole connect, Mosquitto
// with mutual TLS, OpenSSH. tunneld closes the side whose token it rotates with a
// Close frame (1008, tunneld.CloseReasonTokenRotated); the agent must end the old
// session with that reason, without taking it for a network failure and
// retrying the revoked token, and move to the new destination token whether the
// notification arrives after the close (tunneld's order) or before it (a service
// may publish first); porthole connect must end saying the token was rotated.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
	topic := "porthole/events/" + stack.Thing
	s := stack.Start(t, stack.Options{MQTT: []string{fmt.Sprintf("event_topic = %q", topic)}})
	ev := collectEvents(t, s, topic)
	open := s.OpenTunnel("SSH")
	port, clog, _ := s.Connect(open)
	s.MustSSH(port, "true")
	ctx := context.Background()
	fp := func(token string) string {
		t.Helper()
		tok, err := tunnel.NewAccessToken(token)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Fingerprint()
	}

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

	// Closed, then notified: the agent's old session ends with the Close
	// frame's reason, the new one joins.
	from := s.AgentLog.Len()
	rot, err := s.TD().RotateTunnelAccessToken(ctx, &tunneld.RotateTunnelAccessTokenInput{TunnelID: open.TunnelID, ClientMode: tunneld.ClientModeDestination})
	if err != nil {
		t.Fatal(err)
	}
	s.AddSecret(rot.DestinationAccessToken)
	waitAgentOn(rot.DestinationAccessToken)
	closed := regexp.QuoteMeta("status 1008 " + tunneld.CloseReasonTokenRotated)
	s.AgentLog.Wait(t, regexp.MustCompile(`msg="tunnel over" tunnel=`+fp(open.DestinationAccessToken)+` .*`+closed), from, 30*time.Second)
	ev.wait(t, "tunnel-ended", `"tunnel":"`+fp(open.DestinationAccessToken)+`","reason":"closed by the service (status 1008 `+tunneld.CloseReasonTokenRotated+`)"`, 10*time.Second)
	if m := regexp.MustCompile(`.*tunnel connection lost, reconnecting.*|.*handshake refused.*`).FindString(s.AgentLog.String()[from:]); m != "" {
		t.Errorf("the agent took the rotation for a lost connection and retried the revoked token:\n%s", m)
	}
	ev.mu.Lock()
	for _, e := range ev.list {
		if strings.Contains(e, `"tunnel-disconnected"`) {
			t.Errorf("event at the rotation: %s, want only tunnel-ended", e)
		}
	}
	ev.mu.Unlock()

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

	// The source's token rotated: porthole connect ends and says why, without
	// taking it for a lost connection first.
	cfrom := clog.Len()
	rot, err = s.TD().RotateTunnelAccessToken(ctx, &tunneld.RotateTunnelAccessTokenInput{TunnelID: open.TunnelID, ClientMode: tunneld.ClientModeSource})
	if err != nil {
		t.Fatal(err)
	}
	s.AddSecret(rot.SourceAccessToken)
	clog.Wait(t, regexp.MustCompile(`porthole connect: .*`+closed), cfrom, 30*time.Second)
	if rest := clog.String()[cfrom:]; strings.Contains(rest, "unexpected EOF") || strings.Contains(rest, "reconnecting") {
		t.Errorf("porthole connect took the rotation for a lost connection:\n%s", rest)
	}
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
	waitFlowing(t, dst, 1<<20, done)
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
