package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
	gossh "golang.org/x/crypto/ssh"
)

// Malformed notifications are published as notification-rejected events with the
// reason, never the token or the payload; a flood of them is summed up in one
// event instead of one each.
func TestAgentPublishesRejectedNotifications(t *testing.T) {
	e := newAgentEnv(t)
	a, stop := e.start(t)
	secret := "AQGAAXsecret-token-" + strings.Repeat("z", 40)
	good := fmt.Sprintf(`{"clientAccessToken":%q,"clientMode":"destination","region":%q,"services":["SSH"]}`, secret, testRegion)
	bad := []struct{ payload, reason string }{
		{`{"clientAccessToken":"` + secret, "payload is not valid JSON"},
		{strings.Replace(good, `"destination"`, `"Destination"`, 1), `clientMode is "Destination", want "destination"`},
		{strings.Replace(good, secret, "", 1), "clientAccessToken is empty"},
		{strings.Replace(good, `["SSH"]`, `[]`, 1), "services has 0 entries, want 1 to 64"},
		{strings.Replace(good, strconv.Quote(testRegion), `"../../evil"`, 1), `region "../../evil" is not a region name`},
	}
	// The flood goes at QoS 0: mochi v2.7.9 can deadlock (a read lock taken
	// twice on a client's inflight map while Publish waits to write it) when
	// QoS 1 messages are injected back to back; the agent's path is the same.
	publish := func(p string, qos byte) {
		t.Helper()
		if err := e.broker.srv.Publish("$aws/things/dev-1/tunnels/notify", []byte(p), false, qos); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range bad {
		publish(b.payload, 1)
		e.broker.waitEvent(t, "notification-rejected", func(ev Event) bool { return strings.HasPrefix(ev.Reason, b.reason) })
	}
	// A flood: each payload differs, so none is a duplicate.
	for i := range 50 {
		publish(fmt.Sprintf(`{"clientAccessToken":%q,"clientMode":"source","region":%q,"services":["SSH"]}`, fmt.Sprint(secret, i), testRegion), 0)
	}
	// Over the payload limit (16 KiB) and under the largest packet the agent
	// takes (64 KiB): a larger one the broker does not send it at all.
	publish(`{"pad":"`+strings.Repeat("x", 20<<10)+`"}`, 0)
	// The broker's Publish returns once the message is queued for the agent,
	// which rejects it later, on its MQTT client's goroutine: all 51 counted
	// before the stop. (A fixed 300 ms was too short on a loaded machine and
	// under -race: 28 to 50 had been counted.)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		a.rejections.mu.Lock()
		n := a.rejections.suppressed
		a.rejections.mu.Unlock()
		if n >= 51 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the 51 notifications after the burst rejected 10 s after they were published", n)
		}
	}
	stop() // the window's count is published on the way out
	e.broker.waitEvent(t, "notification-rejections-suppressed", func(ev Event) bool {
		return strings.HasPrefix(ev.Reason, "51 more notifications rejected") && ev.Attempts == 51
	})

	e.broker.mu.Lock()
	defer e.broker.mu.Unlock()
	n := 0
	for _, ev := range e.broker.events {
		if ev.Type == "notification-rejected" {
			n++
		}
	}
	if n != rejectionBurst {
		t.Errorf("%d notification-rejected events for 56 bad notifications, want %d", n, rejectionBurst)
	}
	b, _ := json.Marshal(e.broker.events)
	if strings.Contains(string(b), "secret-token") || strings.Contains(string(b), "xxxxxxxx") {
		t.Fatalf("an event carries the token or the payload: %s", b)
	}
}

// A subscription the broker refuses (an IoT policy without iot:Subscribe) is
// published as one notify-subscription-failed event with the broker's reason and
// the policy hint, while the agent retries it on the same connection.
func TestAgentPublishesRefusedSubscription(t *testing.T) {
	acl := &mqtttest.RefuseSubscribe{Topic: "$aws/things/dev-1/tunnels/notify", Refusals: 2}
	e := newAgentEnvACL(t, acl)
	_, stop := e.start(t)
	ev := e.broker.waitEvent(t, "notify-subscription-failed", nil)
	for _, want := range []string{"0x87 (not authorized)", "iot:Subscribe", "$aws/things/dev-1/tunnels/notify"} {
		if !strings.Contains(ev.Reason, want) {
			t.Errorf("event reason lacks %q: %q", want, ev.Reason)
		}
	}
	if ev.Thing != "dev-1" {
		t.Errorf("event thing %q, want dev-1", ev.Thing)
	}
	// Granted at the third attempt: a notification then opens a tunnel. Until
	// then the broker drops notifications, so the test sends again.
	tun := e.fake.OpenTunnel("SSH")
	for try := 0; ; try++ {
		e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
		if tun.WaitConnects(ctxWithTimeout(t, time.Second), tunneltest.Destination, 1) == nil {
			break
		}
		if try == 30 {
			t.Fatalf("no tunnel after the subscription's retries (%d refused)", acl.Refused())
		}
	}
	if got := acl.Refused(); got != 2 {
		t.Errorf("broker refused %d subscriptions, want 2", got)
	}
	stop()
	n := 0
	e.broker.mu.Lock()
	for _, ev := range e.broker.events {
		if ev.Type == "notify-subscription-failed" {
			n++
		}
	}
	e.broker.mu.Unlock()
	if n != 1 {
		t.Errorf("%d notify-subscription-failed events for two refusals on one connection, want 1", n)
	}
}

