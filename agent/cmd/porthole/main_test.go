// Go's own resolver for these tests, whatever the host's nsswitch says:
// the names they give that must never reach DNS (a label ending in -:
// region x-, x-.invalid) it refuses before any query; getaddrinfo would
// send them.
//
//go:debug netdns=go

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

func TestMain(m *testing.M) {
	hostenv.Clear()
	// A test that needs porthole as a process of its own (signals) runs this
	// binary again with the command line after "--".
	if os.Getenv(childEnv) != "" {
		for i, a := range os.Args {
			if a == "--" {
				os.Exit(run(os.Args[i+1:], os.Stdin, os.Stdout, os.Stderr))
			}
		}
		os.Exit(99)
	}
	removeTemp := hostenv.SharedTempDir()
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeTemp()
		os.Exit(code)
	}))
}

// childEnv makes TestMain run porthole instead of the tests.
const childEnv = "PORTHOLE_TEST_RUN_MAIN"

// noRegion and noHost stand for a region and a host where a test expects
// connect to stop before it dials: were the check gone, connect would go on
// to dial data.tunneling.iot.x-.amazonaws.com or x-.invalid, which Go's
// resolver refuses before any query (a label ending in -): nothing leaves
// this machine.
const noRegion, noHost = "x-", "x-.invalid"

