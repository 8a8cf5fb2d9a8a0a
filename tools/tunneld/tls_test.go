package tunneld

import (
	"testing"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// Over TLS 1.2 both planes (one port, one config: the API the AWS CLI calls
// and the WebSocket agents and localproxies dial) take ECDHE with AES-GCM or
// ChaCha20-Poly1305 only: with Go's defaults they also took AES-CBC with
// HMAC-SHA1 (testssl.sh: LUCKY13). Config.TLS as the command and the lab make
// it, with no cipher suites of its own.
func TestTLS12AEADOnly(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	ts := startServer(t, Config{TLS: pki.ServerTLS(t, "tunneld")})
	testenv.TLS12AEADOnly(t, ts.addr, pki.ClientTLS(t).RootCAs)
}
