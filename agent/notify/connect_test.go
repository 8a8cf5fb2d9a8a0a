package notify

import (
	"crypto/tls"
	"errors"
	"testing"
)

// TestConnectErrorHint: a failed connection's line carries the one hint that
// fits its cause, after the CONNACK's reason, and none where nothing is known.
func TestConnectErrorHint(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		hint string // "": no hint attribute
	}{
		{"not authorized", &connackError{code: 0x87, err: errors.New("refused")}, "hint=\"the device's IoT policy must allow iot:Connect on arn:aws:iot:REGION:ACCOUNT:client/dev-1 "},
		{"client id not valid", &connackError{code: 0x85, reason: "bad id", err: errors.New("refused")}, `reason_string="bad id" hint="the broker does not accept client id \"dev-1\""`},
		{"unspecified", &connackError{code: 0x80, err: errors.New("refused")}, ""},
		{"closed at CONNECT", &closedAtConnectError{addr: "broker:8883", err: errors.New("EOF")}, `hint="the broker closed the connection instead of answering the MQTT CONNECT: it may not accept the device certificate /etc/porthole/cert.pem (`},
		{"unknown", errors.New("dial tcp: i/o timeout"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, rec := newLogRecorder(t)
			l := &Listener{
				cfg:  Config{ClientID: "dev-1", CertFile: "/etc/porthole/cert.pem"},
				log:  log,
				tls:  &tls.Config{},
				addr: brokerAddr{host: "broker", port: 8883},
			}
			l.connectError(tc.err)
			line := rec.waitFor("mqtt connect failed; retrying")
			if !hasHint(line, tc.hint) {
				t.Errorf("connectError(%v) logged\n%s\nwant one hint %s", tc.err, line, tc.hint)
			}
		})
	}
}
