package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest"
)

// echoTunnel opens a tunnel with service SSH on a fake service, with a destination
// connected that echoes what it gets, and a fresh cache directory for the client
// tokens.
func echoTunnel(t *testing.T) (*tunneltest.Server, *tunneltest.Tunnel) {
	t.Helper()
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	t.Setenv(tokenEnv, "")
	t.Setenv(clientTokenEnv, "")
	t.Setenv(endpointEnv, "")
	t.Setenv(regionEnv, "")
	return tunneltest.ConnectedTunnel(t, "SSH", tunneltest.EchoServer(t, 0))
}

// stdioConnect is a running `porthole connect --stdio SSH`.
type stdioConnect struct {
	in   *io.PipeWriter
	out  *io.PipeReader
	errb bytes.Buffer // read only after done
	done chan int
}

func startStdio(srv *tunneltest.Server, args ...string) *stdioConnect {
	return startConnect(append([]string{"connect", "--endpoint", srv.URL, "--allow-insecure-websocket", "--stdio", "SSH"}, args...)...)
}

// startConnect runs porthole with args (a connect --stdio command line).
func startConnect(args ...string) *stdioConnect {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &stdioConnect{in: inW, out: outR, done: make(chan int, 1)}
	go func() {
		c.done <- run(args, inR, outW, &c.errb)
		outW.Close()
		inR.Close()
	}()
	return c
}

// echo sends msg through c and checks that it comes back.
func (c *stdioConnect) echo(t *testing.T, msg string) {
	t.Helper()
	go c.in.Write([]byte(msg))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c.out, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q, %v; want %q", got, err, msg)
	}
}

// stop closes c's stdin and returns its exit code and stderr.
func (c *stdioConnect) stop(t *testing.T) (int, string) {
	t.Helper()
	c.in.Close()
	select {
	case code := <-c.done:
		return code, c.errb.String()
	case <-time.After(10 * time.Second):
		t.Fatal("connect did not end after stdin EOF")
		return 0, ""
	}
}

func writeToken(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConnectTokenSources: an option on the command line wins over
// AWSIOT_TUNNEL_ACCESS_TOKEN (localproxy's precedence, spec §5.1), --token with
// --token-file is a usage error, and a token is trimmed alike from every source.
func TestConnectTokenSources(t *testing.T) {
	srv, tun := echoTunnel(t)
	wrong := "a-token-the-service-refuses"
	for _, tc := range []struct {
		name string
		env  string
		args []string
	}{
		{"--token-file beats the environment", wrong, []string{"--token-file", writeToken(t, tun.SourceToken+"\n")}},
		{"--token beats the environment", wrong, []string{"--token", tun.SourceToken}},
		{"environment with a newline", tun.SourceToken + "\n", nil},
		{"environment with CRLF and blanks", " " + tun.SourceToken + "\r\n", nil},
		{"--token with a newline", "", []string{"--token", tun.SourceToken + "\n"}},
		{"--token-file with CRLF", "", []string{"--token-file", writeToken(t, tun.SourceToken+"\r\n")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tokenEnv, tc.env)
			c := startStdio(srv, tc.args...)
			c.echo(t, "ping "+tc.name)
			if code, errs := c.stop(t); code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
		})
	}

	// (With a good token in the file, a porthole connect that let the file win
	// would run until killed: this one would end at once.)
	before := len(srv.Handshakes())
	code, _, errs := runCmd(t, nil, "connect", "--endpoint", srv.URL, "--allow-insecure-websocket", "-L", "SSH=0",
		"--token", tun.SourceToken, "--token-file", writeToken(t, wrong))
	if code != exitUsage || !strings.Contains(errs, "give one of --token and --token-file, not both") {
		t.Fatalf("--token with --token-file: exit %d, stderr %q; want %d and a refusal", code, errs, exitUsage)
	}
	for _, hs := range srv.Handshakes()[before:] {
		t.Errorf("after --token with --token-file, a %s handshake", hs.Mode)
	}
}