func runCmd(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	code = run(args, stdin, &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	// The version names the Go release, which decides the standard library's fixes.
	if code, out, _ := runCmd(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "porthole ") || !strings.HasSuffix(out, " ("+runtime.Version()+")\n") {
		t.Fatalf("version: %d %q, want porthole VERSION (%s)", code, out, runtime.Version())
	}
	if code, _, errs := runCmd(t, nil, "frobnicate"); code != exitUsage || !strings.Contains(errs, "unknown command") {
		t.Fatalf("unknown command: %d %q", code, errs)
	}
	if code, out, _ := runCmd(t, nil, "help"); code != 0 || !strings.Contains(out, "Exit codes") {
		t.Fatalf("help: %d %q", code, out)
	}
	for _, h := range []string{"-h", "--help", "-help"} {
		if code, out, _ := runCmd(t, nil, h); code != 0 || !strings.Contains(out, "commands:") {
			t.Fatalf("%s: %d %q, want the list of commands", h, code, out)
		}
	}
	for _, v := range []string{"--version", "-version"} {
		if code, out, _ := runCmd(t, nil, v); code != 0 || !strings.HasPrefix(out, "porthole ") {
			t.Fatalf("%s: %d %q", v, code, out)
		}
	}
	// A command's -h is on stdout like porthole -h (`porthole connect -h | less`);
	// a bad flag's usage is on stderr.
	for _, cmd := range []string{"agent", "connect", "check-config", "keygen", "version"} {
		if code, out, errs := runCmd(t, nil, cmd, "-h"); code != 0 || !strings.Contains(strings.ToLower(out), "usage") || !strings.Contains(out, "porthole "+cmd) || errs != "" {
			t.Fatalf("%s -h: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout only", cmd, code, out, errs)
		}
	}
	if code, out, errs := runCmd(t, nil, "connect", "--bogus"); code != exitUsage || !strings.Contains(errs, "bogus") ||
		!strings.Contains(errs, "Usage of porthole connect") || out != "" {
		t.Fatalf("bad flag: exit %d, stdout %q, stderr %q; want %d and the usage on stderr only", code, out, errs, exitUsage)
	}
	// connect's flags without `connect` ran the agent, whose usage alone
	// left the operator guessing.
	if code, _, errs := runCmd(t, nil, "--token-file", "x", "-L", "2222"); code != exitUsage || !strings.Contains(errs, "porthole connect --region") {
		t.Fatalf("connect's flags with no command: exit %d, stderr %q; want %d and a pointer to porthole connect", code, errs, exitUsage)
	}
	if code, _, errs := runCmd(t, nil, "agent", "--token-file", "x"); code != exitUsage || strings.Contains(errs, "porthole connect") {
		t.Fatalf("agent --token-file: exit %d, stderr %q; want %d and no pointer (the command was named)", code, errs, exitUsage)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	dev := writeDevice(t, dir)
	key := dev.key
	notPEM := filepath.Join(dir, "notpem.pem")
	os.WriteFile(notPEM, []byte("hello\n"), 0o600)
	good := dev.path
	if code, out, errs := runCmd(t, nil, "check-config", "-c", good); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("good config: %d %q %q", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Fatalf("check-config made the data directory (stat: %v); it must change nothing", err)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("thing_name = \"dev\"\n[tunnel]\nmax_tunnels = -1\n"), 0o600)
	code, _, errs := runCmd(t, nil, "check-config", "-c", bad)
	if code != exitUsage || !strings.Contains(errs, "tunnel.max_tunnels") || !strings.Contains(errs, "mqtt.endpoint") {
		t.Fatalf("bad config: %d %q", code, errs)
	}
	if code, _, errs := runCmd(t, nil, "check-config", "-c", filepath.Join(dir, "missing.toml")); code != exitUsage || !strings.Contains(errs, "missing.toml") {
		t.Fatalf("missing config: %d %q", code, errs)
	}
	// What the agent would refuse at start, check-config refuses too, naming the key.
	writable := filepath.Join(dir, "writable")
	os.Mkdir(writable, 0o700)
	os.Chmod(writable, 0o777)
	for _, tc := range []struct{ name, from, to, want string }{
		{"missing CA by a relative path", dev.ca, "nope.pem", "mqtt.ca_file: open nope.pem"},
		{"CA not PEM", dev.ca, notPEM, "mqtt.ca_file: " + notPEM + " holds no PEM certificate"},
		{"key is a directory", key, dir, "mqtt.key_file: " + dir + " is not a regular file"},
		{"endpoint port", `endpoint = "b:8883"`, `endpoint = "b:99999"`, "mqtt.endpoint:"},
		{"keepalive", `endpoint = "b:8883"`, `endpoint = "b:8883"` + "\nkeepalive = \"65536s\"", "mqtt.keepalive:"},
		{"client id", `endpoint = "b:8883"`, `endpoint = "b:8883"` + "\nclient_id = \"" + strings.Repeat("x", 200) + "\"", "mqtt.client_id:"},
		{"data_dir writable by others", filepath.Join(dir, "data"), filepath.Join(writable, "data"), "is writable by group or others"},
	} {
		b, _ := os.ReadFile(good)
		p := filepath.Join(dir, "case.toml")
		os.WriteFile(p, []byte(strings.Replace(string(b), tc.from, tc.to, 1)), 0o600)
		code, _, errs := runCmd(t, nil, "check-config", "-c", p)
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", tc.name, code, errs, exitUsage, tc.want)
		}
	}
	// The agent refuses a bad config with the usage code too (no respawn loop).
	if code, _, _ := runCmd(t, nil, "agent", "-c", bad); code != exitUsage {
		t.Fatalf("agent with a bad config: exit %d, want %d", code, exitUsage)
	}
	// So it does a host key that only an operator can mend (before any network).
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o700)
	os.WriteFile(filepath.Join(data, "ssh_host_ed25519_key"), []byte("not a key\n"), 0o644)
	if code, _, errs := runCmd(t, nil, "agent", "-c", good); code != exitUsage || !strings.Contains(errs, "unusable host key") {
		t.Fatalf("agent with an unusable host key: exit %d, want %d: %s", code, exitUsage, errs)
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	code, out1, errs := runCmd(t, nil, "keygen", "--data-dir", dir)
	if code != 0 || !strings.HasPrefix(out1, "ssh-ed25519 SHA256:") {
		t.Fatalf("keygen: %d %q %q", code, out1, errs)
	}
	if _, out2, _ := runCmd(t, nil, "keygen", "--data-dir", dir); out2 != out1 {
		t.Fatalf("second keygen printed %q, want the same key %q", out2, out1)
	}
}

func TestConnectUsage(t *testing.T) {
	// Each refusal is given where, were its check gone, connect would dial
	// nothing beyond this machine: no -L where the check comes before
	// "nothing to do", an endpoint on 127.0.0.1 where it needs -L, and
	// noRegion or noHost where "nothing to do" alone stops the run.
	t.Setenv("AWSIOT_TUNNEL_ACCESS_TOKEN", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"connect", "--region", noRegion}, "no access token"},
		{[]string{"connect", "--token", "t"}, "exactly one of --region and --endpoint"},
		{[]string{"connect", "--token", "t", "--region", noRegion, "--endpoint", "h"}, "exactly one"},
		{[]string{"connect", "--token", "t", "--region", noRegion}, "nothing to do"},
		{[]string{"connect", "--token", "t", "--endpoint", "wss://127.0.0.1:1", "--stdio", "SSH", "-L", "SSH=1"}, "give either -L or --stdio, not both"},
		{[]string{"connect", "--token", "t", "--endpoint", "wss://127.0.0.1:1", "-L", "SSH=x"}, "listen address"},
		{[]string{"connect", "--token", "t", "--region", noRegion, "--destination-client-type", "V4"}, "V1, V2 or V3"},
		{[]string{"connect", "--token", "t", "--region", noRegion, "--destination-client-type", "v3"}, `--destination-client-type "v3": want V1, V2 or V3, in upper case`},
		{[]string{"connect", "--token", "t", "--region", noRegion, "--destination-client-type", "V1"}, "nothing to do"},
		{[]string{"connect", "--token", "t", "--region", noRegion, "--destination-client-type", "V2"}, "nothing to do"},
		{[]string{"connect", "--token", "t", "--region", noRegion, "--destination-client-type", "V3"}, "nothing to do"},
		{[]string{"connect", "--token-file", "/nonexistent", "--region", noRegion}, "token file"},
		{[]string{"connect", "--token", "t", "--region", noRegion, "--https-proxy", "socks5://x"}, "--https-proxy"},
		{[]string{"connect", "--token", "t", "--endpoint", "ws://127.0.0.1:1", "-L", "1"}, "--allow-insecure-websocket"},
		{[]string{"connect", "--token", "t", "--endpoint", "a b"}, "porthole connect: endpoint host \"a b\" is not a valid host"},
		{[]string{"connect", "--token", "t", "--region", "US_EAST"}, "porthole connect: region \"US_EAST\" is not a valid region"},
		{[]string{"connect", "--token", "t", "--endpoint", "wss://127.0.0.1:1", "-L", "1", "-L", "2"}, "a bare [addr:]port can be given once"},
		{[]string{"connect", "--token", "t", "--endpoint", "wss://127.0.0.1:1", "-L", "2222", "-L", "SSH=2223"}, "cannot be mixed with SERVICE=[addr:]port"},
		{[]string{"connect", "--token", "t", "--endpoint", "wss://127.0.0.1:1", "-L", "SSH=2222", "-L", "2223"}, "cannot be mixed with SERVICE=[addr:]port"},
		{[]string{"connect", "--token", "t", "--endpoint", "wss://127.0.0.1:1", "-L", "SSH=99999"}, "listen port 99999 is out of range (0-65535)"},
		{[]string{"connect", "--token-file", "/dev/zero", "--region", noRegion}, "larger than 16 KiB, not an access token"},
		{[]string{"connect", "--token-file", writeToken(t, `{"tunnelId":"x","sourceAccessToken":"AQGAAXsecret"}`), "--region", noRegion},
			"holds JSON (open-tunnel's answer?): write only the source token to it, e.g. with jq -r .sourceAccessToken"},
	} {
		code, _, errs := runCmd(t, nil, tc.args...)
		if strings.Contains(errs, "AQGAAXsecret") {
			t.Errorf("%v: a token in the message: %q", tc.args, errs)
		}
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, exitUsage, tc.want)
		}
	}
	// --token works but warns that argv is visible.
	_, _, errs := runCmd(t, nil, "connect", "--token", "t", "--region", noRegion)
	if !strings.Contains(errs, "process list") {
		t.Errorf("--token gave no warning: %q", errs)
	}
	// So does a password in --https-proxy, without showing it; a user name
	// alone does not.
	for _, tc := range []struct{ proxy, warn string }{
		{"http://user:S3cretPw@" + noHost + ":3128", "process list"},
		{"http://user@" + noHost + ":3128", ""},
	} {
		_, _, errs := runCmd(t, nil, "connect", "--token-file", writeToken(t, "AQGAAXtoken"), "--region", noRegion, "--https-proxy", tc.proxy)
		if strings.Contains(errs, "process list") != (tc.warn != "") || strings.Contains(errs, "S3cretPw") {
			t.Errorf("--https-proxy %s: stderr %q, want a warning %q without the password", tc.proxy, errs, tc.warn)
		}
	}
	// A token file other users can read works, with a warning.
	shared := writeToken(t, "AQGAAXtoken")
	os.Chmod(shared, 0o644)
	if _, _, errs := runCmd(t, nil, "connect", "--token-file", shared, "--region", noRegion); !strings.Contains(errs, "readable by other users") {
		t.Errorf("a 0644 token file gave no warning: %q", errs)
	}
	// Turning verification off warns, unless the endpoint is this machine.
	for _, tc := range []struct {
		args []string
		warn string
	}{
		{[]string{"--endpoint", noHost, "--insecure-skip-verify"}, "certificate is not checked"},
		{[]string{"--endpoint", "ws://" + noHost + ":80", "--allow-insecure-websocket"}, "cross the network unencrypted"},
		{[]string{"--endpoint", "WS://" + noHost + ":80", "--allow-insecure-websocket"}, "cross the network unencrypted"},
		{[]string{"--endpoint", "http://" + noHost + ":80", "--allow-insecure-websocket"}, "cross the network unencrypted"},
		{[]string{"--endpoint", "127.0.0.1:8443", "--insecure-skip-verify", "--https-proxy", "http://" + noHost + ":3128"}, "certificate is not checked"},
		{[]string{"--endpoint", "127.0.0.1:8443", "--insecure-skip-verify"}, ""},
		{[]string{"--endpoint", "ws://localhost:8080", "--allow-insecure-websocket"}, ""},
		{[]string{"--endpoint", "LocalHost:8443", "--insecure-skip-verify"}, ""},
		{[]string{"--endpoint", "wss://[::1]:8443", "--insecure-skip-verify"}, ""},
	} {
		_, _, errs := runCmd(t, nil, append([]string{"connect", "--token-file", writeToken(t, "AQGAAXtoken")}, tc.args...)...)
		if got := strings.Contains(errs, "level=WARN"); got != (tc.warn != "") || !strings.Contains(errs, tc.warn) {
			t.Errorf("%v: stderr %q, want a warning %q", tc.args, errs, tc.warn)
		}
	}
}