// openSSHSession runs cmd through the tunnel's source side and returns once the
// command has started; the session stays open until the test ends.
func (e *agentEnv) openSSHSession(t *testing.T, tun *tunneltest.Tunnel, cmd string) {
	t.Helper()
	client, stopSource := e.sshClient(t, tun)
	t.Cleanup(stopSource)
	t.Cleanup(func() { client.Close() })
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start(cmd); err != nil {
		t.Fatalf("ssh %q: %v", cmd, err)
	}
	e.broker.waitEvent(t, "ssh-session-start", nil)
}

// Stopping the agent (SIGTERM) ends its sessions before MQTT: the events of their
// end reach the topic, and the agent still stops within a few seconds.
func TestAgentStopPublishesSessionEnds(t *testing.T) {
	e, stop := agentWithSession(t, "sleep 100")
	start := time.Now()
	stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the agent took %v to stop, want a few seconds", d)
	}
	end := e.broker.waitEvent(t, "ssh-session-end", nil)
	if end.SSH == nil || end.SSH.Command != "sleep" || end.SSH.Kind != "exec" {
		t.Errorf("ssh-session-end carries %+v, want the exec of sleep", end.SSH)
	}
	e.broker.waitEvent(t, "stream-end", func(ev Event) bool { return ev.Service == "SSH" })
}

// A start is an event, with the version: the fleet learns of a restart, after
// which the sessions a crash cut short get no end events.
func TestAgentPublishesItsStart(t *testing.T) {
	e := newAgentEnv(t)
	e.start(t)
	e.broker.waitEvent(t, "agent-started", func(ev Event) bool { return ev.Version == Version && ev.Thing == "dev-1" })
}

// A broker that is away when the agent stops does not hold it up: the events are
// given up after eventFlushTimeout.
func TestAgentStopsWithBrokerDown(t *testing.T) {
	e, stop := agentWithSession(t, "sleep 100")
	e.broker.down()
	start := time.Now()
	stop()
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("with the broker away the agent took %v to stop, want a few seconds", d)
	}
}

// Stopping with the tunnel stalled, the broker away and a session on
// ssh.listen whose program ignores the hangup: the tunnel's goodbye waits
// goodbyeTimeout (1 s) for the service's close, the session ends sshd's
// leaveDelay (2 s) after the hangup, and the last flush of the events took its
// whole eventFlushTimeout (2 s) after that: 5.5 s. porthole agent, which
// exits 5 s after SIGTERM, gave up first: it logged that the sessions had not
// ended (they had), and exited before the warning of the events left unsent.
// The flush gets what is left of stopBudget.
func TestAgentStopsBeforePortholeAgentGivesUp(t *testing.T) {
	e := newAgentEnv(t)
	addr := e.sshListenFree(t)
	var mu sync.Mutex
	var logs bytes.Buffer
	// The program ignoring the hangup is left running, as OpenSSH leaves it:
	// not this test's business. Registered before the agent's stop, so run
	// after it, when the session's end has logged its process group.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range strings.Split(logs.String(), "process group ")[1:] {
			var pgid int
			if _, err := fmt.Sscanf(l, "%d", &pgid); err == nil && pgid > 1 {
				syscall.Kill(-pgid, syscall.SIGKILL)
			}
		}
	})
	_, stop := e.startLogging(t, io.MultiWriter(testWriter{t}, lockedWriter{&mu, &logs}))

	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatalf("agent did not open the tunnel: %v", err)
	}
	tclient, stopSource := e.sshClient(t, tun) // a stream for the goodbye to reset
	t.Cleanup(stopSource)
	t.Cleanup(func() { tclient.Close() })

	e.listenSession(t, addr, "trap '' HUP; sleep 100")

	tun.Dataplane().SetBandwidth(1) // stalled: the service reads nothing more
	e.broker.down()
	start := time.Now()
	stop()
	if d := time.Since(start); d >= 5*time.Second {
		t.Errorf("the agent took %v to stop; porthole agent exits after 5 s", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "events not sent before stopping") {
		t.Error("no warning of the events left unsent when the agent stopped")
	}
}

