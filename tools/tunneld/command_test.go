package tunneld

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// TestHelpExplainsEveryFlag: --help (and -h) is on stdout, where
// `porthole-tunneld --help | less` reads it, as porthole's own, with nothing on
// stderr; main exits 0 on flag.ErrHelp.
func TestHelpExplainsEveryFlag(t *testing.T) {
	var buf, stderr bytes.Buffer
	if _, err := ParseFlags([]string{"--help"}, &buf, &stderr); !errors.Is(err, flag.ErrHelp) || stderr.Len() > 0 {
		t.Fatalf("ParseFlags(--help) = %v, stderr %q; want flag.ErrHelp, the help on stdout", err, stderr.String())
	}
	var h bytes.Buffer
	if _, err := ParseFlags([]string{"-h"}, &h, &stderr); !errors.Is(err, flag.ErrHelp) || h.String() != buf.String() || stderr.Len() > 0 {
		t.Errorf("ParseFlags(-h) = %v, stdout %d bytes, stderr %q; want flag.ErrHelp, --help's on stdout", err, h.Len(), stderr.String())
	}
	help := buf.String()
	for _, f := range []string{"listen", "tls-cert", "tls-key", "data-dir", "region", "mqtt-broker", "mqtt-ca", "mqtt-cert",
		"mqtt-key", "mqtt-client-id", "print-addr", "bandwidth", "max-open-tunnels", "max-closed-tunnels", "max-connections", "allow-unsigned", "credentials", "v"} {
		if !strings.Contains(help, "  -"+f+" ") && !strings.Contains(help, "  -"+f+"\n") && !strings.Contains(help, "  -"+f+"\t") {
			t.Errorf("--help does not explain -%s", f)
		}
	}
	// mqtts:// too: tunneld's warnings and errors about a broker name it.
	for _, s := range []string{"Exit codes", "--endpoint-url", "$aws/things/<thing>/tunnels/notify", "mqtts://",
		fmt.Sprintf("at least 1 (default %d)", DefaultMaxOpenTunnels), fmt.Sprintf("at least 1 (default %d)", DefaultMaxConnections)} {
		if !strings.Contains(help, s) {
			t.Errorf("--help does not mention %q", s)
		}
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--tls-cert", "c.pem"},
		{"--mqtt-ca", "ca.pem"},
		{"extra"},
		{"--no-such-flag"},
	} {
		if _, err := ParseFlags(args, io.Discard, io.Discard); err == nil {
			t.Errorf("ParseFlags(%q) succeeded, want a usage error", args)
		}
	}
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--max-open-tunnels", "-1"}, "-max-open-tunnels"},
		{[]string{"--max-open-tunnels", "0"}, "-max-open-tunnels"}, // not a silent 100
		{[]string{"--bandwidth", "-5"}, "-bandwidth"},
		{[]string{"--max-closed-tunnels", "0"}, "-max-closed-tunnels"},
		{[]string{"--max-connections", "0"}, "-max-connections"},
		// A --listen no restart mends is a usage error (exit 1), not a runtime
		// failure (exit 2) that Restart=on-failure retries forever.
		{[]string{"--listen", "127.0.0.1"}, "-listen"},
		{[]string{"--listen", "127.0.0.1:99999"}, "-listen"},
		{[]string{"--listen", "127.0.0.1:abc"}, "-listen"},
		{[]string{"--listen", ":-1"}, "-listen"},
		{[]string{"--listen", "127.0.0.1:no-such-service"}, "-listen"},
		// Every notification carries it: the agent refused each one
		// (region "bad region" is not a region name).
		{[]string{"--region", "bad region"}, "-region"},
		{[]string{"--region", strings.Repeat("r", 65)}, "-region"},
	} {
		var stderr strings.Builder
		_, err := ParseFlags(tc.args, io.Discard, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("ParseFlags(%q) = %v, want a usage error naming %s", tc.args, err, tc.flag)
		}
		if !strings.Contains(stderr.String(), tc.flag) || !strings.Contains(stderr.String(), "Usage:") {
			t.Errorf("ParseFlags(%q) printed %q, want the error naming %s and the usage", tc.args, stderr.String(), tc.flag)
		}
	}
	// What net.Listen takes stays taken: a unit file may name a service (https)
	// or leave the port empty (0).
	for _, listen := range []string{"127.0.0.1:https", "127.0.0.1:", "[::1]:0"} {
		if _, err := ParseFlags([]string{"--listen", listen}, io.Discard, io.Discard); err != nil {
			t.Errorf("ParseFlags(--listen %s) = %v; net.Listen takes that address", listen, err)
		}
	}
	for _, cfg := range []Config{{MaxOpenTunnels: -1}, {Bandwidth: -5}, {Region: "bad region"}} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
	o, err := ParseFlags([]string{"--listen", "127.0.0.1:0", "--region", "eu-west-1", "--bandwidth", "1000", "--max-open-tunnels", "1"}, io.Discard, io.Discard)
	if err != nil || o.Listen != "127.0.0.1:0" || o.Region != "eu-west-1" || o.Bandwidth != 1000 || o.MaxTunnels != 1 {
		t.Errorf("ParseFlags = %+v, %v", o, err)
	}
	// An empty --region is the default, as it always was (a unit's --region
	// "$REGION" with the variable unset), named so that the start line logs
	// the region in use.
	if o, err := ParseFlags([]string{"--region", ""}, io.Discard, io.Discard); err != nil || o.Region != DefaultRegion {
		t.Errorf("ParseFlags(--region '') = %+v, %v; want region %s", o, err, DefaultRegion)
	}
	if o, err := ParseFlags(nil, io.Discard, io.Discard); err != nil || o.MaxTunnels != DefaultMaxOpenTunnels {
		t.Errorf("ParseFlags() = %+v, %v; want --max-open-tunnels %d", o, err, DefaultMaxOpenTunnels)
	}
}

