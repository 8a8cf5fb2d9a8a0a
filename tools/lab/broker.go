package lab

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest/noquota"
	"github.com/porthole-iot/porthole/tools/internal/acceptretry"
	"github.com/porthole-iot/porthole/tools/internal/servertls"
)

// startBroker runs an MQTT v5 broker with mutual TLS on addr: only certificates of
// the lab CA connect, and each may use only its own thing's topics
// ($aws/things/<CN>/..., and its event topic porthole/events/<CN>), as an AWS
// IoT policy would; the publisher identity (tunneld) may publish to every
// thing's notify topic, and nothing else.
// subscribed is closed when the device identity device subscribes to its notify topic.
func startBroker(addr, caFile, certFile, keyFile, publisher, device string, subscribed chan struct{}, log *slog.Logger) (*mqtt.Server, string, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, "", err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	srv := mqtt.New(&mqtt.Options{Logger: log, InlineClient: true})
	if err := srv.AddHook(&aclHook{publisher: publisher, device: device, subscribed: subscribed}, nil); err != nil {
		return nil, "", err
	}
	if err := srv.AddHook(new(noquota.Hook), nil); err != nil {
		return nil, "", err
	}
	// Our own listener, not listeners.NewTCP's: mochi's accept loop (v2.7.9)
	// returns at the first Accept error, EMFILE included, and leaves the port
	// open with nobody accepting; acceptretry waits such errors out.
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("MQTT broker on %s: %w", addr, err)
	}
	ln := listeners.NewNet("mtls", tls.NewListener(acceptretry.Wrap(tcp, log),
		&tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: servertls.CipherSuites(), Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}))
	if err := srv.AddListener(ln); err != nil {
		tcp.Close()
		return nil, "", fmt.Errorf("MQTT broker on %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, "", err
	}
	return srv, ln.Address(), nil
}

// aclHook authenticates by client certificate and confines each identity to its
// thing's topics.
type aclHook struct {
	mqtt.HookBase
	publisher  string
	device     string
	subscribed chan struct{}
	once       sync.Once
}

func (h *aclHook) ID() string { return "porthole-lab-acl" }

func (h *aclHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSubscribed}, []byte{b})
}

// identity is the client certificate's common name ("" for the inline client).
func identity(cl *mqtt.Client) string {
	if cl.Net.Conn == nil {
		return ""
	}
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}

func (h *aclHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	return cl.Net.Inline || identity(cl) != ""
}

func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	id := identity(cl)
	if id == h.publisher {
		return write && strings.HasPrefix(topic, "$aws/things/") && strings.HasSuffix(topic, "/tunnels/notify")
	}
	return strings.HasPrefix(topic, "$aws/things/"+id+"/") || topic == "porthole/events/"+id
}

// OnSubscribed tells the lab that the device listens, so that the first tunnel's
// notification is not published before anyone can receive it.
func (h *aclHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if identity(cl) != h.device || h.subscribed == nil {
		return
	}
	for i, f := range pk.Filters {
		if f.Filter == "$aws/things/"+h.device+"/tunnels/notify" && i < len(codes) && codes[i] < 0x80 {
			h.once.Do(func() { close(h.subscribed) })
		}
	}
}

// closeBroker closes srv once its network clients are gone. mochi-mqtt v2.7.9's
// Close takes a read lock twice (Clients.GetByListener calls Len), which deadlocks
// when a disconnecting client is waiting for the write lock at that moment; waiting
// for the clients to finish disconnecting first closes that window.
func closeBroker(srv *mqtt.Server) {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		open := 0
		for _, cl := range srv.Clients.GetAll() {
			if !cl.Net.Inline && !cl.Closed() {
				open++
			}
		}
		if open == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the last disconnect finish its bookkeeping
	srv.Close()
}