func TestAccessToken(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == tokenEnv {
				return v
			}
			return ""
		}
	}
	file := writeToken(t, " from-file\n")
	for _, tc := range []struct {
		name             string
		tokenSet         bool
		token            string
		fileSet          bool
		env              string
		want, from, fail string
	}{
		{name: "none", from: ""},
		{name: "environment", env: "from-env\n", want: "from-env", from: tokenEnv},
		{name: "--token", tokenSet: true, token: "from-flag", env: "from-env", want: "from-flag", from: "--token"},
		{name: "--token-file", fileSet: true, env: "from-env", want: "from-file", from: "--token-file"},
		{name: "both", tokenSet: true, token: "from-flag", fileSet: true, fail: "not both"},
		{name: "--token empty", tokenSet: true, token: " ", env: "from-env", fail: "--token: access token is empty"},
		{name: "environment control character", env: "a\x01b", fail: tokenEnv + ": access token contains a control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, from, err := accessToken(tc.tokenSet, tc.token, tc.fileSet, file, env(tc.env))
			if tc.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fail) {
					t.Fatalf("accessToken = %v, %q, %v; want an error with %q", tok, from, err, tc.fail)
				}
				return
			}
			if err != nil || tok.Reveal() != tc.want || from != tc.from {
				t.Fatalf("accessToken = %q, %q, %v; want %q from %q", tok.Reveal(), from, err, tc.want, tc.from)
			}
		})
	}
}

// TestConnectSecondOnSameToken: a second porthole connect with the token of one
// that is running ends at once (exit 1, naming the first's pid) without joining
// the tunnel, where it would take the first's place, and the first carries on.
func TestConnectSecondOnSameToken(t *testing.T) {
	srv, tun := echoTunnel(t)
	file := writeToken(t, tun.SourceToken+"\n")
	first := startStdio(srv, "--token-file", file)
	first.echo(t, "first")
	sources := func() (n int) {
		for _, hs := range srv.Handshakes() {
			if hs.Mode == "source" {
				n++
			}
		}
		return n
	}
	before := sources()

	code, _, errs := runCmd(t, nil, "connect", "--endpoint", srv.URL, "--allow-insecure-websocket",
		"--token-file", file, "-L", "SSHX=127.0.0.1:0")
	want := "another porthole connect (pid " + strconv.Itoa(os.Getpid()) + ") is using this token"
	if code != exitUsage || !strings.Contains(errs, want) {
		t.Errorf("second connect: exit %d, stderr %q; want %d and %q", code, errs, exitUsage, want)
	}
	if n := sources(); n != before {
		t.Errorf("the second connect joined the tunnel (%d source handshakes, want %d)", n, before)
	}
	first.echo(t, "first, still there")
	if code, errs := first.stop(t); code != 0 {
		t.Fatalf("first connect: exit %d: %s", code, errs)
	}

	// Once the first has ended, the token is free again and the lock leaves no file.
	again := startStdio(srv, "--token-file", file)
	again.echo(t, "after the first")
	if code, errs := again.stop(t); code != 0 {
		t.Fatalf("connect after the first ended: exit %d: %s", code, errs)
	}
	locks, _ := filepath.Glob(filepath.Join(os.Getenv("XDG_CACHE_HOME"), "porthole", "client-tokens", "*.lock"))
	if len(locks) > 0 {
		t.Errorf("lock files left behind: %q", locks)
	}
}

// TestConnectNoCacheDir: with neither HOME nor XDG_CACHE_HOME (a systemd
// system unit, cron, env -i) there is no client-token cache and no lock: say
// so, as for a cache that cannot be written, or the next run's refusal blames
// another source that does not exist.
func TestConnectNoCacheDir(t *testing.T) {
	srv, tun := echoTunnel(t)
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "")
	c := startStdio(srv, "--token-file", writeToken(t, tun.SourceToken))
	c.echo(t, "ping")
	code, errs := c.stop(t)
	if code != 0 || !strings.Contains(errs, "client token cache unusable; this token can then be used once only") ||
		!strings.Contains(errs, "no lock") || !strings.Contains(errs, "HOME") {
		t.Errorf("without a cache directory: exit %d, stderr %q; want 0 and a warning with the error", code, errs)
	}
}

