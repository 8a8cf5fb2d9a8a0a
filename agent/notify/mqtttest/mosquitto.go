package mqtttest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// MosquittoPath is where Debian installs the broker.
const MosquittoPath = "/usr/sbin/mosquitto"

// PublisherCN is the client identity allowed to publish on every thing's topics.
const PublisherCN = "tunneld"

// Broker is a Mosquitto process listening with mutual TLS on a loopback port.
type Broker struct {
	Addr string // 127.0.0.1:PORT
	PKI  *PKI

	tb   testing.TB
	path string
	conf string
	logf string

	mu  sync.Mutex
	cmd *exec.Cmd
	end chan struct{}
}

// StartMosquitto writes a configuration under a temporary directory, starts the
// broker on a free port and stops it when the test ends.
func StartMosquitto(tb testing.TB) *Broker {
	tb.Helper()
	path := MosquittoPath
	if _, err := os.Stat(path); err != nil {
		if p, lerr := exec.LookPath("mosquitto"); lerr == nil {
			path = p
		} else if os.Getenv("CI") == "true" {
			tb.Fatalf("mosquitto is required (Debian package mosquitto; `make test` installs it): %v", err)
		} else {
			tb.Skipf("skipping: mosquitto not installed (apt-get install mosquitto, or run `make test`): %v", err)
		}
	}
	p := NewPKI(tb)
	b := &Broker{PKI: p, tb: tb, path: path}
	cert, key := p.Server(tb, "broker")
	acl := filepath.Join(p.Dir, "acl")
	// As an AWS IoT policy would: a device's own thing topics and its event topic
	// (porthole/events/<thing>), and the publisher (tunneld) every thing's.
	aclText := "pattern readwrite $aws/things/%u/#\npattern readwrite porthole/events/%u\n\nuser " + PublisherCN + "\ntopic readwrite $aws/things/#\n"
	if err := os.WriteFile(acl, []byte(aclText), 0o644); err != nil {
		tb.Fatal(err)
	}
	b.logf = filepath.Join(p.Dir, "mosquitto.log")
	b.conf = filepath.Join(p.Dir, "mosquitto.conf")
	// The port is free when picked, not when mosquitto binds it: another test
	// process may take it in between (qemu-user tiers run packages side by
	// side), and then a few more are tried.
	for try := 1; ; try++ {
		port := freePort(tb)
		b.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		b.writeConf(tb, port, cert, key, acl)
		if b.start() || try == 5 {
			break
		}
		os.Remove(b.logf)
	}
	tb.Cleanup(func() {
		b.Stop()
		if tb.Failed() {
			if log, err := os.ReadFile(b.logf); err == nil {
				tb.Logf("mosquitto log:\n%s", log)
			}
		}
	})
	return b
}