// A proxy variable that does not parse stops connect at once, named; every
// dial would fail the same way.
func TestConnectBadProxyEnvironment(t *testing.T) {
	t.Setenv("https_proxy", "")
	t.Setenv("HTTPS_PROXY", "ftp://proxy.example.com")
	// No -L: were the variable not refused, connect would stop at "nothing
	// to do", not dial the region's endpoint.
	code, _, errs := runCmd(t, nil, "connect", "--token-file", writeToken(t, "AQGAAXtoken"), "--region", noRegion)
	if code != exitUsage || !strings.Contains(errs, `HTTPS_PROXY: proxy URL scheme "ftp"`) {
		t.Errorf("exit %d, stderr %q; want %d naming HTTPS_PROXY", code, errs, exitUsage)
	}
	// One that NO_PROXY bypasses for the endpoint is never used: no refusal.
	t.Setenv("NO_PROXY", noHost)
	_, _, errs = runCmd(t, nil, "connect", "--token-file", writeToken(t, "AQGAAXtoken"), "--endpoint", noHost)
	if strings.Contains(errs, "HTTPS_PROXY") || !strings.Contains(errs, "nothing to do") {
		t.Errorf("stderr %q; want the proxy variable ignored (NO_PROXY) and the run to go on", errs)
	}
}