// TestFlagErrorPrintedOnce: package flag prints a bad flag's error above the
// usage; run must not print it again, and still exits with the usage code.
func TestFlagErrorPrintedOnce(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"connect", "-x"}, "flag provided but not defined: -x"},
		{[]string{"connect", "-L", "SSH=x"}, `invalid value "SSH=x" for flag -L: listen address "x"`}, // no "tunnel: " between
		{[]string{"connect", "--region"}, "flag needs an argument: -region"},
		{[]string{"agent", "-x"}, "flag provided but not defined: -x"},
		{[]string{"check-config", "-x"}, "flag provided but not defined: -x"},
		{[]string{"keygen", "-x"}, "flag provided but not defined: -x"},
		// Errors that package flag does not print are printed by run, once.
		{[]string{"connect", "extra"}, `porthole connect: unexpected argument "extra"`},
		{[]string{"connect", "--token", "t"}, "porthole connect: give exactly one of --region and --endpoint"},
	} {
		code, _, errs := runCmd(t, nil, tc.args...)
		if n := strings.Count(errs, strings.TrimPrefix(tc.want, "porthole "+tc.args[0]+": ")); code != exitUsage || n != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, %q %d times in stderr; want exit %d and once:\n%s", tc.args, code, tc.want, n, exitUsage, errs)
		}
	}
}

// TestListenCommas: -L SSH=2222,WEB=8080, as localproxy's -s takes its
// mappings, says to repeat -L (it said only "want [host:]port"); other
// mistakes do not.
func TestListenCommas(t *testing.T) {
	const hint = "-L SSH=2222 -L WEB=8080"
	for _, tc := range []struct {
		arg  string
		hint bool
	}{
		{"SSH=2222,WEB=8080", true},
		{"2222,8080", true},
		{"SSH=127.0.0.1,WEB=127.0.0.1:8080", true}, // ParseListen took "127.0.0.1,WEB=127.0.0.1" for a host
		{"SSH=x", false},
		{"SSH=70000", false},
	} {
		err := listenFlags{}.Set(tc.arg)
		if err == nil || strings.Contains(err.Error(), hint) != tc.hint {
			t.Errorf("-L %s: %v; want an error, with %q: %v", tc.arg, err, hint, tc.hint)
		}
	}
}

// TestConnectTokenFileWithBOM: Windows editors (Notepad before 2019,
// PowerShell's Set-Content -Encoding UTF8) start a text file with a UTF-8 byte
// order mark. It is not part of the token: a token saved so must work as the
// same token saved without it, not be sent to the service, refused, and
// explained as a wrong or used token.
func TestConnectTokenFileWithBOM(t *testing.T) {
	srv, tun := echoTunnel(t)
	c := startStdio(srv, "--token-file", writeToken(t, "\ufeff"+tun.SourceToken+"\r\n"))
	go c.in.Write([]byte("ping"))
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 4)
		io.ReadFull(c.out, b)
		got <- string(b)
	}()
	select {
	case s := <-got:
		if s != "ping" {
			code, errs := c.stop(t)
			t.Fatalf("echo %q, want ping; exit %d: %s", s, code, errs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no echo")
	}
	if code, errs := c.stop(t); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// TestTokenFileEncodings: a JSON answer behind a BOM is still recognised, and a
// UTF-16 file is named as such rather than as "a control character".
func TestTokenFileEncodings(t *testing.T) {
	for _, tc := range []struct{ name, content, want string }{
		{"BOM and JSON", "\ufeff{\"sourceAccessToken\":\"x\"}", "holds JSON"},
		{"UTF-16LE", "\xff\xfea\x00b\x00", "UTF-16"},
	} {
		// The endpoint refuses at once, should the token be sent after all.
		code, _, errs := runCmd(t, nil, "connect", "--endpoint", "ws://127.0.0.1:1", "--allow-insecure-websocket", "-L", "SSH=0", "--token-file", writeToken(t, tc.content))
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", tc.name, code, errs, exitUsage, tc.want)
		}
	}
}

// TestQuotedToken: `jq .sourceAccessToken` without -r, or the AWS CLI's
// `--query sourceAccessToken` without `--output text`, write the token as a
// JSON string, in double quotes. No access token is so quoted; sent as it is,
// the service refuses it and the operator is told the tunnel may be closed or
// the token rotated, and rotates a good token. Say what is wrong instead,
// without the token, whichever way it was given.
func TestQuotedToken(t *testing.T) {
	srv, tun := echoTunnel(t) // refuses a token it does not know at once
	quoted := `"` + tun.SourceToken + `"`
	base := []string{"connect", "--endpoint", srv.URL, "--allow-insecure-websocket", "-L", "SSH=127.0.0.1:0"}
	for _, tc := range []struct {
		name string
		args []string
		env  string
	}{
		{"file", []string{"--token-file", writeToken(t, quoted+"\n")}, ""},
		{"flag", []string{"--token", quoted}, ""},
		{"environment", nil, " " + quoted + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tokenEnv, tc.env)
			code, _, errs := runCmd(t, nil, append(base, tc.args...)...)
			if strings.Contains(errs, tun.SourceToken) {
				t.Errorf("the token in the message: %q", errs)
			}
			if code != exitUsage || !strings.Contains(errs, "in double quotes") || !strings.Contains(errs, "jq -r") || !strings.Contains(errs, "--query sourceAccessToken --output text") {
				t.Errorf("exit %d, stderr %q; want %d and a quoted token named, with the remedy", code, errs, exitUsage)
			}
		})
	}
}

