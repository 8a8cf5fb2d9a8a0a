// Package mqtttest runs a real Mosquitto broker with mutual TLS for tests, with the
// throw-away PKI it needs: a CA, a server certificate for 127.0.0.1 and client
// certificates whose common name becomes the MQTT username (use_identity_as_username),
// and an ACL shaped like AWS IoT policies: each client may use only
// $aws/things/<its CN>/#, except the publisher identity, which may use every thing's
// topics (the stand-in for the AWS IoT Secure Tunneling service).
//
// Tests that need the broker say so: without /usr/sbin/mosquitto (Debian package
// mosquitto, installed by `make test` through tools/deps.sh) StartMosquitto fails
// the test when CI=true and skips it otherwise.
//
// It is for host-side tests only and is never linked into the device binary.
package mqtttest