// A client token from AWSIOT_TUNNEL_CLIENT_TOKEN (localproxy's -i) that is no
// client token stops connect at once, naming the variable and not its value:
// ignored, the run went on with a token of its own, and the service refused
// the source token that had been used with the one meant.
func TestConnectBadClientTokenEnvironment(t *testing.T) {
	for _, v := range []string{"Short-Secret-Value", strings.Repeat("x", 31) + "!", strings.Repeat("y", 129)} {
		t.Setenv("AWSIOT_TUNNEL_CLIENT_TOKEN", v)
		// No -L: were the variable not refused, connect would stop at
		// "nothing to do", not connect (nothing leaves this machine).
		code, _, errs := runCmd(t, nil, "connect", "--token-file", writeToken(t, "AQGAAXtoken"), "--region", noRegion)
		if code != exitUsage || !strings.Contains(errs, "AWSIOT_TUNNEL_CLIENT_TOKEN") {
			t.Errorf("AWSIOT_TUNNEL_CLIENT_TOKEN of %d characters: exit %d, stderr %q; want %d naming the variable", len(v), code, errs, exitUsage)
		}
		if strings.Contains(errs, v) {
			t.Errorf("the client token's value in the message: %q", errs)
		}
	}
}

// porthole connect --stdio through the fake service to an echo target, twice with
// the same source token: the cached client token makes the second run acceptable.
func TestConnectStdioReusesToken(t *testing.T) {
	srv, tun := echoTunnel(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(tun.SourceToken+"\n"), 0o600)
	for i := range 2 {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		done := make(chan int, 1)
		var errb bytes.Buffer
		go func() {
			done <- run([]string{"connect", "--endpoint", srv.URL, "--allow-insecure-websocket", "--token-file", tokenFile, "--stdio", "SSH"}, inR, outW, &errb)
			outW.Close()
		}()
		go inW.Write([]byte("ping through stdio"))
		got := make([]byte, len("ping through stdio"))
		if _, err := io.ReadFull(outR, got); err != nil || string(got) != "ping through stdio" {
			t.Fatalf("run %d: echo %q, %v; stderr %s", i, got, err, errb.String())
		}
		inW.Close()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("run %d: exit %d: %s", i, code, errb.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: connect did not end after stdin EOF", i)
		}
		if strings.Contains(errb.String(), tun.SourceToken) {
			t.Fatal("stderr shows the access token")
		}
		if errb.Len() > 0 { // a ProxyCommand is quiet unless something is wrong
			t.Fatalf("run %d: --stdio wrote to stderr: %s", i, errb.String())
		}
	}
}