// agentWithSession runs an agent in a tunnel with an SSH session running cmd
// through it; stop stops the agent.
func agentWithSession(t *testing.T, cmd string) (e *agentEnv, stop func()) {
	e = newAgentEnv(t)
	_, stop = e.start(t)
	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatalf("agent did not open the tunnel: %v", err)
	}
	e.openSSHSession(t, tun, cmd)
	return e, stop
}

// An SSH client that has not logged in chooses the user name in its
// ssh-login-failure event, up to x/crypto's 256 KiB packet. Published as is,
// a 200 KiB name made an event over what the broker takes (its CONNACK's
// Maximum Packet Size; AWS IoT Core's messages are limited to 128 KB): the
// broker closed the connection, and the unacknowledged PUBLISH was sent again
// on every reconnect, so the agent's MQTT connection never stayed up and no
// later event (nor, at AWS, notification) got through, until a restart.
func TestHugeSSHUserNameDoesNotWedgeMQTT(t *testing.T) {
	e := newAgentEnv(t)
	e.broker.srv.Options.Capabilities.MaximumPacketSize = 128 << 10
	e.sshListenFree(t)
	var mu sync.Mutex
	var logs bytes.Buffer
	e.startLogging(t, lockedWriter{&mu, &logs})

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := gossh.NewSignerFromKey(priv)
	c, err := gossh.Dial("tcp", e.cfg.SSH.Listen, &gossh.ClientConfig{User: strings.Repeat("u", 200<<10),
		Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)}, HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
	if err == nil {
		c.Close()
		t.Fatal("login with an unknown key succeeded")
	}
	ev := e.broker.waitEvent(t, "ssh-login-failure", nil)
	if ev.SSH == nil || len(ev.SSH.User) > 1024 {
		t.Errorf("ssh-login-failure event carries a user name of %d bytes", len(ev.SSH.User))
	}

	// Later events still get through, on the same connection.
	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatalf("agent did not open the tunnel: %v", err)
	}
	e.broker.waitEvent(t, "tunnel-connected", nil)
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "mqtt reconnecting"); n != 0 {
		t.Errorf("the MQTT connection was lost %d times after the login attempt, want 0", n)
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if len(l) > 4096 {
			t.Errorf("a log line of %d bytes: %.200s…", len(l), l)
		}
	}
}

// A tunnel the agent ends itself, yielding its place past max_tunnels to a newer
// one, closes its trail with a tunnel-ended event: it had a tunnel-connected, and
// an operator auditing the topic must not be left with a tunnel that never ended.
func TestYieldedTunnelPublishesTunnelEnded(t *testing.T) {
	e, first := oneTunnelAgent(t)
	second := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", second.DestinationToken, "SSH")
	if err := second.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	fp := fingerprint(first.DestinationToken)
	ev := e.broker.waitEvent(t, "tunnel-ended", func(ev Event) bool { return ev.Tunnel == fp })
	if !strings.Contains(ev.Reason, "max_tunnels") {
		t.Errorf("tunnel-ended reason %q does not say why the agent ended it", ev.Reason)
	}
}

