package tunneld

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// With all_proxy in the environment (a corporate shell or unit; here the broker
// is exempted by no_proxy), autopaho dials through golang.org/x/net/proxy and
// runs the TLS handshake itself with the notifier's config: without a server name
// in it, every handshake failed and no notification was ever delivered.
func TestNotifyWithAllProxyInTheEnvironment(t *testing.T) {
	t.Setenv("all_proxy", "socks5://127.0.0.1:9")
	t.Setenv("no_proxy", "127.0.0.1,localhost")
	n := mosquittoNotifier(t, mqtttest.StartMosquitto(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Notify(ctx, Notification{ThingName: "dev1", ClientAccessToken: "x", Region: "us-east-1", Services: []string{"SSH"}}); err != nil {
		t.Errorf("Notify with all_proxy set (the broker in no_proxy): %v", err)
	}
}

// A broker URL that is not TLS with a CA, certificate or key file (mqtt:// for
// mqtts://) is refused: the files would be ignored and every destination
// token published in clear text.
func TestPlainBrokerWithTLSFilesIsRefused(t *testing.T) {
	for _, cfg := range []MQTTConfig{
		{Broker: "mqtt://127.0.0.1:1", CAFile: "ca.pem", CertFile: "tunneld.pem", KeyFile: "tunneld.key"},
		{Broker: "tcp://127.0.0.1:1", CAFile: "ca.pem"},
	} {
		n, err := NewMQTTNotifier(cfg)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			n.Close(ctx)
			cancel()
			t.Errorf("NewMQTTNotifier(%s with TLS files) = nil error, want a refusal", cfg.Broker)
		} else if !strings.Contains(err.Error(), "mqtts://") {
			t.Errorf("NewMQTTNotifier(%s with TLS files): %v, want it to point at mqtts://", cfg.Broker, err)
		}
	}
}

// A broker URL that is not TLS (mqtt://) beyond loopback publishes every
// destination token in clear text: tunneld warns, once, at start; on loopback
// it does not.
func TestPlainBrokerBeyondLoopbackWarned(t *testing.T) {
	const warning = "mqtt broker not TLS and beyond loopback"
	for _, tc := range []struct {
		broker string
		warned bool
	}{
		{"mqtt://0.0.0.0:1", true}, // not loopback, and dialed on this machine
		{"tcp://0.0.0.0:1", true},
		{"mqtt://127.0.0.1:1", false},
		{"mqtt://[::1]:1", false},
		{"mqtt://[::ffff:127.0.0.1]:1", false},
	} {
		var logs syncBuffer
		n, err := NewMQTTNotifier(MQTTConfig{Broker: tc.broker, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatalf("NewMQTTNotifier(%s): %v", tc.broker, err)
		}
		// Nothing listens on port 1: connects fail and are retried, and the
		// warning is not repeated with them.
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(logs.String(), "mqtt connect failed") < 2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n.Close(ctx)
		cancel()
		want := 0
		if tc.warned {
			want = 1
		}
		if got := strings.Count(logs.String(), warning); got != want {
			t.Errorf("broker %s: warned %d times, want %d:\n%s", tc.broker, got, want, logs.String())
		}
	}
}

// A broker port no dial can reach is refused at start (exit 1), not retried
// in the background for as long as tunneld runs.
func TestBrokerPortOutOfRangeIsRefused(t *testing.T) {
	for _, broker := range []string{"127.0.0.1:99999", "mqtts://127.0.0.1:65536", "127.0.0.1:0"} {
		if u, err := brokerURL(broker); err == nil {
			t.Errorf("brokerURL(%q) = %v, want an error", broker, u)
		}
	}
	if _, err := brokerURL("mqtts://broker.example:8883"); err != nil {
		t.Errorf("brokerURL(mqtts://broker.example:8883): %v", err)
	}
}

// mosquittoNotifier is an MQTTNotifier publishing to broker with the publisher's
// certificate, closed when the test ends.
func mosquittoNotifier(t *testing.T, broker *mqtttest.Broker) *MQTTNotifier {
	t.Helper()
	cert, key := broker.PKI.Client(t, mqtttest.PublisherCN)
	n, err := NewMQTTNotifier(MQTTConfig{Broker: broker.Addr, CAFile: broker.PKI.CAFile, CertFile: cert, KeyFile: key,
		Logger: testLogger(t).With("component", "mqtt")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Close(ctx)
	})
	return n
}

// A broker URL with a user name and password (mqtt://user:pass@host:port, as
// Mosquitto with password_file wants them) is either used or refused; and
// however it ends, the password is not written to the log at every reconnect.
func TestBrokerPasswordNotLogged(t *testing.T) {
	const secret = "S3cretPassw0rd"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every connect fails, as with a broker down
	var logs syncBuffer
	n, err := NewMQTTNotifier(MQTTConfig{Broker: "mqtt://publisher:" + secret + "@" + addr,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("refused with the password in the error: %v", err)
		}
		return // refused: fine
	}
	defer n.Close(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "mqtt connect failed") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := logs.String(); strings.Contains(s, secret) {
		t.Errorf("a broker URL's password accepted and then logged:\n%s", s)
	}
}

// --mqtt-broker takes host:port, and a link-local broker is host:port with a
// zone, as net.Dial and the agent's mqtt.endpoint take it.
func TestBrokerURLZoned(t *testing.T) {
	for _, in := range []string{"[fe80::1%eth0]:8883", "[::1%lo]:1883"} {
		u, err := brokerURL(in)
		if err != nil {
			t.Errorf("brokerURL(%q): %v", in, err)
			continue
		}
		if u.Hostname() != in[1:len(in)-6] {
			t.Errorf("brokerURL(%q).Hostname() = %q", in, u.Hostname())
		}
	}
}

// A broker that refuses a notification (PUBACK 0x87: its ACL does not let
// tunneld publish on the thing's topic) is told apart from a broker that
// is down: paho returns an error along with the refusing PUBACK, and that
// error was returned as it was, never ErrNotifyRefused.
func TestNotifyRefusedByTheBroker(t *testing.T) {
	broker := mqtttest.StartMosquitto(t)
	// A device's identity may publish on its own thing's topics only.
	cert, key := broker.PKI.Client(t, "dev1")
	n, err := NewMQTTNotifier(MQTTConfig{Broker: broker.Addr, CAFile: broker.PKI.CAFile, CertFile: cert, KeyFile: key,
		Logger: testLogger(t).With("component", "mqtt")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer n.Close(ctx)
	err = n.Notify(ctx, Notification{ThingName: "dev2", ClientAccessToken: "x", Region: "us-east-1", Services: []string{"SSH"}})
	if !errors.Is(err, ErrNotifyRefused) || !strings.Contains(err.Error(), "0x87") {
		t.Errorf("Notify on a topic the broker's ACL refuses: %v, want ErrNotifyRefused with reason code 0x87", err)
	}
}

// A broker that drops the connection a notification's PUBLISH went out on
// (it restarts, or it disconnects a client publishing where its ACL
// forbids) fails that Notify at once, so that it is retried on the next
// connection: paho forgets the PUBLISH with the connection's session and
// waited its packet timeout (10 s) for a PUBACK that could not come, and every
// pending notification after it waited too.
func TestNotifyFailsWhenItsConnectionDrops(t *testing.T) {
	addr := dropFirstPublishBroker(t)
	n, err := NewMQTTNotifier(MQTTConfig{Broker: "mqtt://" + addr, Logger: testLogger(t).With("component", "mqtt")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	note := Notification{ThingName: "dev1", ClientAccessToken: "x", Region: "us-east-1", Services: []string{"SSH"}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := n.Notify(ctx, note); err == nil {
		t.Fatal("Notify whose connection dropped before its PUBACK = nil error")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Notify whose connection dropped before its PUBACK returned after %v, want at once", el)
	}
	if err := n.Notify(ctx, note); err != nil {
		t.Errorf("Notify on the next connection: %v", err)
	}
}

// A broker that ends tunneld's connection says why (DISCONNECT 0x8e: another
// client took the session, as a second tunneld with the same --client-id
// does; 0x87 after an ACL change), and the log says it: it said only
// "mqtt connection lost; reconnecting", at every one of the reconnections.
func TestBrokerDisconnectReasonLogged(t *testing.T) {
	var kicked atomic.Bool
	addr := fakeBroker(t, func(_ int, p *packets.ControlPacket) ([]*packets.ControlPacket, bool, bool) {
		if p.Type != packets.CONNECT || kicked.Swap(true) {
			return nil, false, false
		}
		d := packets.NewControlPacket(packets.DISCONNECT)
		d.Content.(*packets.Disconnect).ReasonCode = 0x8e
		return []*packets.ControlPacket{packets.NewControlPacket(packets.CONNACK), d}, true, true
	})
	var logs syncBuffer
	n, err := NewMQTTNotifier(MQTTConfig{Broker: "mqtt://" + addr, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "0x8e") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := logs.String(); !strings.Contains(s, "0x8e") {
		t.Errorf("the broker ended the connection with reason code 0x8e; the log does not say so:\n%s", s)
	}
}

// fakeBroker is an MQTT v5 broker on a loopback port, without TLS, for the
// failures Mosquitto cannot be made to show. It answers CONNECT, PINGREQ and
// PUBLISH (QoS 1) as a broker does, except where hook says otherwise: hook
// gets the packet read on the nth connection (from 0) and returns the packets
// to write instead, and whether to close the connection after them. The
// broker stops when the test ends.
func fakeBroker(t *testing.T, hook func(nth int, p *packets.ControlPacket) (answers []*packets.ControlPacket, end, ok bool)) (addr string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for nth := 0; ; nth++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				for {
					p, err := packets.ReadPacket(c)
					if err != nil {
						return
					}
					answers, end, ok := hook(nth, p)
					if !ok {
						switch p.Type {
						case packets.CONNECT:
							answers = append(answers, packets.NewControlPacket(packets.CONNACK))
						case packets.PINGREQ:
							answers = append(answers, packets.NewControlPacket(packets.PINGRESP))
						case packets.PUBLISH:
							ack := packets.NewControlPacket(packets.PUBACK)
							ack.Content.(*packets.Puback).PacketID = p.Content.(*packets.Publish).PacketID
							answers = append(answers, ack)
						}
					}
					for _, a := range answers {
						if _, err := a.WriteTo(c); err != nil {
							return
						}
					}
					if end {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// dropFirstPublishBroker is a fakeBroker that closes the connection at the
// first PUBLISH it reads.
func dropFirstPublishBroker(t *testing.T) (addr string) {
	var dropped atomic.Bool
	return fakeBroker(t, func(_ int, p *packets.ControlPacket) ([]*packets.ControlPacket, bool, bool) {
		if p.Type == packets.PUBLISH && !dropped.Swap(true) {
			return nil, true, true
		}
		return nil, false, false
	})
}

// The client certificate is read again at every connection, as the agent
// reads its own: renewed in place, it is used from the next reconnect on.
// Read once, the old one went on being offered, and once it expired every
// reconnect was refused, no notification delivered, until a restart. Files
// that do not load (a renewal caught halfway) leave the last pair that did.
func TestRenewedClientCertificateUsed(t *testing.T) {
	broker := mqtttest.StartMosquitto(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// A device's identity may publish on its own thing's topics only: which
	// certificate was offered shows in what the broker lets through.
	install := func(cn string) {
		t.Helper()
		cert, key := broker.PKI.Client(t, cn)
		for _, f := range [][2]string{{cert, certFile}, {key, keyFile}} {
			b, err := os.ReadFile(f[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f[1], b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install("dev1")
	var logs syncBuffer
	n, err := NewMQTTNotifier(MQTTConfig{Broker: broker.Addr, CAFile: broker.PKI.CAFile, CertFile: certFile, KeyFile: keyFile,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tlogWriter{t}), nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	notify := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		return n.Notify(ctx, Notification{ThingName: "dev2", ClientAccessToken: "x", Region: "us-east-1", Services: []string{"SSH"}})
	}
	if err := notify(); !errors.Is(err, ErrNotifyRefused) {
		t.Fatalf("dev1's certificate publishing for dev2: %v, want refused", err)
	}
	install("dev2")
	broker.Restart(false)
	if err := notify(); err != nil {
		t.Fatalf("after the certificate was renewed as dev2's and the broker restarted: %v; the old certificate is still offered", err)
	}
	if err := os.WriteFile(certFile, []byte("half a renewal"), 0o600); err != nil {
		t.Fatal(err)
	}
	broker.Restart(false)
	if err := notify(); err != nil {
		t.Fatalf("with a certificate file that does not load: %v; want the last pair that did offered", err)
	}
	if !strings.Contains(logs.String(), "does not load") {
		t.Errorf("a certificate file that does not load was not warned of:\n%s", logs.String())
	}
}

// A broker (or a proxy in front of it) that accepts the TCP connection and
// never answers the TLS handshake is given up on after the connect time-out and
// dialed again. With all_proxy in the environment autopaho ran the handshake
// with no deadline: the first such connection froze reconnection for good.
func TestSilentBrokerHandshakeTimesOut(t *testing.T) {
	for _, proxied := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "all_proxy"}[proxied], func(t *testing.T) {
			if proxied {
				t.Setenv("all_proxy", "socks5://127.0.0.1:9")
				t.Setenv("no_proxy", "127.0.0.1,localhost")
			}
			defer func(d time.Duration) { connectTimeout = d }(connectTimeout)
			connectTimeout = 300 * time.Millisecond
			accepted, quit := make(chan struct{}, 16), make(chan struct{})
			addr := tunneltest.ServeTCP(t, func(c net.Conn) {
				defer c.Close()
				select {
				case accepted <- struct{}{}:
				default:
				}
				<-quit // held open, never answered
			})
			defer close(quit)
			pki := mqtttest.NewPKI(t)
			cert, key := pki.Client(t, mqtttest.PublisherCN)
			n, err := NewMQTTNotifier(MQTTConfig{Broker: "tls://" + addr, CAFile: pki.CAFile, CertFile: cert, KeyFile: key,
				Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				n.Close(ctx)
			}()
			timeout := time.After(10 * time.Second)
			for i := 0; i < 2; i++ {
				select {
				case <-accepted:
				case <-timeout:
					t.Fatalf("%d connection(s) in 10 s to a broker that never answers the TLS handshake, want a second once the first timed out", i)
				}
			}
		})
	}
}
