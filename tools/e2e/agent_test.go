package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/tools/internal/stack"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(stack.Tests(m)) }

func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) {
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

func hashFile(t *testing.T, p string) [32]byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// events collects what the agent publishes on topic, draining the subscription at
// once (its buffer is small).
type events struct {
	mu   sync.Mutex
	list []string
}

func collectEvents(t *testing.T, s *stack.Stack, topic string) *events {
	ch := s.Broker.Subscribe(t, stack.Thing, topic)
	e := &events{}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case b := <-ch:
				e.mu.Lock()
				e.list = append(e.list, string(b))
				e.mu.Unlock()
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return e
}

// wait waits for an event of typ whose JSON contains want.
func (e *events) wait(t *testing.T, typ, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		e.mu.Lock()
		seen := append([]string(nil), e.list...)
		e.mu.Unlock()
		for _, b := range seen {
			var ev struct{ Type string }
			json.Unmarshal([]byte(b), &ev)
			if ev.Type == typ && strings.Contains(b, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event containing %q within %v; got:\n%s", typ, want, d, strings.Join(seen, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAgentEndToEnd: tunneld publishes the notification on a real Mosquitto with
// mutual TLS, the built agent opens the tunnel, `porthole connect` serves the source
// side, and the OpenSSH client logs in and moves files both ways; then the service
// drops the agent's WebSocket, Mosquitto restarts, and a tunnel with a service the
// device does not have yields an event saying so.
func TestAgentEndToEnd(t *testing.T) {
	topic := "porthole/events/" + stack.Thing
	s := stack.Start(t, stack.Options{MQTT: []string{fmt.Sprintf("event_topic = %q", topic)}})
	ev := collectEvents(t, s, topic)
	open := s.OpenTunnel("SSH")
	port, _, stopConnect := s.Connect(open)

	if got := s.MustSSH(port, "echo logged in as $(id -un)"); got != "logged in as root\n" {
		t.Fatalf("ssh: %q", got)
	}
	// Root logs in to a home of the tests' own (stack.Tests), without the
	// machine's dotfiles: a CI machine's ~/.bashrc ran pyenv, whose lock, left
	// by a session hung up in there, made every later login wait 60 s.
	if home := testenv.OwnHome(); home != "" {
		if got := s.MustSSH(port, `echo "$HOME"; ls -A`); got != home+"\n" {
			t.Fatalf("root's home and what is in it: %q, want %q", got, home+"\n")
		}
	} else if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
		t.Fatal("the tests log in to root's own home, with its dotfiles: stack.Tests could not give them a mount namespace (see its message above)")
	}

	// 16 MiB both ways, with sftp, scp (SFTP protocol) and legacy scp -O.
	src := filepath.Join(s.Dir, "random.bin")
	data := make([]byte, 16<<20)
	rand.Read(data)
	writeFile(t, src, data, 0o600)
	want := sha256.Sum256(data)
	remote := filepath.Join(s.Dir, "remote.bin")
	back := filepath.Join(s.Dir, "back.bin")
	batch := filepath.Join(s.Dir, "sftp.batch")
	writeFile(t, batch, []byte(fmt.Sprintf("put %s %s\nget %s %s\n", src, remote, remote, back)), 0o600)
	if out, err := exec.Command("sftp", append(s.SSHOpts(), "-P", port, "-b", batch, "root@127.0.0.1")...).CombinedOutput(); err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	if hashFile(t, remote) != want || hashFile(t, back) != want {
		t.Fatal("sftp: file differs after the round trip")
	}
	for _, legacy := range []bool{false, true} {
		os.Remove(remote)
		os.Remove(back)
		opts := append(s.SSHOpts(), "-P", port)
		if legacy {
			opts = append(opts, "-O")
		}
		if out, err := exec.Command("scp", append(opts, src, "root@127.0.0.1:"+remote)...).CombinedOutput(); err != nil {
			t.Fatalf("scp (legacy %v) upload: %v\n%s", legacy, err, out)
		}
		if out, err := exec.Command("scp", append(opts, "root@127.0.0.1:"+remote, back)...).CombinedOutput(); err != nil {
			t.Fatalf("scp (legacy %v) download: %v\n%s", legacy, err, out)
		}
		if hashFile(t, remote) != want || hashFile(t, back) != want {
			t.Fatalf("scp (legacy %v): file differs after the round trip", legacy)
		}
	}

	// The service drops the agent's WebSocket during an idle moment: the agent comes
	// back with its client token (same access token), and logins work again.
	dp := s.TD().Dataplane(open.TunnelID)
	dp.Drop(dataplane.Destination)
	if err := dp.WaitConnects(ctxTimeout(t, 20*time.Second), dataplane.Destination, 2); err != nil {
		t.Fatalf("agent did not reconnect after its WebSocket was dropped: %v\n%s", err, s.AgentLog)
	}
	if got := s.MustSSH(port, "echo back"); got != "back\n" {
		t.Fatalf("ssh after reconnect: %q", got)
	}
	stopConnect()

	// Mosquitto restarts: the agent reconnects and a new tunnel still reaches it.
	from := s.AgentLog.Len()
	s.Broker.Stop()
	s.Broker.Start()
	s.AgentLog.Wait(t, stack.SubscribedRE(), from, 60*time.Second)
	open2 := s.OpenTunnel("SSH", "WEB")
	ev.wait(t, "service-unmapped", `"WEB"`, 20*time.Second)
	port2, _, stop2 := s.Connect(open2)
	if got := s.MustSSH(port2, "echo second tunnel"); got != "second tunnel\n" {
		t.Fatalf("ssh through the second tunnel: %q", got)
	}
	stop2()
	s.StopAgent()
}