// TestWholeOpenTunnelAnswerAsToken: the AWS CLI's --output text without
// --query writes open-tunnel's whole answer on one line, its fields between
// tabs (both tokens among them). Said so, with the remedy, and without the
// tokens; "contains a control character" did not point at the fix.
func TestWholeOpenTunnelAnswerAsToken(t *testing.T) {
	srv, tun := echoTunnel(t)
	line := "AQGAAXdestination-token-" + strings.Repeat("d", 40) + "\t" + tun.SourceToken + "\tarn:aws:iot:eu-west-1:123456789012:tunnel/1b2c\t1b2c\n"
	code, _, errs := runCmd(t, nil, "connect", "--endpoint", srv.URL, "--allow-insecure-websocket", "-L", "SSH=127.0.0.1:0", "--token-file", writeToken(t, line))
	if strings.Contains(errs, tun.SourceToken) || strings.Contains(errs, "destination-token") {
		t.Errorf("a token in the message: %q", errs)
	}
	if code != exitUsage || !strings.Contains(errs, "--output text writes a whole answer") || !strings.Contains(errs, "--query sourceAccessToken") {
		t.Errorf("exit %d, stderr %q; want %d, the whole answer named, with the remedy", code, errs, exitUsage)
	}
}

// TestSharedTokenFile: the "readable by other users" warning follows the mode
// on Unix; on Windows, where every file's mode is 0666 (or 0444) whoever may
// read it, it is never given.
func TestSharedTokenFile(t *testing.T) {
	for _, c := range []struct {
		goos string
		mode fs.FileMode
		want bool
	}{
		{"linux", 0o600, false}, {"linux", 0o644, true}, {"darwin", 0o640, true}, {"darwin", 0o400, false},
		{"windows", 0o666, false}, {"windows", 0o444, false},
	} {
		if got := sharedTokenFile(c.goos, c.mode); got != c.want {
			t.Errorf("sharedTokenFile(%s, %v) = %v, want %v", c.goos, c.mode, got, c.want)
		}
	}
}

