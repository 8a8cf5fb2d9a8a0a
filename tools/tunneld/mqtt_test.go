package tunneld

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
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