// TestConnectFailsBeforeJoining: a port that is in use ends porthole connect
// before it joins the tunnel (joining would take the place of a source already
// there), and a token the service refuses leaves no cached client token.
func TestConnectFailsBeforeJoining(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	srv := tunneltest.NewServer(t)
	tun := srv.OpenTunnel("SSH")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(tun.SourceToken+"\n"), 0o600)
	code, _, errs := runCmd(t, nil, "connect", "--endpoint", srv.URL, "--allow-insecure-websocket", "--token-file", tokenFile, "-L", "SSH="+busy.Addr().String())
	if code != exitUsage || !strings.Contains(errs, "cannot listen for service \"SSH\" on "+busy.Addr().String()) {
		t.Fatalf("port in use: exit %d, stderr %q", code, errs)
	}
	for _, hs := range srv.Handshakes() {
		if hs.Mode == "source" {
			t.Fatalf("connect joined the tunnel (status %d) although its port was in use", hs.Status)
		}
	}

	// A host name that does not resolve ends it too, before it retries: Go's
	// resolver answers "no such host" for a name that is not a domain name
	// (a label ending in "-") without asking a server.
	type result struct {
		code int
		errs string
	}
	resolved := make(chan result, 1)
	go func() {
		code, _, errs := runCmd(t, nil, "connect", "--endpoint", noHost+":443", "--token-file", tokenFile, "-L", "SSH=0")
		resolved <- result{code, errs}
	}()
	select {
	case r := <-resolved:
		if r.code != exitRuntime || !strings.Contains(r.errs, "does not resolve (check --region or --endpoint)") {
			t.Fatalf("unresolvable endpoint: exit %d, stderr %q", r.code, r.errs)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("porthole connect still retrying an endpoint that does not resolve after 20 s")
	}

	// The same endpoint from AWSIOT_TUNNEL_ENDPOINT is named as the
	// variable: no flag was given, and a value left from another session is
	// mended by unsetting it.
	t.Setenv("AWSIOT_TUNNEL_ENDPOINT", noHost+":443")
	code, _, errs = runCmd(t, nil, "connect", "--token-file", tokenFile, "-L", "SSH=0")
	if code != exitRuntime || !strings.Contains(errs, "does not resolve (check AWSIOT_TUNNEL_ENDPOINT)") {
		t.Fatalf("unresolvable AWSIOT_TUNNEL_ENDPOINT: exit %d, stderr %q", code, errs)
	}
	t.Setenv("AWSIOT_TUNNEL_ENDPOINT", "")

	// An endpoint that does not speak TLS (a plain HTTP server) ends it too.
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	code, _, errs = runCmd(t, nil, "connect", "--endpoint", plain.Listener.Addr().String(), "--token-file", tokenFile, "-L", "SSH=0")
	if code != exitRuntime || !strings.Contains(errs, "the endpoint does not answer in TLS") {
		t.Fatalf("plain HTTP endpoint: exit %d, stderr %q", code, errs)
	}

	// A proxy that fails is named, not the service: an https:// proxy that
	// answers in plain HTTP, and one whose name does not resolve. The
	// endpoint is noHost: were the proxy not used, nothing would leave this
	// machine.
	for _, tc := range []struct{ proxy, want string }{
		{"https://" + plain.Listener.Addr().String(), "a plain proxy is http://, not https://"},
		{"http://" + noHost + ":3128", "the HTTPS proxy cannot be reached"},
	} {
		code, _, errs = runCmd(t, nil, "connect", "--endpoint", noHost, "--https-proxy", tc.proxy, "--token-file", tokenFile, "-L", "SSH=0")
		if code != exitRuntime || !strings.Contains(errs, tc.want) {
			t.Fatalf("--https-proxy %s: exit %d, stderr %q; want %d and %q", tc.proxy, code, errs, exitRuntime, tc.want)
		}
	}

	// A proxy that refuses the credentials ends it at once (it retried
	// forever), saying what the proxy wants: exit 1, a configuration error.
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Proxy-Authenticate", `Basic realm="corp"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
	}))
	defer auth.Close()
	for _, tc := range []struct{ proxy, want string }{
		{auth.URL, "it wants a user name and password: put them in the proxy URL"},
		{"http://u:secret-pass@" + auth.Listener.Addr().String(), "it refused the user name and password"},
	} {
		code, _, errs = runCmd(t, nil, "connect", "--endpoint", noHost, "--https-proxy", tc.proxy, "--token-file", tokenFile, "-L", "SSH=0")
		if code != exitUsage || !strings.Contains(errs, tc.want) || strings.Contains(errs, "secret-pass") {
			t.Fatalf("--https-proxy %s answering 407: exit %d, stderr %q; want %d and %q, no password", tc.proxy, code, errs, exitUsage, tc.want)
		}
	}

	os.WriteFile(tokenFile, []byte("not-a-token-of-this-service\n"), 0o600)
	code, _, errs = runCmd(t, nil, "connect", "--endpoint", srv.URL, "--allow-insecure-websocket", "--token-file", tokenFile, "-L", "SSH=0")
	if code != exitUsage || strings.Count(errs, "handshake refused") != 1 {
		t.Fatalf("refused token: exit %d, stderr %q; want %d and the refusal said once", code, errs, exitUsage)
	}
	var kept []string
	filepath.WalkDir(cache, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			kept = append(kept, p)
		}
		return nil
	})
	if len(kept) > 0 {
		t.Fatalf("a refused token left %q in the cache", kept)
	}
}

func TestDefaultMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	setMemoryLimit(func(string) string { return "64MiB" }, 64<<20)
	if got := debug.SetMemoryLimit(-1); got != old {
		t.Fatalf("with GOMEMLIMIT set, the limit changed to %d", got)
	}
	for _, c := range []struct {
		ram  uint64
		want int64
	}{
		{0, defaultMemoryLimit}, // unknown
		{49 << 20, smallMemoryLimit},
		{smallDeviceRAM - 1, smallMemoryLimit},
		{smallDeviceRAM, defaultMemoryLimit},
		{24 << 30, defaultMemoryLimit},
	} {
		setMemoryLimit(func(string) string { return "" }, c.ram)
		if got := debug.SetMemoryLimit(-1); got != c.want {
			t.Errorf("RAM %d: memory limit = %d, want %d", c.ram, got, c.want)
		}
	}
}

func TestTotalRAM(t *testing.T) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Skip(err)
	}
	var kB uint64
	if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kB); err != nil {
		t.Fatalf("/proc/meminfo: %v", err)
	}
	// A 32-bit kernel scales sysinfo's counts by mem_unit past 4 GiB; qemu-user
	// (tools/qemu-test.sh) copies the host's 64-bit counts into 32 bits without
	// it, so there the emulator, not totalRAM, is wrong.
	if arch := os.Getenv("PORTHOLE_QEMU_USER"); arch != "" && strconv.IntSize == 32 && kB<<10 > math.MaxUint32 {
		t.Skipf("qemu-user (%s) truncates sysinfo on a host with more than 4 GiB", arch)
	}
	if got := totalRAM(); got != kB<<10 {
		t.Fatalf("totalRAM() = %d, want MemTotal %d kB = %d", got, kB, kB<<10)
	}
}

// childPorthole runs porthole with args as a process of its own (TestMain
// runs main in it) and returns it with its stderr lines; it is killed when
// the test ends. The child starts with SIGHUP at its default: go test may
// itself run with the hangup ignored (nohup, a CI job in the background), and
// the child would inherit that. With a handler installed, exec gives the
// child the default. (Not signal.Ignored: it reports false once Notify has
// been called, though Stop puts SIG_IGN back, so a second -count run hung.)
func childPorthole(t *testing.T, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd, stderr := startChild(t, args...)
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, lines
}

// startChild starts this test binary as porthole with args and returns it and
// the read end of its stderr; it is killed at the test's end.
func startChild(t *testing.T, args ...string) (*exec.Cmd, io.ReadCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := startHangupDefault(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, stderr
}

// startHangupDefault starts cmd with SIGHUP at its default, as the tests
// that send it expect, though go test may run with it ignored (see
// childPorthole): caught here while it starts.
func startHangupDefault(cmd *exec.Cmd) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return cmd.Start()
}