// TestConnectClientTokenFromEnvironment: localproxy reads the client token from
// AWSIOT_TUNNEL_CLIENT_TOKEN (its -i option). A source token that localproxy
// (or a script) has used with that client token is accepted again only with
// the same client token; porthole connect, started with the same environment,
// must present it rather than a client token of its own, which the service
// refuses ("does not match the client token that was previously set").
func TestConnectClientTokenFromEnvironment(t *testing.T) {
	srv, tun := echoTunnel(t)
	const ct = "0123456789abcdef-localproxy-client-token"
	// What localproxy -i did: connect with the source token and this client token.
	at, err := tunnel.NewAccessToken(tun.SourceToken)
	if err != nil {
		t.Fatal(err)
	}
	ctok, err := tunnel.NewClientToken(ct)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tunnel.Dial(ctx, &tunnel.Config{Endpoint: srv.URL, AllowInsecureWebSocket: true, AccessToken: at, ClientToken: ctok}, tunnel.ModeSource)
	if err != nil {
		t.Fatalf("first source connection: %v", err)
	}
	c.Close()

	t.Setenv(tokenEnv, tun.SourceToken)
	t.Setenv(clientTokenEnv, ct+" ") // trimmed, as cmd.exe's `set VAR=value && …` keeps the space
	s := startStdio(srv)
	go s.in.Write([]byte("ping"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(s.out, got); err != nil || string(got) != "ping" {
		code, errs := s.stop(t)
		t.Fatalf("porthole connect with AWSIOT_TUNNEL_CLIENT_TOKEN set: echo %q, %v; exit %d: %s", got, err, code, errs)
	}
	if code, errs := s.stop(t); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}

	// Left set for another tunnel: client tokens are unique across open
	// tunnels (spec §2.1), so the service refuses it. The variable is at
	// fault, not the access token: a rotated one is refused the same way.
	t.Setenv(tokenEnv, srv.OpenTunnel("SSH").SourceToken)
	code, _, errs := runCmd(t, nil, "connect", "--endpoint", srv.URL, "--allow-insecure-websocket", "-L", "SSH=0")
	if code != exitUsage || !strings.Contains(errs, "unset "+clientTokenEnv) || strings.Contains(errs, "rotate-tunnel-access-token") {
		t.Errorf("%s reused on another tunnel: exit %d, stderr %q; want %d, naming the variable and not rotating the token", clientTokenEnv, code, errs, exitUsage)
	}
}

// TestConnectEndpointFromEnvironment: localproxy takes the endpoint and the
// region from AWSIOT_TUNNEL_ENDPOINT and AWSIOT_TUNNEL_REGION when -e and -r
// are not given; porthole connect, documented as reading localproxy's
// AWSIOT_TUNNEL_ACCESS_TOKEN, must read them too.
func TestConnectEndpointFromEnvironment(t *testing.T) {
	srv, tun := echoTunnel(t)
	t.Setenv(tokenEnv, tun.SourceToken)
	// With the space cmd.exe's `set VAR=value && porthole …` keeps.
	t.Setenv(endpointEnv, srv.URL+" ")
	c := startConnect("connect", "--allow-insecure-websocket", "--stdio", "SSH")
	c.echo(t, "ping")
	if code, errs := c.stop(t); code != 0 {
		t.Fatalf("with %s set and no --endpoint: exit %d, stderr %q", endpointEnv, code, errs)
	}
	// Both, as in localproxy, are a mistake; a flag given wins over both.
	t.Setenv(regionEnv, noRegion)
	if code, _, errs := runCmd(t, nil, "connect", "--allow-insecure-websocket", "--stdio", "SSH"); code != 1 || !strings.Contains(errs, regionEnv) {
		t.Errorf("with %s and %s set: exit %d, stderr %q; want a usage error naming them", endpointEnv, regionEnv, code, errs)
	}
	c = startStdio(srv)
	c.echo(t, "ping")
	if code, errs := c.stop(t); code != 0 {
		t.Errorf("--endpoint with both variables set: exit %d, stderr %q", code, errs)
	}
}

// TestConnectEndpointFromEnvironmentNamed: a mistake in an endpoint or region
// taken from the environment (a variable left from a lab or localproxy
// session) names the variable, and a ws:// one is not mended by
// --allow-insecure-websocket, which would send a real token in the clear.
func TestConnectEndpointFromEnvironmentNamed(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv(tokenEnv, "")
	t.Setenv(clientTokenEnv, "")
	tok := writeToken(t, "some-source-token\n")
	for _, tc := range []struct{ env, value, want string }{
		{endpointEnv, "ws://127.0.0.1:8080", endpointEnv + "=ws://127.0.0.1:8080 is not TLS (left from a lab?): unset it"},
		{endpointEnv, "localhost:8080/tunnel", endpointEnv + `: endpoint host "localhost:8080/tunnel"`},
		// Ends in -, as noRegion: were it taken, -L has connect dial it.
		{regionEnv, "EU-WEST-1-", regionEnv + `: region "EU-WEST-1-"`},
	} {
		t.Setenv(endpointEnv, "")
		t.Setenv(regionEnv, "")
		t.Setenv(tc.env, tc.value)
		code, _, errs := runCmd(t, nil, "connect", "--token-file", tok, "-L", "SSH=0")
		if code != exitUsage || !strings.Contains(errs, tc.want) || strings.Contains(errs, "add --allow-insecure-websocket") {
			t.Errorf("%s=%s: exit %d, stderr %q; want %d and %q", tc.env, tc.value, code, errs, exitUsage, tc.want)
		}
	}
	// Allowed, the warning that the tokens cross the network in the clear
	// names it too. No -L, and noHost: nothing is dialled were "nothing to
	// do" gone.
	t.Setenv(regionEnv, "")
	t.Setenv(endpointEnv, "ws://"+noHost+":8080")
	if _, _, errs := runCmd(t, nil, "connect", "--token-file", tok, "--allow-insecure-websocket"); !strings.Contains(errs, endpointEnv+" is ws://") {
		t.Errorf("%s=ws://%s:8080 with --allow-insecure-websocket: stderr %q, want a warning naming it", endpointEnv, noHost, errs)
	}
}

// The names an endpoint's certificate holds may be any ASCII bytes, and Go
// checks them before the chain, so any endpoint, proxy or spoofer, trusted or
// not, chooses what a refusal quotes. On the operator's terminal (ssh's own,
// for a ProxyCommand) they must not arrive as escape sequences or lines.
func TestConnectCertificateNamesReachTheTerminalEscaped(t *testing.T) {
	// Only the environment echoTunnel sets: a cache and home of the
	// test's own, none of the AWSIOT_TUNNEL_ variables.
	echoTunnel(t)
	names := []string{"a\x1b]52;c;ZWNobyBwd25lZA==\x07", "b\x1b[2J\x1b[H", "c\nporthole connect: connected\n"}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: names}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	addr := tunneltest.ServeTCP(t, func(c net.Conn) {
		tls.Server(c, cert).Handshake()
		c.Close()
	})
	_, port, _ := net.SplitHostPort(addr)
	t.Setenv(tokenEnv, strings.Repeat("t", 40))
	var errb bytes.Buffer // stdout is written to after run returns when it ends before joining
	code := run([]string{"connect", "--endpoint", "wss://localhost:" + port, "--stdio", "SSH"}, strings.NewReader(""), io.Discard, &errb)
	errs := errb.String()
	if code == exitOK || !strings.Contains(errs, `valid for a\x1b]52;c;ZWNobyBwd25lZA==\a, b\x1b[2J\x1b[H, c\nporthole connect: connected\n, not localhost`) {
		t.Fatalf("exit %d, stderr %q; want the certificate's names escaped", code, errs)
	}
	if strings.ContainsAny(errs, "\x1b\a") || strings.Contains(errs, "\nporthole connect: connected") {
		t.Errorf("stderr %q: the certificate's control characters reached it raw", errs)
	}
}

