package board

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// host is what runs on the host for every board: a CA, an MQTT broker with
// mutual TLS, the tunneling data plane, the host's porthole and an SSH key.
type host struct {
	dir      string
	ca       *x509.Certificate
	caKey    *ecdsa.PrivateKey
	caFile   string
	broker   *mqtt.Server
	mqttPort int
	tunnels  *tunneltest.Server
	porthole string // porthole built for the host (the operator's connect)
	sshKey   string // OpenSSH private key file for ssh -i
	authKeys []byte // its authorized_keys line
}

// guestHost is the host's loopback as QEMU's user network shows it to a guest.
var guestHost = net.IPv4(10, 0, 2, 2)

func newHost(t *testing.T) *host {
	t.Helper()
	h := &host{dir: t.TempDir()}
	h.newCA(t)

	certFile, keyFile := h.issue(t, "broker", true)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(h.ca)
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

	h.tunnels = tunneltest.NewServer(t)
	h.tunnels.Logf = t.Logf

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

// notify publishes the AWS IoT notification that tells thing's agent to open
// the destination side of a tunnel.
func (h *host) notify(t *testing.T, thing, token string) {
	t.Helper()
	p, _ := json.Marshal(map[string]any{"clientAccessToken": token, "clientMode": "destination",
		"region": "us-east-1", "services": []string{"SSH"}})
	if err := h.broker.Publish("$aws/things/"+thing+"/tunnels/notify", p, false, 1); err != nil {
		t.Fatal(err)
	}
}

func (h *host) newCA(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "porthole board test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	h.ca, _ = x509.ParseCertificate(der)
	h.caKey = key
	h.caFile = h.write(t, "ca.pem", "CERTIFICATE", der)
}

func (h *host) write(t *testing.T, name, typ string, der []byte) string {
	path := filepath.Join(h.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue makes a certificate for cn — a server certificate for 127.0.0.1 and
// 10.0.2.2 when server is set, else a client (device) certificate — and returns
// the certificate and key files.
func (h *host) issue(t *testing.T, cn string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), guestHost}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, h.ca, &key.PublicKey, h.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	return h.write(t, cn+".crt", "CERTIFICATE", der), h.write(t, cn+".key", "PRIVATE KEY", kb)
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