// pipeWriter hides the pipe's other methods from Run.
type pipeWriter struct{ w *io.PipeWriter }

func (p pipeWriter) Write(b []byte) (int, error) { return p.w.Write(b) }

// A stop asked for (SIGTERM) while a control-plane request is in flight whose
// body never comes (a stalled client; no credentials are needed, the body is
// read before the signature is checked): Shutdown's wait ran out, Run returned
// "context deadline exceeded", and main exited 2, the code for a runtime
// failure that a supervisor respawns. The connection is cut, the state saved,
// and the stop is clean, with a warning.
func TestRunStopWithStalledRequestIsClean(t *testing.T) {
	dir := t.TempDir()
	o, err := ParseFlags([]string{"--listen", "127.0.0.1:0", "--print-addr", "--data-dir", dir, "--allow-unsigned"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.shutdownTimeout = 300 * time.Millisecond
	logs := &syncBuffer{}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, o, pipeWriter{pw}, io.MultiWriter(logs, tlogWriter{t}))
		pw.Close()
	}()
	line, _ := bufio.NewReader(pr).ReadString('\n')
	go io.Copy(io.Discard, pr)
	addr := strings.TrimSpace(line)
	req, _ := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader(`{"destinationConfig":{"thingName":"dev","services":["SSH"]}}`))
	req.Header.Set("X-Amz-Target", "IoTSecuredTunneling.OpenTunnel")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var opened struct {
		TunnelID string `json:"tunnelId"`
	}
	json.NewDecoder(resp.Body).Decode(&opened)
	resp.Body.Close()
	if opened.TunnelID == "" {
		t.Fatalf("OpenTunnel: %s", resp.Status)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("POST / HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/x-amz-json-1.1\r\n" +
		"X-Amz-Target: IoTSecuredTunneling.ListTunnels\r\nContent-Length: 100\r\n\r\n{"))
	// In flight once the server has read the headers: nothing comes back.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the stalled request was answered: %d, %v", n, err)
	}
	cancel() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after SIGTERM with a stalled request = %v; main exits %d with it, want nil (exit 0)",
				err, map[bool]int{true: 1, false: 2}[IsConfigError(err)])
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30 s after SIGTERM")
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "connections cut") {
		t.Errorf("no warning that connections were cut:\n%s", logs)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("the stalled connection after the stop: %v, want it closed", err)
	}
	state, err := os.ReadFile(filepath.Join(dir, "tunnels.json"))
	if err != nil || !strings.Contains(string(state), opened.TunnelID) {
		t.Errorf("state after the stop: %v, %.200q; want the tunnel %s saved", err, state, opened.TunnelID)
	}
}

func TestRunPrintsAddrAndServesTLS(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cert, key := pki.Server(t, "tunneld")
	o, err := ParseFlags([]string{"--listen", "127.0.0.1:0", "--print-addr", "--tls-cert", cert, "--tls-key", key,
		"--data-dir", t.TempDir(), "--allow-unsigned"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, o, pipeWriter{pw}, tlogWriter{t})
		pw.Close()
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	}()
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(pr).ReadString('\n')
		addrc <- strings.TrimSpace(line)
		io.Copy(io.Discard, pr)
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(10 * time.Second):
		t.Fatal("no address printed")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLS(t)}}
	req, _ := http.NewRequest("POST", "https://"+addr+"/", strings.NewReader(`{}`))
	req.Header.Set("X-Amz-Target", "IoTSecuredTunneling.ListTunnels")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	client.CloseIdleConnections()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" {
		t.Errorf("ListTunnels over HTTPS: %d %s, want 200 over HTTP/1.1", resp.StatusCode, resp.Proto)
	}
}

func TestReadCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := dir + "/creds"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := readCredentials(write("# lab\nAKID1 secret1\n\n  AKID2\tsecret2  \n"))
	if err != nil || len(got) != 2 || got["AKID1"] != "secret1" || got["AKID2"] != "secret2" {
		t.Errorf("readCredentials = %v, %v", got, err)
	}
	for _, body := range []string{"", "# only a comment\n", "AKID1\n", "AKID1 SECRETVALUE extra\n"} {
		if _, err := readCredentials(write(body)); err == nil {
			t.Errorf("readCredentials(%q) succeeded, want an error", body)
		} else if strings.Contains(err.Error(), "SECRETVALUE") {
			t.Errorf("readCredentials error %q quotes the file", err)
		}
	}
}

// SIGHUP (Options.Reload) serves the renewed pair from the next handshake on, and a
// pair that does not load leaves the one being served in place.
func TestRunReloadsTLSCertificate(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	dir := t.TempDir()
	certPath, keyPath := dir+"/cert.pem", dir+"/key.pem"
	install := func(name string) {
		c, k := pki.Server(t, name)
		for src, dst := range map[string]string{c: certPath, k: keyPath} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install("first")
	o, err := ParseFlags([]string{"--listen", "127.0.0.1:0", "--print-addr", "--tls-cert", certPath, "--tls-key", keyPath, "--allow-unsigned"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan os.Signal, 1)
	o.Reload = reload
	logs := &syncBuffer{}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, o, pipeWriter{pw}, logs)
		pw.Close()
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	}()
	line, _ := bufio.NewReader(pr).ReadString('\n')
	go io.Copy(io.Discard, pr)
	addr := strings.TrimSpace(line)
	served := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", addr, pki.ClientTLS(t))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	waitLog := func(s string) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), s); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("no log line with %q:\n%s", s, logs)
			}
		}
	}
	first := served()
	install("second")
	reload <- syscall.SIGHUP
	waitLog("TLS certificate reloaded")
	second := served()
	if second == first {
		t.Fatal("the same certificate is served after the reload")
	}
	if err := os.WriteFile(keyPath, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- syscall.SIGHUP
	waitLog("still serving the previous one")
	if got := served(); got != second {
		t.Errorf("after a failed reload the server serves %s, want the previous %s", got, second)
	}
}