// TestConnectLogsTokenSource: porthole connect says where the access token
// came from (an AWSIOT_TUNNEL_ACCESS_TOKEN left from another session wins over
// nothing but the flags) by its fingerprint, never the token itself: the log
// is pasted into tickets. No -L: nothing is dialled. -v adds the debug lines.
func TestConnectLogsTokenSource(t *testing.T) {
	srv, tun := echoTunnel(t)
	const secret = "AQGAAXlogged-token-must-not-appear-0123456789"
	tok, err := tunnel.NewAccessToken(secret)
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"connect", "--endpoint", "ws://127.0.0.1:1", "--allow-insecure-websocket"}
	for _, tc := range []struct {
		name, env string
		args      []string
		from      string
	}{
		{"file", "", []string{"--token-file", writeToken(t, secret+"\n")}, "--token-file"},
		{"flag", "", []string{"--token", secret}, "--token"},
		{"environment", secret, nil, tokenEnv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tokenEnv, tc.env)
			_, _, errs := runCmd(t, nil, append(base, tc.args...)...)
			want := `msg="access token" from=` + tc.from + " token=" + tok.String()
			if !strings.Contains(errs, want) || strings.Contains(errs, secret) {
				t.Errorf("stderr %q; want %q and not the token", errs, want)
			}
			if strings.Contains(errs, "level=DEBUG") {
				t.Errorf("debug lines without -v: %q", errs)
			}
		})
	}
	// -v: the debug lines, --stdio's quiet notwithstanding.
	t.Setenv(tokenEnv, tun.SourceToken)
	c := startStdio(srv, "-v")
	c.echo(t, "ping")
	code, errs := c.stop(t)
	if code != 0 || !strings.Contains(errs, `level=DEBUG msg="frame in"`) || strings.Contains(errs, tun.SourceToken) {
		t.Errorf("-v --stdio: exit %d, stderr %q; want 0 and the debug lines, without the token", code, errs)
	}
}

