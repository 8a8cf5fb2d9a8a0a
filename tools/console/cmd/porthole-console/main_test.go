package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
	"github.com/porthole-iot/porthole/tools/tunneld"
	"golang.org/x/crypto/ssh"
)

// The TLS flags go together, and a certificate or key that cannot be read or
// does not match is a usage error that names the flags, before anything listens.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", missing}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-key", missing}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", missing, "--tls-key", missing}, "--tls-cert/--tls-key: open " + missing},
	} {
		var out, errs bytes.Buffer
		args := append([]string{"--listen", "127.0.0.1:0", "--host-keys", filepath.Join(dir, "hk.json")}, tc.args...)
		if code := run(args, &out, &errs); code != 1 || !strings.Contains(errs.String(), tc.want) {
			t.Errorf("run %q = %d, %q; want 1 and %q", tc.args, code, errs.String(), tc.want)
		}
	}
}

// Plain HTTP beyond loopback is refused before anything listens, unless
// --plain-http says a TLS reverse proxy is in front: the page's address holds
// the run's access token, and its terminals are root shells on devices.
func TestPlainHTTPBeyondLoopbackRefused(t *testing.T) {
	dir := t.TempDir()
	for _, listen := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "[::]:0"} {
		var out, errs bytes.Buffer
		code := run([]string{"--listen", listen, "--host-keys", filepath.Join(dir, "hk.json"),
			"--vendor-dir", standInVendor(t, dir)}, &out, &errs)
		if code != 1 || !strings.Contains(errs.String(), "--listen "+listen+" is not loopback") ||
			!strings.Contains(errs.String(), "--plain-http") || out.Len() != 0 {
			t.Errorf("run --listen %s = %d, stdout %q, stderr %q; want 1, nothing served, and the way out named", listen, code, out.String(), errs.String())
		}
	}
}

// TestHelpOnStdout: -h asks for the help, which is then the console's output,
// on stdout as porthole's (`porthole-console -h | less` showed nothing), with
// exit 0; a mistake's usage stays on stderr.
func TestHelpOnStdout(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var out, errs bytes.Buffer
		if code := run([]string{arg}, &out, &errs); code != 0 || !strings.Contains(out.String(), "-control-plane") || errs.Len() > 0 {
			t.Errorf("run %s = %d, stdout %q, stderr %q; want 0, the help on stdout", arg, code, out.String(), errs.String())
		}
	}
	var out, errs bytes.Buffer
	if code := run([]string{"--no-such-flag"}, &out, &errs); code != 1 || !strings.Contains(errs.String(), "-control-plane") || out.Len() > 0 {
		t.Errorf("run --no-such-flag = %d, stdout %q, stderr %q; want 1, the usage on stderr", code, out.String(), errs.String())
	}
}

// TestFlagErrorsNameTheFlag: an empty --key path and a --listen address that
// does not listen are refused naming the flag. They said "open : no such file
// or directory" and net.Listen's error alone.
func TestFlagErrorsNameTheFlag(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"--key", "x="}, []string{"-key", "empty"}},
		{[]string{"--key", ""}, []string{"-key", "empty"}},
		{[]string{"--listen", busy.Addr().String()}, []string{"--listen", "in use"}},
		{[]string{"--plain-http", "--listen", "nonsense"}, []string{"--listen", "nonsense"}},
	} {
		code, errs := runRefused(t, t.TempDir(), tc.args...)
		ok := code == 1 && !strings.Contains(errs, "open : ")
		for _, w := range tc.want {
			ok = ok && strings.Contains(errs, w)
		}
		if !ok {
			t.Errorf("run %q = %d (-1: started), %q; want 1 naming %q", tc.args, code, errs, tc.want)
		}
	}
}

