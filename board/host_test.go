package board

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// host is what runs on the host for every board: a CA, an MQTT broker with
// mutual TLS, the tunneling service (tools/tunneld: control plane, data plane and
// notifications published through the broker), the host's porthole and an SSH key.
type host struct {
	dir      string
	pki      *mqtttest.PKI
	caFile   string
	broker   *mqtt.Server
	mqttPort int
	tunnels  *tunneld.Server
	dataURL  string // the data plane, ws://127.0.0.1:PORT
	porthole string // porthole built for the host (the operator's connect)
	sshKey   string // OpenSSH private key file for ssh -i
	authKeys []byte // its authorized_keys line
}

// guestHost is the host's loopback as QEMU's user network shows it to a guest.
var guestHost = net.IPv4(10, 0, 2, 2)

func newHost(t *testing.T) *host {
	t.Helper()
	h := &host{dir: t.TempDir(), pki: mqtttest.NewPKI(t)}
	h.caFile = h.pki.CAFile

	certFile, keyFile := h.pki.ServerFor(t, "broker", guestHost)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := h.pki.Pool()
	h.broker = mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := h.broker.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{Type: "tcp", ID: "tls", Address: "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}})
	if err := h.broker.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := h.broker.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.broker.Close() })
	_, port, _ := net.SplitHostPort(ln.Address())
	h.mqttPort = atoi(port)

	tlog := slog.New(slog.NewTextHandler(testWriter{t, "tunneld"}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Region x-: its endpoint, data.tunneling.iot.x-.amazonaws.com, is one
	// Go's resolver refuses without asking DNS (a label ending in -). QEMU's
	// user network reaches beyond this machine: a guest's agent that lost
	// tunnel.endpoint (10.0.2.2, this tunneld) must find nothing to dial.
	h.tunnels, err = tunneld.New(tunneld.Config{Region: "x-", Notifier: brokerNotifier{h.broker}, AllowUnsigned: true, Logger: tlog})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.dataURL = "ws://" + tl.Addr().String()
	served := make(chan error, 1)
	go func() { served <- h.tunnels.Serve(tl) }()
	t.Cleanup(func() {
		h.tunnels.Close()
		if err := <-served; err != nil && err != tunneld.ErrServerClosed {
			t.Errorf("tunneld Serve: %v", err)
		}
	})

	h.porthole = filepath.Join(h.dir, "porthole")
	build := exec.Command("go", "build", "-trimpath", "-o", h.porthole, "github.com/porthole-iot/porthole/agent/cmd/porthole")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build porthole for the host: %v\n%s", err, out)
	}

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKey(priv, "porthole board test")
	if err != nil {
		t.Fatal(err)
	}
	h.sshKey = filepath.Join(h.dir, "id_ed25519")
	if err := os.WriteFile(h.sshKey, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, _ := gossh.NewSignerFromKey(priv)
	h.authKeys = gossh.MarshalAuthorizedKey(signer.PublicKey())
	return h
}

// brokerNotifier is tunneld's Notifier publishing on the in-process broker, as
// AWS IoT publishes on $aws/things/<thing>/tunnels/notify.
type brokerNotifier struct{ srv *mqtt.Server }

func (b brokerNotifier) Notify(_ context.Context, n tunneld.Notification) error {
	return b.srv.Publish(n.Topic(), n.Payload(), false, 1)
}

// testWriter sends log records to the test log, one line each.
type testWriter struct {
	t      *testing.T
	prefix string
}

func (w testWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Logf("[%s] %s", w.prefix, l)
	}
	return len(p), nil
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