// writeCertPair writes a self-signed certificate for localhost, with CN name
// and the given dates, and its key to dir/cert.pem and dir/key.pem.
func writeCertPair(t *testing.T, dir, name string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// A reload of a pair whose certificate is outside its dates (an old copy put
// back by a renewal hook, the wrong file of certbot's archive/) replaced the
// valid one being served, and every new client (the AWS CLI, each agent's and
// porthole connect's WebSocket) then failed its TLS check. It is refused,
// naming its dates, while the one being served is valid; over one out of date
// itself it is taken (it may be the renewal, with the clock wrong).
func TestReloadKeepsValidCertificateOverOutOfDate(t *testing.T) {
	now := time.Now()
	valid := [2]time.Time{now.Add(-time.Hour), now.Add(90 * 24 * time.Hour)}
	expired := [2]time.Time{now.Add(-100 * 24 * time.Hour), now.Add(-10 * 24 * time.Hour)}
	notYet := [2]time.Time{now.Add(10 * 24 * time.Hour), now.Add(100 * 24 * time.Hour)}
	for _, tc := range []struct {
		name         string
		served, next [2]time.Time
		want         string // the CN served after the reload
		wantErrDates bool
	}{
		{"expired over valid", valid, expired, "served", true},
		{"not yet valid over valid", valid, notYet, "served", true},
		{"valid over valid", valid, valid, "next", false},
		{"valid over expired", expired, valid, "next", false},
		{"expired over expired", expired, expired, "next", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := writeCertPair(t, dir, "served", tc.served[0], tc.served[1])
			c, err := loadCertFiles(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			writeCertPair(t, dir, "next", tc.next[0], tc.next[1])
			_, err = c.reload()
			cur, _ := c.get(nil)
			if got := cur.Leaf.Subject.CommonName; got != tc.want {
				t.Errorf("after the reload (error %v) the server presents %q, want %q", err, got, tc.want)
			}
			dates := err != nil && strings.Contains(err.Error(), tc.next[0].UTC().Format(time.RFC3339)) &&
				strings.Contains(err.Error(), tc.next[1].UTC().Format(time.RFC3339))
			if dates != tc.wantErrDates {
				t.Errorf("reload error %v; want one naming the new certificate's dates: %v", err, tc.wantErrDates)
			}
		})
	}
}

// Configuration errors (exit code 1 in main) are told from runtime ones (2).
func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--tls-cert", dir + "/none.pem", "--tls-key", dir + "/none.key"},
		{"--credentials", dir + "/none"},
	} {
		o, err := ParseFlags(append([]string{"--listen", "127.0.0.1:0"}, args...), io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if err := Run(context.Background(), o, io.Discard, io.Discard); err == nil || !IsConfigError(err) {
			t.Errorf("Run(%q) = %v, want a configuration error", args, err)
		}
	}
	// A state file that does not parse stays so over restarts.
	garbled := t.TempDir()
	if err := os.WriteFile(filepath.Join(garbled, stateFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, _ := ParseFlags([]string{"--listen", "127.0.0.1:0", "--data-dir", garbled}, io.Discard, io.Discard)
	if err := Run(context.Background(), o, io.Discard, io.Discard); err == nil || !IsConfigError(err) {
		t.Errorf("Run with a garbled state file = %v, want a configuration error", err)
	}
	lock, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	o, _ = ParseFlags([]string{"--listen", "127.0.0.1:0", "--data-dir", dir}, io.Discard, io.Discard)
	if err := Run(context.Background(), o, io.Discard, io.Discard); !errors.Is(err, ErrDataDirInUse) || IsConfigError(err) {
		t.Errorf("Run with a data directory in use = %v, want ErrDataDirInUse, a runtime error", err)
	}
}

// syncBuffer collects a logger's output for the test to read.
type syncBuffer = testenv.SyncBuffer

func TestLoopbackOnly(t *testing.T) {
	for listen, want := range map[string]bool{
		"127.0.0.1:8443": true, "[::1]:8443": true, "localhost:8443": true, "127.0.0.2:1": true,
		":8443": false, "0.0.0.0:8443": false, "[::]:8443": false, "192.168.1.2:8443": false, "tunneld.example:443": false, "bad": false,
	} {
		if got := loopbackOnly(listen); got != want {
			t.Errorf("loopbackOnly(%q) = %v, want %v", listen, got, want)
		}
	}
}

// TestExposure: the warning at start names what an address beyond loopback
// exposes: without --credentials, the tunnels to anyone; with them but without
// --tls-cert, the access tokens in clear text, which answers and handshakes
// carry.
func TestExposure(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string // "" for no warning
	}{
		{Options{Listen: "127.0.0.1:8443"}, "every user of this machine"},
		{Options{Listen: ":8443"}, "anyone who reaches this address"},
		{Options{Listen: ":8443", TLSCert: "c.pem", TLSKey: "k.pem"}, "anyone who reaches this address"},
		{Options{Listen: "127.0.0.1:8443", CredFile: "creds"}, ""},
		{Options{Listen: "[::1]:8443", CredFile: "creds"}, ""},
		{Options{Listen: ":8443", CredFile: "creds"}, "access tokens cross the network in clear text"},
		{Options{Listen: "192.168.1.2:8443", CredFile: "creds"}, "access tokens cross the network in clear text"},
		{Options{Listen: ":8443", CredFile: "creds", TLSCert: "c.pem", TLSKey: "k.pem"}, ""},
	} {
		got := exposure(tc.o)
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("listen %s, credentials %q, TLS cert %q: warning %q, want %q", tc.o.Listen, tc.o.CredFile, tc.o.TLSCert, got, tc.want)
		}
	}
}

// Run warns about a credentials file others can read, and about a control plane
// open to all beyond loopback (checked through loopbackOnly: tests listen on
// loopback only).
func TestRunWarnsAboutExposure(t *testing.T) {
	creds := t.TempDir() + "/creds"
	if err := os.WriteFile(creds, []byte("AKID SECRETVALUE\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(creds, 0o644); err != nil {
		t.Fatal(err)
	}
	// runLogs runs tunneld with args on loopback until it listens, stops it and
	// returns what it logged.
	runLogs := func(args ...string) string {
		t.Helper()
		o, err := ParseFlags(append([]string{"--listen", "127.0.0.1:0"}, args...), io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, o, io.Discard, logs) }()
		for end := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "msg=listening"); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(end) {
				cancel()
				t.Fatalf("not listening:\n%s", logs)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return logs.String()
	}
	if out := runLogs("--credentials", creds); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "readable by others") || strings.Contains(out, "SECRETVALUE") {
		t.Errorf("Run with a world-readable --credentials logged:\n%s\nwant a warning saying it is readable by others, and no secret", out)
	}
	// Loopback without --credentials: every user of the machine reaches it.
	if out := runLogs(); !strings.Contains(out, "without --credentials: every user of this machine") {
		t.Errorf("no warning about a control plane without credentials on loopback:\n%s", out)
	}
}