// A word before the flags is refused: flag stops parsing at it, and the flags
// after it would be ignored.
func TestStrayArgument(t *testing.T) {
	var out, errs bytes.Buffer
	if code := run([]string{"serve", "--listen", "0.0.0.0:1"}, &out, &errs); code != 1 || !strings.Contains(errs.String(), `unexpected argument "serve"`) {
		t.Errorf("run serve --listen … = %d, %q; want 1 and the word named", code, errs.String())
	}
}

// A porthole-tunneld without --tls-cert (its default) serves its control plane
// as http:// and its data plane as ws:// on the same address. The console took
// --control-plane http://… and made the data-plane endpoint from it as a bare
// host:port, which it dials with TLS (wss://): every tunnel the page opened
// stayed "connecting", while open at the service with its device connected. It
// is refused at start (the console has no way to use a ws:// data plane).
func TestPlainControlPlaneRefused(t *testing.T) {
	dir := t.TempDir()
	vendor := standInVendor(t, dir)
	_, tln := startTunneld(t, tunneld.Config{AllowUnsigned: true})

	out, errs := &lockedBuffer{}, &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--listen", "127.0.0.1:0", "--host-keys", filepath.Join(dir, "hk.json"),
			"--vendor-dir", vendor, "--control-plane", "http://" + tln.Addr().String()}, out, errs)
	}()
	var consoleURL string
	for deadline := time.Now().Add(5 * time.Second); ; {
		select {
		case code := <-done:
			if code == 1 && strings.Contains(errs.String(), "--control-plane") {
				return // refused at start, naming the flag
			}
			t.Fatalf("run = %d, %q", code, errs.String())
		default:
		}
		if s := out.String(); strings.Contains(s, "#token=") {
			consoleURL = strings.Fields(strings.SplitN(s, "open ", 2)[1])[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the console neither started nor refused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer func() { syscall.Kill(os.Getpid(), syscall.SIGINT); <-done }()
	base, tok, _ := strings.Cut(consoleURL, "/#token=")
	call := func(method, path, body string) string {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Origin", base)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	t.Logf("open: %s", call("POST", "/api/tunnels", `{"mode":"open","thing":"dev","services":["SSH"],"lifetimeMinutes":5}`))
	time.Sleep(3 * time.Second)
	t.Errorf("the console started with a plain control plane and a TLS data plane made from it; "+
		"the tunnel it opened (open at the service) cannot connect: %s", call("GET", "/api/state", ""))
}

type lockedBuffer = testenv.SyncBuffer

// startTunneld serves a tunneld of cfg on a loopback port of its own until the
// test ends.
func startTunneld(t *testing.T, cfg tunneld.Config) (*tunneld.Server, net.Listener) {
	t.Helper()
	td, err := tunneld.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go td.Serve(tln)
	t.Cleanup(func() { td.Close() })
	return td, tln
}

// With --tls-cert for the console's DNS name (what a CA issues) and no
// --public-url, the console prints https://127.0.0.1:PORT/#token=…, which the
// certificate does not cover, and refuses the name the certificate is for: the
// refusal names --public-url, the flag that makes it work (it said only "open
// the console by the address it printed").
func TestTLSByNameExplained(t *testing.T) {
	dir := t.TempDir()
	vendor := standInVendor(t, dir)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "console.example.com"},
		DNSNames: []string{"console.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)

	out, errs := &lockedBuffer{}, &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--listen", "127.0.0.1:0", "--host-keys", filepath.Join(dir, "hk.json"),
			"--vendor-dir", vendor, "--tls-cert", certFile, "--tls-key", keyFile}, out, errs)
	}()
	defer func() { syscall.Kill(os.Getpid(), syscall.SIGINT); <-done }()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "#token="); {
		if time.Now().After(deadline) {
			t.Fatalf("not started: %q", errs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	printed := strings.Fields(strings.SplitN(out.String(), "open ", 2)[1])[0]
	u, _ := url.Parse(printed)
	if err := cert.VerifyHostname(u.Hostname()); err != nil {
		t.Logf("the printed URL %s: %v", printed, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "console.example.com"}}}
	req, _ := http.NewRequest("GET", "https://"+u.Host+"/", nil)
	req.Host = "console.example.com:" + u.Port()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && !strings.Contains(string(b), "--public-url") {
		t.Errorf("opened by its certificate's name: %s %q; the printed URL %s is not one the certificate covers, "+
			"and the answer does not say --public-url", resp.Status, b, printed)
	}
}

// standInVendor writes stand-ins for the vendored xterm.js files in dir/vendor
// (--vendor-dir), for tests that never draw a terminal.
func standInVendor(t *testing.T, dir string) string {
	vendor := filepath.Join(dir, "vendor")
	if err := os.MkdirAll(vendor, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"xterm.js", "xterm.css", "addon-fit.js"} {
		if err := os.WriteFile(filepath.Join(vendor, f), []byte("//"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return vendor
}

// --key is checked before anything listens, as --tls-cert is: an operator's
// usual key is passphrase-protected, which --key cannot take, and a key that
// does not read made every login fail in the page after a start that looked
// fine. The refusal names --key and never quotes the file.
func TestKeyFlagCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	vendor := standInVendor(t, dir)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	plain, _ := ssh.MarshalPrivateKey(priv, "operator")
	encrypted, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "operator", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	file := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, b, 0o600)
		return path
	}
	plainFile, encFile := file("id_plain", pem.EncodeToMemory(plain)), file("id_ed25519", pem.EncodeToMemory(encrypted))
	garbage := file("id_garbage", []byte("SECRET-LOOKING-TEXT\n"))
	for _, tc := range []struct {
		key  string
		want string // in stderr; "" means the console starts
	}{
		{"op=" + plainFile, ""},
		{encFile, "passphrase"},
		{filepath.Join(dir, "missing"), "no such file"},
		{garbage, "private key"},
	} {
		out, errs := &lockedBuffer{}, &lockedBuffer{}
		done := make(chan int, 1)
		go func() {
			done <- run([]string{"--listen", "127.0.0.1:0", "--host-keys", filepath.Join(dir, "hk.json"),
				"--vendor-dir", vendor, "--key", tc.key}, out, errs)
		}()
		code, started := -1, false
		for deadline := time.Now().Add(5 * time.Second); code == -1 && !started; time.Sleep(20 * time.Millisecond) {
			select {
			case code = <-done:
			default:
				started = strings.Contains(out.String(), "#token=")
			}
			if time.Now().After(deadline) {
				t.Fatalf("--key %s: the console neither started nor refused", tc.key)
			}
		}
		if started {
			syscall.Kill(os.Getpid(), syscall.SIGINT)
			code = <-done
		}
		switch {
		case tc.want == "" && !started:
			t.Errorf("--key %s: run = %d, %q; want the console started", tc.key, code, errs.String())
		case tc.want != "" && (code != 1 || !strings.Contains(errs.String(), "--key") || !strings.Contains(errs.String(), tc.want)):
			t.Errorf("--key %s: run = %d (started %v), %q; want 1 naming --key and %q", tc.key, code, started, errs.String(), tc.want)
		case strings.Contains(errs.String(), "SECRET-LOOKING") || strings.Contains(errs.String(), "BEGIN"):
			t.Errorf("--key %s: stderr quotes the file: %q", tc.key, errs.String())
		}
	}
}

// A console whose log reader goes away (porthole-console 2>&1 | logger, or
// | tee ended by Ctrl-C) keeps serving: Go kills a program whose write to
// fd 2 fails with EPIPE unless it handles SIGPIPE, and the next log line
// ended the console and every terminal in it.
func TestConsoleSurvivesLogReaderGone(t *testing.T) {
	dir := t.TempDir()
	line, alive := testenv.StartWithoutLogReader(t, "github.com/porthole-iot/porthole/tools/console/cmd/porthole-console",
		"--listen", "127.0.0.1:0", "--host-keys", filepath.Join(dir, "hk.json"), "--vendor-dir", standInVendor(t, dir), "--debug")
	url, ok := strings.CutPrefix(line, "porthole console: open ")
	if !ok {
		t.Fatalf("first line %q, want the console's address", line)
	}
	testenv.GetWhileAlive(t, url, alive) // each request is logged
}

// Without --listen, each console serves on a port of its own, free and another
// each run: a browser takes every server that ever listened on one port of
// 127.0.0.1 for one origin, so a fixed default (8088) let a page a device had
// served there before (the lab's --http-port, porthole connect) leave a
// service worker or cached script that would read the next console's token.
func TestDefaultListenIsAFreshPort(t *testing.T) {
	dir := t.TempDir()
	var ports []string
	for i := range 2 {
		line, _ := testenv.StartWithoutLogReader(t, "github.com/porthole-iot/porthole/tools/console/cmd/porthole-console",
			"--host-keys", filepath.Join(dir, fmt.Sprintf("hk%d.json", i)), "--vendor-dir", standInVendor(t, dir))
		url, ok := strings.CutPrefix(line, "porthole console: open http://127.0.0.1:")
		if !ok {
			t.Fatalf("console %d: first line %q, want its address on 127.0.0.1", i+1, line)
		}
		port, _, _ := strings.Cut(url, "/")
		ports = append(ports, port)
	}
	if ports[0] == ports[1] {
		t.Errorf("two consoles started without --listen both on port %s", ports[0])
	}
}

// consoleWithTunnel starts a TLS tunneld in this process and porthole-console
// as a process of its own with --control-plane pointing at it, opens one tunnel
// through the console's API, and returns the console, the tunnel's id, the
// console's base URL, tunneld and what the console writes to stderr (also
// logged). The console is killed at the test's end.
func consoleWithTunnel(t *testing.T) (*exec.Cmd, string, string, *tunneld.Server, *lockedBuffer) {
	t.Helper()
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	td, tln := startTunneld(t, tunneld.Config{AllowUnsigned: true,
		TLS: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}})

	bin := filepath.Join(dir, "porthole-console")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--host-keys", filepath.Join(dir, "hk.json"),
		"--vendor-dir", standInVendor(t, dir), "--control-plane", "https://"+tln.Addr().String(),
		"--endpoint", tln.Addr().String(), "--ca-file", caFile)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errs := &lockedBuffer{}
	cmd.Stderr = io.MultiWriter(tlogWriter{t}, errs)
	// Started with SIGHUP caught here, so that the console gets it at its
	// default even when go test runs with it ignored (nohup): exec resets a
	// caught signal, not an ignored one.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	err = cmd.Start()
	signal.Stop(hup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	consoleURL := strings.Fields(strings.SplitN(line, "open ", 2)[1])[0]
	base, tok, _ := strings.Cut(consoleURL, "/#token=")
	req, _ := http.NewRequest("POST", base+"/api/tunnels",
		strings.NewReader(`{"mode":"open","thing":"dev","services":["SSH"],"lifetimeMinutes":60}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Origin", base)
	req.Header.Set("Content-Type", "application/json")
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
		t.Fatalf("no tunnel opened: %s", resp.Status)
	}
	return cmd, opened.TunnelID, base, td, errs
}

// stopConsole sends sig to the console and checks that it exits 0 having
// closed the tunnel id it opened.
func stopConsole(t *testing.T, cmd *exec.Cmd, sig syscall.Signal, td *tunneld.Server, id string) {
	t.Helper()
	cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("console still running 20 s after %v", sig)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("after %v: %v, want exit 0", sig, cmd.ProcessState)
	}
	out, err := td.DescribeTunnel(context.Background(), &tunneld.DescribeTunnelInput{TunnelID: id})
	if err != nil {
		t.Fatal(err)
	}
	if out.Tunnel.Status != tunneld.StatusClosed {
		t.Errorf("after %v the console ended (%v) and left the tunnel it opened %s; "+
			"the tunnels it opened are to be closed when it stops", sig, cmd.ProcessState, out.Tunnel.Status)
	}
}

// The terminal the console runs in is closed (SIGHUP, on which porthole
// connect and the lab stop too): Go's default for SIGHUP killed the console
// outright, and the tunnels it opened stayed open, their devices connected,
// for their whole lifetime.
func TestConsoleHangupClosesItsTunnels(t *testing.T) {
	cmd, id, _, td, _ := consoleWithTunnel(t)
	stopConsole(t, cmd, syscall.SIGHUP, td, id)
}

// One request in flight whose body has not all come (any local client: no
// access token is needed, as net/http reads the rest of a body after the
// handler refused it) made http.Server.Shutdown use the whole 5 s of the
// console's stop; closing the tunnels then got the expired context,
// CloseTunnel failed at once, and the tunnels the console opened stayed open.
func TestConsoleStopWithStalledRequestClosesItsTunnels(t *testing.T) {
	cmd, id, base, td, _ := consoleWithTunnel(t)
	defer stallRequest(t, base).Close()
	stopConsole(t, cmd, syscall.SIGTERM, td, id)
}

// A stop takes seconds (here, a stalled request's 5 s), and a second Ctrl-C
// meanwhile is caught so that the tunnels still get closed: the console said
// neither, and seemed to hang and ignore the operator.
func TestConsoleSaysItIsStopping(t *testing.T) {
	cmd, id, base, td, errs := consoleWithTunnel(t)
	defer stallRequest(t, base).Close()
	cmd.Process.Signal(syscall.SIGINT)
	waitFor(t, errs, "msg=\"stopping: ")
	stopConsole(t, cmd, syscall.SIGINT, td, id)
	if !strings.Contains(errs.String(), "msg=\"still stopping: ") {
		t.Errorf("a second Ctrl-C during the stop was not answered; stderr:\n%s", errs)
	}
}

// waitFor waits up to 10 s for b to hold s.
func waitFor(t *testing.T, b *lockedBuffer, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(b.String(), s); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in 10 s; got:\n%s", s, b)
		}
	}
}

// stallRequest sends the console at base a request whose body does not all
// come, and returns its connection once the console holds it: until it is
// closed, the console's stop waits its 5 s for the request.
func stallRequest(t *testing.T, base string) net.Conn {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("POST /api/tunnels HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"))
	// The request is in flight once the console has answered nothing to it
	// yet; a read that times out says so without a sleep's guess.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		c.Close()
		t.Fatalf("the stalled request was answered: %d, %v", n, err)
	}
	return c
}

// tlogWriter sends a child's stderr to t.Log.
type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// launch runs the console with args (and a host key store and stand-in
// vendor files in dir) in a goroutine: its stdout, its stderr, and its exit
// code once it ends.
func launch(t *testing.T, dir string, args []string) (out, errs *lockedBuffer, done chan int) {
	t.Helper()
	out, errs, done = &lockedBuffer{}, &lockedBuffer{}, make(chan int, 1)
	vendor := standInVendor(t, dir)
	go func() {
		done <- run(append([]string{"--listen", "127.0.0.1:0", "--host-keys", filepath.Join(dir, "hk.json"),
			"--vendor-dir", vendor}, args...), out, errs)
	}()
	return out, errs, done
}

// startConsole runs the console as launch does, and returns its base URL, its
// access token and the function that stops it as Ctrl-C does (SIGINT, which
// reaches every console running in this process: one at a time).
func startConsole(t *testing.T, dir string, args ...string) (base, token string, stop func()) {
	t.Helper()
	out, errs, done := launch(t, dir, args)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "#token="); time.Sleep(20 * time.Millisecond) {
		select {
		case code := <-done:
			t.Fatalf("run %q = %d, %q; want the console started", args, code, errs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %q: not started: %q", args, errs.String())
		}
	}
	u := strings.Fields(strings.SplitN(out.String(), "open ", 2)[1])[0]
	base, token, _ = strings.Cut(u, "/#token=")
	return base, token, func() { syscall.Kill(os.Getpid(), syscall.SIGINT); <-done }
}

// runRefused runs the console as launch does and returns its exit code and
// stderr when it refuses to start; when it starts instead, it stops it and
// returns -1.
func runRefused(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	out, errs, done := launch(t, dir, args)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case code := <-done:
			if out.String() != "" {
				t.Errorf("run %q printed %q on stdout", args, out.String())
			}
			return code, errs.String()
		default:
		}
		if strings.Contains(out.String(), "#token=") || time.Now().After(deadline) {
			syscall.Kill(os.Getpid(), syscall.SIGINT)
			<-done
			return -1, errs.String()
		}
	}
}

// getState is the console's GET /api/state.
func getState(t *testing.T, base, token string) (state struct{ Endpoint, Region string }) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/state", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&state); err != nil {
		t.Fatal(err)
	}
	return state
}

// AWS's control plane has its region in its host, and answers only requests
// signed for that region: without --region the console takes it from there
// (it signed for us-east-1, the flag's default, and dialled that region's data
// plane), and a --region that says otherwise is refused at start.
func TestControlPlaneRegion(t *testing.T) {
	const euWest1 = "https://api.tunneling.iot.eu-west-1.amazonaws.com"
	for _, tc := range []struct {
		args []string
		want string // the region the console uses
	}{
		{[]string{"--control-plane", euWest1}, "eu-west-1"},
		{[]string{"--control-plane", euWest1, "--region", "eu-west-1"}, "eu-west-1"},
		{[]string{"--control-plane", "https://api.tunneling.iot.cn-north-1.amazonaws.com.cn"}, "cn-north-1"},
		{[]string{"--control-plane", "https://tunneld.example.com:8443", "--region", "eu-west-2"}, "eu-west-2"},
		{[]string{"--control-plane", "https://tunneld.example.com:8443"}, "us-east-1"},
	} {
		base, token, stop := startConsole(t, t.TempDir(), tc.args...)
		st := getState(t, base, token)
		stop()
		if st.Region != tc.want {
			t.Errorf("run %q: region %q, want %q", tc.args, st.Region, tc.want)
		}
	}
	code, errs := runRefused(t, t.TempDir(), "--control-plane", euWest1, "--region", "us-east-1")
	if code != 1 || !strings.Contains(errs, "--region us-east-1, but --control-plane "+euWest1) {
		t.Errorf("run --control-plane %s --region us-east-1 = %d, %q; want 1, the regions named", euWest1, code, errs)
	}
}

// --ca-file is checked at start, as porthole connect checks its own: a file
// that is missing or holds no certificate started fine and failed every tunnel
// the page opened. A directory of certificates is taken, as connect takes it.
func TestCAFileCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	srv.Close()
	caDir, emptyDir := filepath.Join(dir, "certs"), filepath.Join(dir, "empty")
	os.Mkdir(caDir, 0o700)
	os.Mkdir(emptyDir, 0o700)
	caFile, garbage := filepath.Join(caDir, "ca.pem"), filepath.Join(dir, "garbage.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	os.WriteFile(garbage, []byte("not a certificate\n"), 0o600)
	for _, tc := range []struct {
		ca, want string // want in stderr; "" means the console starts
	}{
		{caFile, ""},
		{caDir, ""},
		{filepath.Join(dir, "missing.pem"), "no such file"},
		{emptyDir, "no PEM certificate"},
		{garbage, "no PEM certificate"},
	} {
		code, errs := runRefused(t, t.TempDir(), "--ca-file", tc.ca)
		switch {
		case tc.want == "" && code != -1:
			t.Errorf("--ca-file %s: run = %d, %q; want the console started", tc.ca, code, errs)
		case tc.want != "" && (code != 1 || !strings.Contains(errs, "--ca-file") || !strings.Contains(errs, tc.want)):
			t.Errorf("--ca-file %s: run = %d (-1: started), %q; want 1 naming --ca-file and %q", tc.ca, code, errs, tc.want)
		}
	}
}
