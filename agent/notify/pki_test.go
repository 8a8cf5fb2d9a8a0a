package notify

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// The test PKI is mqtttest's, shared with the Mosquitto broker it runs; these
// short names keep the tests readable.
type testPKI = mqtttest.PKI

func newPKI(t testing.TB) *testPKI { return mqtttest.NewPKI(t) }

func serverCert(t testing.TB, p *testPKI, name string, notBefore time.Time) (certFile, keyFile string) {
	return p.ServerAt(t, name, notBefore)
}

func clientTLS(t testing.TB, p *testPKI, cn string) *tls.Config { return p.ClientCertTLS(t, cn) }