// Events still queued when the agent stops (the broker away for the last 2 s)
// are lost: a warning says how many, as for those a full queue drops, instead
// of the audit trail losing them without a trace.
func TestEventQueueReportsEventsLeftAtStop(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	q := newEventQueue(func(context.Context, []byte) error { return errors.New("not connected") },
		slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)))
	for range 3 {
		q.add(Event{Type: "ssh-session-end"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	q.run(ctx)
	q.finish(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "unsent=3") {
		t.Errorf("3 events left unsent at stop, log says:\n%s", logs.String())
	}
}

// An SFTP request that blocks for good (an OPEN of a FIFO no program opens)
// holds its connection sshd's abandonDelay (5 s) after the stop closes it: the
// stop waited for it, took 5 s, and porthole agent gave up first; with the
// stop's budget spent, the last events, the broker there all along, were
// then counted unsent without being sent. The stop goes on without that
// connection, within its budget, and the broker gets what is queued.
func TestAgentStopDoesNotWaitForBlockedSFTP(t *testing.T) {
	e := newAgentEnv(t)
	var mu sync.Mutex
	var logs bytes.Buffer
	_, stop := e.startLogging(t, io.MultiWriter(testWriter{t}, lockedWriter{&mu, &logs}))
	tun := e.fake.OpenTunnel("SSH")
	e.broker.notify(t, "dev-1", tun.DestinationToken, "SSH")
	if err := tun.WaitConnects(ctxWithTimeout(t, 10*time.Second), tunneltest.Destination, 1); err != nil {
		t.Fatal(err)
	}
	client, stopSource := e.sshClient(t, tun)
	t.Cleanup(stopSource)
	t.Cleanup(func() { client.Close() })
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the OPEN returns, and its connection ends
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	sc, err := sftp.NewClient(client)
	if err != nil {
		t.Fatal(err)
	}
	go sc.Open(fifo) // blocks: no program opens it for writing
	e.broker.waitEvent(t, "ssh-session-start", nil)
	waitOpenBlocks(t)

	start := time.Now()
	stop()
	if d := time.Since(start); d >= 5*time.Second {
		t.Errorf("the agent took %v to stop; porthole agent exits after 5 s", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "SSH connections still ending when the stop ran out of time") {
		t.Errorf("the stop did not say it left an SSH connection ending; log:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "events not sent") {
		t.Errorf("events counted unsent with the broker there; log:\n%s", logs.String())
	}
}

// The stop's budget used up by the sessions' ends, the last flush gets
// minLastFlush, not eventFlushTimeout: a broker that is away is
// given up on then, and one that is there still takes the events (with
// nothing left it was not even asked, and the warning blamed it).
func TestLastFlushWithTheBudgetUsedUp(t *testing.T) {
	for _, up := range []bool{false, true} {
		var logs bytes.Buffer
		var mu sync.Mutex
		var sent int
		q := newEventQueue(func(context.Context, []byte) error {
			if !up {
				return errors.New("not connected")
			}
			sent++
			return nil
		}, slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)))
		for range 2 {
			q.add(Event{Type: "ssh-session-end"})
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		q.run(ctx)
		start := time.Now()
		q.finish(lastFlush(monoNow())) // nothing left of the stop's budget
		if d := time.Since(start); d > minLastFlush+time.Second {
			t.Errorf("broker up %v: the last flush took %v with no time left, want about %v", up, d, minLastFlush)
		}
		mu.Lock()
		if !up && !strings.Contains(logs.String(), "unsent=2") {
			t.Errorf("broker away: 2 events left unsent at stop, log says:\n%s", logs.String())
		}
		if up && (sent != 2 || strings.Contains(logs.String(), "not sent")) {
			t.Errorf("broker up: %d of 2 events published, log says:\n%s", sent, logs.String())
		}
		mu.Unlock()
	}
}

// Stopping the agent with a session on ssh.listen whose program ignores the
// hangup: the session ends sshd's leaveDelay (2 s) after it, and its
// ssh-session-end must be published before the agent stops, as a tunnel
// session's is. The stop waited only 500 ms for the closed connections: Run
// returned with the session's goroutines still running, and its end event
// came after the last flush of the queue, never published.
func TestStopWaitsForListenSessionIgnoringHangup(t *testing.T) {
	e := newAgentEnv(t)
	addr := e.sshListenFree(t)
	_, stop := e.start(t)
	e.listenSession(t, addr, "trap '' HUP; sleep 8")
	start := time.Now()
	stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the agent took %v to stop; porthole agent exits after 5 s", d)
	}
	// Anything published came before the stop: MQTT disconnects last, once
	// the broker has acknowledged the events (its test subscription may
	// record one a moment later, so it is waited for).
	end := e.broker.waitEvent(t, "ssh-session-end", nil)
	// The program is left running, as OpenSSH leaves it: not this test's business.
	if i := strings.Index(end.SSH.Reason, "process group "); i >= 0 {
		var pgid int
		if _, err := fmt.Sscanf(end.SSH.Reason[i:], "process group %d", &pgid); err == nil && pgid > 1 {
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
}

// listenSession logs in as root on the agent's ssh.listen at addr and runs cmd,
// and returns once its ssh-session-start is published; the connection closes
// with the test.
func (e *agentEnv) listenSession(t *testing.T, addr, cmd string) {
	t.Helper()
	client, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{User: "root", Auth: []gossh.AuthMethod{gossh.PublicKeys(e.signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start(cmd); err != nil {
		t.Fatal(err)
	}
	e.broker.waitEvent(t, "ssh-session-start", nil)
}

// sshListenFree sets the agent's ssh.listen to a loopback address free now,
// and returns it.
func (e *agentEnv) sshListenFree(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.SSH.Listen = ln.Addr().String()
	ln.Close()
	return e.cfg.SSH.Listen
}

// waitOpenBlocks waits up to 10 s for the agent's SFTP server to be in
// open(2) for an OPEN (of a FIFO no one opens the other end of): a goroutine
// of this process in a system call with os.OpenFile and pkg/sftp on its
// stack. A fixed wait could end before the OPEN was served on a slow machine.
func waitOpenBlocks(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n := runtime.Stack(buf, true)
		if n == len(buf) { // cut short: every goroutine's, or none
			buf = make([]byte, 2*len(buf))
			continue
		}
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, " [syscall") && strings.Contains(g, "os.OpenFile(") && strings.Contains(g, "github.com/pkg/sftp.") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no SFTP OPEN in open(2) 10 s after it was sent")
		}
	}
}