// writeConf writes the broker's configuration for port.
func (b *Broker) writeConf(tb testing.TB, port int, cert, key, acl string) {
	p := b.PKI
	conf := strings.Join([]string{
		"# as root, mosquitto would switch to user mosquitto, who cannot read the test's files",
		"user root",
		"per_listener_settings false",
		"allow_anonymous false",
		"# sessions and queued QoS 1 messages survive Stop and Start",
		"persistence true",
		"persistence_location " + p.Dir + "/",
		"autosave_interval 0",
		"log_dest file " + b.logf,
		"log_type all",
		"acl_file " + acl,
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"cafile " + p.CAFile,
		"certfile " + cert,
		"keyfile " + key,
		"require_certificate true",
		"use_identity_as_username true",
		"",
	}, "\n")
	if err := os.WriteFile(b.conf, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// Pid is the broker's process id, 0 when it is stopped.
func (b *Broker) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Start starts the broker (again, after Stop) and waits until it accepts TLS.
func (b *Broker) Start() {
	b.tb.Helper()
	if !b.start() {
		log, _ := os.ReadFile(b.logf)
		b.tb.Fatalf("mosquitto could not listen on %s: %s", b.Addr, log)
	}
}

// start is Start; it reports false, with the broker stopped, when another
// process had the port.
func (b *Broker) start() bool {
	b.tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		return true
	}
	cmd := exec.Command(b.path, "-c", b.conf)
	// Killed with the test process, also when it ends without its clean-ups
	// (go test -timeout panics): no broker left running, adopted by init.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.tb.Fatalf("starting %v: %v", cmd.Args, err)
	}
	b.cmd, b.end = cmd, make(chan struct{})
	end := b.end
	go func() { cmd.Wait(); close(end) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Listening, and mosquitto's: it says "running" once its listener is
		// open. A connection alone may be another process's, on the port
		// mosquitto then fails to bind.
		c, err := net.DialTimeout("tcp", b.Addr, time.Second)
		if err == nil {
			c.Close()
			if log, _ := os.ReadFile(b.logf); strings.Contains(string(log), " running") {
				return true
			}
		}
		select {
		case <-end:
			log, _ := os.ReadFile(b.logf)
			if strings.Contains(string(log), "Address already in use") {
				b.cmd = nil
				return false
			}
			b.tb.Fatalf("mosquitto %v exited: %s", cmd.Args, log)
		default:
		}
		if time.Now().After(deadline) {
			b.tb.Fatalf("mosquitto did not listen on %s: %v", b.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop terminates the broker (SIGTERM: it saves its sessions) and waits for it to
// exit.
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.end:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-b.end
	}
	b.cmd = nil
}

// Restart stops and starts the broker on the same port; with forget it also deletes
// the persistence database, so the broker has lost every session and subscription.
func (b *Broker) Restart(forget bool) {
	b.tb.Helper()
	b.Stop()
	if forget {
		if err := os.Remove(filepath.Join(b.PKI.Dir, "mosquitto.db")); err != nil {
			b.tb.Fatal(err)
		}
	}
	b.Start()
}

// Configure adds lines to the broker's configuration and restarts it (keeping
// its sessions), e.g. "max_packet_size 131072".
func (b *Broker) Configure(lines ...string) {
	b.tb.Helper()
	f, err := os.OpenFile(b.conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		b.tb.Fatal(err)
	}
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.tb.Fatal(err)
	}
	b.Restart(false)
}

// Subscribe connects as client cn (a fresh certificate), subscribes to topic at
// QoS 1 and returns the payloads that arrive. Its session outlives a Stop and Start
// of the broker, so messages published meanwhile are delivered after it reconnects.
// The client ends with the test.
func (b *Broker) Subscribe(tb testing.TB, cn, topic string) <-chan []byte {
	tb.Helper()
	cert, key := b.PKI.Client(tb, cn)
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := os.ReadFile(b.PKI.CAFile)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	u, _ := url.Parse("tls://" + b.Addr)
	msgs := make(chan []byte, 16)
	subscribed := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u},
		TlsCfg:     &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12},
		KeepAlive:  30,
		// Mosquitto 2.0.11 saves no session that began with clean start, whatever
		// its expiry: with clean start the subscription is lost over Stop and
		// Start, and only a race with the publisher's reconnection hid it. Each
		// test has its own broker, so there is no old session to resume.
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         600,
		ReconnectBackoff:              func(int) time.Duration { return 100 * time.Millisecond },
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				_, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
				select {
				case subscribed <- err:
				default:
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: cn + "-sub",
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				select {
				case msgs <- append([]byte(nil), pr.Packet.Payload...):
				default:
					tb.Errorf("mqtttest: subscriber %s: dropping a message, channel full", cn)
				}
				return true, nil
			}},
		},
	})
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		cm.Disconnect(dctx)
		cancel()
		<-cm.Done()
	})
	select {
	case err := <-subscribed:
		if err != nil {
			tb.Fatalf("subscribing %s to %s: %v", cn, topic, err)
		}
	case <-time.After(10 * time.Second):
		tb.Fatalf("subscriber %s: no connection to %s", cn, b.Addr)
	}
	return msgs
}

func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