// TestConnectTLSOptions: an endpoint whose certificate no system CA signed (a
// lab's, a test service's) is refused, and is reached with --ca-file holding
// its CA, or with --insecure-skip-verify; the handshake names porthole in its
// User-Agent. The endpoint is on 127.0.0.1.
func TestConnectTLSOptions(t *testing.T) {
	srv, tun := echoTunnel(t)
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	ts.StartTLS()
	defer ts.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	endpoint := "wss://" + ts.Listener.Addr().String()
	tok := writeToken(t, tun.SourceToken)

	var errb bytes.Buffer
	if code := run([]string{"connect", "--endpoint", endpoint, "--token-file", tok, "--stdio", "SSH"}, strings.NewReader(""), io.Discard, &errb); code == exitOK ||
		!strings.Contains(errb.String(), "certificate") {
		t.Fatalf("an untrusted certificate: exit %d, stderr %q; want a refusal", code, errb.String())
	}
	for _, args := range [][]string{{"--ca-file", ca}, {"--insecure-skip-verify"}} {
		c := startConnect(append([]string{"connect", "--endpoint", endpoint, "--token-file", tok, "--stdio", "SSH"}, args...)...)
		c.echo(t, "ping with "+args[0])
		if code, errs := c.stop(t); code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errs)
		}
	}
	n := 0
	for _, hs := range srv.Handshakes() {
		if hs.Mode != "source" {
			continue
		}
		n++
		if ua := hs.Header.Get("User-Agent"); !strings.HasPrefix(ua, "porthole/") {
			t.Errorf("source handshake with User-Agent %q, want porthole/VERSION", ua)
		}
	}
	if n != 2 {
		t.Errorf("%d source handshakes, want 2", n)
	}
}

// TestConnectDestinationClientType: --destination-client-type picks the
// frames an older destination understands (spec §2.3): V1 names no service,
// V2 names it, and only V3 numbers the connections of a stream.
func TestConnectDestinationClientType(t *testing.T) {
	srv, tun := echoTunnel(t)
	tok := writeToken(t, tun.SourceToken)
	for _, tc := range []struct {
		peer    string
		service string
		connID  bool
	}{
		{"V1", "", false}, {"V2", "SSH", false}, {"V3", "SSH", true},
	} {
		t.Run(tc.peer, func(t *testing.T) {
			tun.Record(true)
			before := len(tun.Received(tunneltest.Source))
			c := startStdio(srv, "--token-file", tok, "--destination-client-type", tc.peer)
			c.echo(t, "ping")
			if code, errs := c.stop(t); code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			starts := 0
			for _, f := range tun.Received(tunneltest.Source)[before:] {
				if f.Message.Type != tunnel.TypeStreamStart {
					continue
				}
				starts++
				if f.Message.ServiceID != tc.service || (f.Message.ConnectionID != 0) != tc.connID {
					t.Errorf("STREAM_START with service %q, connection id %d; want %q, an id %v", f.Message.ServiceID, f.Message.ConnectionID, tc.service, tc.connID)
				}
			}
			if starts != 1 {
				t.Errorf("%d STREAM_START frames, want 1", starts)
			}
		})
	}
}

// TestConnectRegionFromEnvironmentTrimmed: AWSIOT_TUNNEL_REGION is trimmed as
// AWSIOT_TUNNEL_ENDPOINT is (cmd.exe's `set VAR=value && porthole …` keeps
// the space). No -L: the run stops at "nothing to do", nothing is dialled.
func TestConnectRegionFromEnvironmentTrimmed(t *testing.T) {
	echoTunnel(t)
	t.Setenv(regionEnv, noRegion+" ")
	code, _, errs := runCmd(t, nil, "connect", "--token-file", writeToken(t, "AQGAAXtoken"))
	if code != exitUsage || !strings.Contains(errs, "nothing to do") || strings.Contains(errs, regionEnv) {
		t.Errorf("%s=%q: exit %d, stderr %q; want %d and nothing to do", regionEnv, noRegion+" ", code, errs, exitUsage)
	}
}

