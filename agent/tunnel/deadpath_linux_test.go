package tunnel_test

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
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
	// A rule left behind would drop, for good, the connections of whatever
	// test later listens on this port, in any package: a connect that times
	// out far from its cause. So it is marked, its removal is checked, and one
	// left by a run that was killed is removed first.
	removeStaleDropRules(t, iptables)
	mark := dropRuleMark + strconv.Itoa(os.Getpid())
	rule := []string{"OUTPUT", "-o", "lo", "-p", "tcp", "--dport", u.Port(), "-m", "comment", "--comment", mark, "-j", "DROP"}
	if out, err := exec.Command(iptables, append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables -I %v: %v\n%s", rule, err, out)
	}
	t.Cleanup(func() { deleteRule(t, iptables, rule) })
	select {
	case err := <-ended:
		t.Logf("the connection ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the connection was kept 30 s after its path died")
	}
}

// dropRuleMark, with the test process's pid after it, is the comment on
// TestDeadPathRedialed's iptables rule: the pid tells a rule a killed run left
// from one another run has in place now. (No spaces: iptables -S would quote
// it, and removeStaleDropRules splits its lines at spaces.)
const dropRuleMark = "porthole-test-dead-path-pid-"

// deleteRule deletes rule from iptables, trying again for a while if iptables
// fails (nftables may refuse a change that meets another one), and fails t if
// the rule stays. A rule that is not there is not tried again: another run's
// removeStaleDropRules, or a hand, took it.
func deleteRule(t *testing.T, iptables string, rule []string) {
	var out []byte
	var err error
	for range 20 {
		if out, err = exec.Command(iptables, append([]string{"-D"}, rule...)...).CombinedOutput(); err == nil {
			return
		}
		// iptables -C exits 1 when the rule is not there, other than 0 and 1
		// when it cannot tell.
		check := exec.Command(iptables, append([]string{"-C"}, rule...)...)
		if check.Run() != nil && check.ProcessState != nil && check.ProcessState.ExitCode() == 1 {
			t.Logf("iptables -D %v: %v; the rule is gone all the same\n%s", rule, err, out)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("iptables -D %v: %v\n%s\nthe rule is left: remove it by hand, or connections to its port on loopback are dropped", rule, err, out)
}

// removeStaleDropRules deletes the rules marked dropRuleMark whose process is
// gone: an earlier run's, killed before its cleanup ran. It says so.
func removeStaleDropRules(t *testing.T, iptables string) {
	out, err := exec.Command(iptables, "-S", "OUTPUT").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -S OUTPUT: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		_, after, ok := strings.Cut(line, dropRuleMark)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(after, " ", 2)[0])
		if err == nil && syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // its run is still going (or the pid was taken again: its rule outlives this test)
		}
		t.Logf("removing a rule an earlier run left: %s", line)
		deleteRule(t, iptables, strings.Fields(strings.TrimPrefix(line, "-A ")))
	}
}
