package tunnel_test

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

// TestDeadPathRedialed: a path to the service that dies without a word (an
// uplink that fails over, a new DHCP address, a NAT that forgets the mapping:
// no RST, nothing comes back) ends the connection once what was sent has gone
// unacknowledged for deadPathTimeout (TCP_USER_TIMEOUT), so that the agent
// dials again; the kernel kept it some 15 minutes, during which no operator
// could reach the device. No pong timeout is set: a destination has none (the
// service may not answer pings, spec §3.7). The path dies by iptables dropping
// what is sent to the service's port on loopback.
func TestDeadPathRedialed(t *testing.T) {
	hostenv.NeedRoot(t, "iptables drops the packets of a path that died")
	iptables, err := exec.LookPath("iptables")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("iptables not found (tools/deps.sh test installs it): %v", err)
		}
		t.Skipf("iptables not found: %v", err)
	}
	tunnel.WithDeadPathTimeout(t, time.Second)
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tunnel.NewAccessToken(tun.DestinationToken)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tunnel.Dial(context.Background(), &tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: tok,
		PingInterval: 100 * time.Millisecond}, tunnel.ModeDestination)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ended := readToEnd(c)
	select {
	case err := <-ended:
		t.Fatalf("the connection ended (%v) while its path worked", err)
	case <-time.After(2 * time.Second): // twice the timeout, pinging
	}
	rule := []string{"OUTPUT", "-o", "lo", "-p", "tcp", "--dport", u.Port(), "-j", "DROP"}
	if out, err := exec.Command(iptables, append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables -I %v: %v\n%s", rule, err, out)
	}
	t.Cleanup(func() { exec.Command(iptables, append([]string{"-D"}, rule...)...).Run() })
	select {
	case err := <-ended:
		t.Logf("the connection ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the connection was kept 30 s after its path died")
	}
}