// TestConnectStdioRefusalSaidOnce: a connection the device refuses ends
// --stdio with exit 2 and the refusal said once (the session's warning said it
// first, then the error again).
func TestConnectStdioRefusalSaidOnce(t *testing.T) {
	echoTunnel(t)
	srv, tun := tunneltest.ConnectedTunnel(t, "SSH", tunneltest.RefusingTarget(t))
	c := startStdio(srv, "--token-file", writeToken(t, tun.SourceToken))
	defer c.in.Close()
	select {
	case code := <-c.done:
		errs := c.errb.String()
		if code != exitRuntime || strings.Count(errs, "answered") != 1 || !strings.Contains(errs, "the device ended the connection before it answered") {
			t.Errorf("--stdio refused: exit %d, stderr:\n%s\nwant %d and the refusal once", code, errs, exitRuntime)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connect did not end after the device refused the connection")
	}
}

// TestTokenMistakesNotQuoted: a token given as an argument, or as
// --token-file's value, is not quoted back in the error (it was, on the
// terminal and in whatever logs stderr); a file name that is not one still
// is.
func TestTokenMistakesNotQuoted(t *testing.T) {
	echoTunnel(t)
	aws := "AQGAAXiXnUEpE-lNeuNTMwNxtMu9ABsAAgABQQAMMzMyMDA2MTE3MTc5AAFUAANDQVQAAQAHYXdzLWxxxxx0=" // the form of one
	client := "0f6b4d6e-2b1c-4c3a-9d8e-7f6a5b4c3d2e"
	missing := filepath.Join(t.TempDir(), "source.token")
	for _, tc := range []struct {
		args   []string
		secret string // not in stderr
		want   string // in stderr
	}{
		{[]string{"connect", "--region", "eu-west-1", "-L", "SSH=2222", aws}, aws, "unexpected argument (not shown: it looks like a token)"},
		{[]string{"connect", "--region", "eu-west-1", "-L", "SSH=2222", client}, client, "unexpected argument (not shown: it looks like a token)"},
		{[]string{"connect", "--region", "eu-west-1", "-L", "SSH=2222", "--token-file", aws}, aws, "--token-file: its value looks like a token"},
		{[]string{"connect", "--region", "eu-west-1", "-L", "SSH=2222", "--token-file", strings.Repeat(aws, 5)}, aws, "--token-file: its value looks like a token"}, // too long a name
		{[]string{"connect", "--region", "eu-west-1", "-L", "SSH=2222", "--token-file", missing}, "", missing},
		{[]string{"connect", "--region", "eu-west-1", "-L", "SSH=2222", "extra"}, "", `unexpected argument "extra"`},
	} {
		code, _, errs := runCmd(t, nil, tc.args...)
		if code != exitUsage || !strings.Contains(errs, tc.want) || tc.secret != "" && strings.Contains(errs, tc.secret[:16]) {
			t.Errorf("%q: exit %d, stderr %q; want %d, %q and not the token", tc.args, code, errs, exitUsage, tc.want)
		}
	}
}

// TestTokenFileNamedLikeAToken: a --token-file that exists is read and its
// own trouble said, whatever its name: one named as a token may be (letters,
// digits and '-', 32 or more, no '.') was said to look like a token, not a
// file's name, when it held JSON, which the agent says so of.
func TestTokenFileNamedLikeAToken(t *testing.T) {
	echoTunnel(t)
	t.Chdir(t.TempDir())
	const name = "porthole-source-token-for-device-0042"
	if err := os.WriteFile(name, []byte(`{"sourceAccessToken": "AQGAAX"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, nil, "connect", "--region", "eu-west-1", "-L", "SSH=2222", "--token-file", name)
	if code != exitUsage || !strings.Contains(errs, "token file "+name+" holds JSON") {
		t.Errorf("--token-file %s (JSON): exit %d, stderr %q; want %d and that it holds JSON", name, code, errs, exitUsage)
	}
}
