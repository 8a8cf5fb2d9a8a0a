package sshd

// Tests with the real OpenSSH client programs (Debian package
// openssh-client: ssh, sftp, scp), driven non-interactively. Under CI=true a
// missing program fails the test; otherwise it is skipped with a message.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// needProgram returns the path of a client program (OpenSSH's, curl).
func needProgram(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (tools/deps.sh test installs its Debian package): %v", name, err)
		}
		t.Skipf("%s not found; install it (tools/deps.sh test names the packages) to run the real-client tests", name)
	}
	return p
}

// openSSHEnv is a server plus the files OpenSSH's clients need: a private
// key whose public half root may log in with, and a known_hosts file with
// the server's real host key (host key checking stays strict).
type openSSHEnv struct {
	*testEnv
	keyFile    string
	knownHosts string
	port       string
}

func newOpenSSHEnv(t *testing.T, configure func(e *testEnv, s *Server)) *openSSHEnv {
	t.Helper()
	e := newEnv(t, configure)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKey(priv, "openssh test")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(e.dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, _ := gossh.NewSignerFromKey(priv)
	e.writeAuthorizedKeys("root", authorizedLine("", signer.PublicKey()))
	host, port, _ := net.SplitHostPort(e.addr)
	keys, _ := e.srv.PublicKeys()
	kh := filepath.Join(e.dir, "known_hosts")
	writeFile(t, kh, fmt.Sprintf("[%s]:%s %s", host, port, gossh.MarshalAuthorizedKey(keys[0])))
	return &openSSHEnv{testEnv: e, keyFile: keyFile, knownHosts: kh, port: port}
}

func (o *openSSHEnv) opts() []string {
	return []string{
		"-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + o.knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "LogLevel=ERROR",
		"-i", o.keyFile,
	}
}

// run runs an OpenSSH program and returns stdout, stderr and exit code.
func (o *openSSHEnv) run(t *testing.T, stdin io.Reader, prog string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "HOME="+o.dir)
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %q: %v", prog, args, err)
	}
	return out.String(), errb.String(), code
}

func (o *openSSHEnv) ssh(t *testing.T, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	ssh := needProgram(t, "ssh")
	all := append(o.opts(), "-p", o.port)
	return o.run(t, stdin, ssh, append(all, args...)...)
}

func randomFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	da, err1 := os.ReadFile(a)
	db, err2 := os.ReadFile(b)
	if err1 != nil || err2 != nil {
		t.Fatalf("reading %s, %s: %v, %v", a, b, err1, err2)
	}
	if !bytes.Equal(da, db) {
		t.Errorf("%s (%d bytes) and %s (%d bytes) differ", a, len(da), b, len(db))
	}
}

func TestOpenSSHExec(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	out, errOut, code := o.ssh(t, nil, "root@127.0.0.1", "echo hi; echo oops >&2; exit 3")
	if out != "hi\n" || errOut != "oops\n" || code != 3 {
		t.Errorf("ssh exec = %q, %q, exit %d; want hi, oops, exit 3", out, errOut, code)
	}
	// ssh host cmd < file: stdin reaches EOF, the data arrives byte for byte.
	src := filepath.Join(o.dir, "upload.bin")
	randomFile(t, src, 1<<20+17)
	f, _ := os.Open(src)
	defer f.Close()
	dst := filepath.Join(o.home("root"), "upload.bin")
	if _, errOut, code := o.ssh(t, f, "root@127.0.0.1", "cat > upload.bin"); code != 0 {
		t.Fatalf("ssh cat > file: exit %d: %s", code, errOut)
	}
	sameFile(t, src, dst)
	back, _, code := o.ssh(t, nil, "root@127.0.0.1", "cat upload.bin")
	want, _ := os.ReadFile(src)
	if code != 0 || back != string(want) {
		t.Errorf("ssh cat file: exit %d, %d bytes, want %d", code, len(back), len(want))
	}
	// A refused user: exit 255 from ssh.
	if _, _, code := o.ssh(t, nil, "nosuch@127.0.0.1", "true"); code != 255 {
		t.Errorf("ssh as unknown user: exit %d, want 255", code)
	}
}

// TestOpenSSHAgentForwardingFailureKeepsSession: ssh -A runs its command
// on a device whose temporary directory cannot take the agent socket, as
// against OpenSSH's sshd (ssh sends auth-agent-req without want-reply); it
// said "exec request failed on channel 0" and exited 255.
func TestOpenSSHAgentForwardingFailureKeepsSession(t *testing.T) {
	agentBin := needProgram(t, "ssh-agent")
	o := newOpenSSHEnv(t, func(_ *testEnv, s *Server) { s.AgentForwarding = true })
	sock := filepath.Join(o.dir, "agent.sock")
	ag := exec.Command(agentBin, "-D", "-a", sock)
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ag.Process.Kill()
		ag.Wait()
	}()
	waitFor(t, "ssh-agent's socket", func() bool { _, err := os.Stat(sock); return err == nil })
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "no-such-dir")) // the server's: this process
	// o.opts but IdentityAgent: ssh sends no auth-agent-req without an agent.
	args := slices.Clone(o.opts())
	args[slices.Index(args, "IdentityAgent=none")] = "IdentityAgent=" + sock
	args = append(args, "-p", o.port, "-o", "ForwardAgent=yes", "root@127.0.0.1", "echo hello")
	out, errOut, code := o.run(t, nil, needProgram(t, "ssh"), args...)
	if code != 0 || out != "hello\n" {
		t.Errorf("ssh -A with the device's temporary directory unusable: %q, %q, exit %d; want hello and exit 0, as from OpenSSH's sshd",
			out, errOut, code)
	}
}

func TestOpenSSHForcedTTY(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	out, errOut, code := o.ssh(t, nil, "-tt", "root@127.0.0.1", "tty; stty size; exit 2")
	if code != 2 || !strings.Contains(out, "/dev/pts/") {
		t.Errorf("ssh -tt = %q, %q, exit %d; want a pts and exit 2", out, errOut, code)
	}
	// An interactive login shell fed from stdin.
	out, _, code = o.ssh(t, strings.NewReader("echo shell-$((6*7))\nexit 6\n"), "-tt", "root@127.0.0.1")
	if code != 6 || !strings.Contains(out, "shell-42") {
		t.Errorf("ssh -tt shell = %q, exit %d; want shell-42 and exit 6", out, code)
	}
}

func TestOpenSSHSFTPBatch(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	sftp := needProgram(t, "sftp")
	src := filepath.Join(o.dir, "local.bin")
	randomFile(t, src, 700_001)
	got := filepath.Join(o.dir, "fetched.bin")
	batch := filepath.Join(o.dir, "batch")
	writeFile(t, batch, fmt.Sprintf("mkdir dir\nput %s dir/remote.bin\nls -l dir\nget dir/remote.bin %s\nrm dir/remote.bin\nrmdir dir\n", src, got))
	args := append(o.opts(), "-P", o.port, "-b", batch, "root@127.0.0.1")
	out, errOut, code := o.run(t, nil, sftp, args...)
	if code != 0 {
		t.Fatalf("sftp -b: exit %d\n%s\n%s", code, out, errOut)
	}
	sameFile(t, src, got)
	if _, err := os.Stat(filepath.Join(o.home("root"), "dir")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("remote dir not removed: %v", err)
	}
	// A failing batch command makes sftp exit 1.
	writeFile(t, batch, "get /nonexistent/file "+got+"\n")
	if _, _, code := o.run(t, nil, sftp, args...); code != 1 {
		t.Errorf("sftp -b with a failing command: exit %d, want 1", code)
	}
}

func TestOpenSSHSCP(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	scp := needProgram(t, "scp")
	base := append(o.opts(), "-P", o.port)

	// Default scp (SFTP protocol in OpenSSH 9).
	src := filepath.Join(o.dir, "a.bin")
	randomFile(t, src, 300_003)
	if out, errOut, code := o.run(t, nil, scp, append(base, src, "root@127.0.0.1:a-sftp.bin")...); code != 0 {
		t.Fatalf("scp upload: exit %d %s %s", code, out, errOut)
	}
	sameFile(t, src, filepath.Join(o.home("root"), "a-sftp.bin"))
	back := filepath.Join(o.dir, "a-back.bin")
	if _, errOut, code := o.run(t, nil, scp, append(base, "root@127.0.0.1:a-sftp.bin", back)...); code != 0 {
		t.Fatalf("scp download: exit %d %s", code, errOut)
	}
	sameFile(t, src, back)

	// Legacy scp -O -r -p: a tree with modes and times, both ways.
	tree := filepath.Join(o.dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sub", "deeper"), 0o755)
	os.Chmod(filepath.Join(tree, "sub"), 0o750)
	files := map[string]os.FileMode{"x.bin": 0o644, "sub/run.sh": 0o755, "sub/deeper/secret": 0o600, "empty": 0o640}
	mt := time.Date(2022, 2, 3, 4, 5, 6, 0, time.UTC)
	for name, mode := range files {
		p := filepath.Join(tree, name)
		size := 10_000
		if name == "empty" {
			size = 0
		}
		randomFile(t, p, size)
		os.Chmod(p, mode)
		os.Chtimes(p, mt, mt)
	}
	if out, errOut, code := o.run(t, nil, scp, append(base, "-O", "-r", "-p", tree, "root@127.0.0.1:uploaded")...); code != 0 {
		t.Fatalf("scp -O -r -p upload: exit %d %s %s", code, out, errOut)
	}
	down := filepath.Join(o.dir, "down")
	if out, errOut, code := o.run(t, nil, scp, append(base, "-O", "-r", "-p", "root@127.0.0.1:uploaded", down)...); code != 0 {
		t.Fatalf("scp -O -r -p download: exit %d %s %s", code, out, errOut)
	}
	for _, root := range []string{filepath.Join(o.home("root"), "uploaded"), down} {
		for name, mode := range files {
			p := filepath.Join(root, name)
			sameFile(t, filepath.Join(tree, name), p)
			fi, err := os.Stat(p)
			if err != nil {
				continue
			}
			if fi.Mode().Perm() != mode {
				t.Errorf("%s mode = %v, want %v", p, fi.Mode().Perm(), mode)
			}
			if !fi.ModTime().Equal(mt) {
				t.Errorf("%s mtime = %v, want %v", p, fi.ModTime(), mt)
			}
		}
		if fi, err := os.Stat(filepath.Join(root, "sub")); err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("%s/sub: %v, want mode 0750", root, err)
		}
	}
	// scp -O of a single file to a new name, and of a missing file.
	if _, errOut, code := o.run(t, nil, scp, append(base, "-O", src, "root@127.0.0.1:single.bin")...); code != 0 {
		t.Fatalf("scp -O file: exit %d %s", code, errOut)
	}
	sameFile(t, src, filepath.Join(o.home("root"), "single.bin"))
	if _, errOut, code := o.run(t, nil, scp, append(base, "-O", "root@127.0.0.1:missing", o.dir)...); code != 1 || !strings.Contains(errOut, "missing") {
		t.Errorf("scp -O of a missing file: exit %d, %q; want 1 and a message", code, errOut)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

func TestOpenSSHLocalForward(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	ssh := needProgram(t, "ssh")
	echo := echoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	allowed, denied := freePort(t), freePort(t)
	c, _ := o.forward(t, ssh, allowed, nil,
		"-L", "127.0.0.1:"+allowed+":127.0.0.1:"+echoPort,
		"-L", "127.0.0.1:"+denied+":192.0.2.1:80")
	echoThrough(t, c)
	// The policy refuses the other destination: ssh accepts locally, the
	// channel open fails, and the connection is closed without data.
	d, err := net.Dial("tcp", "127.0.0.1:"+denied)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := bufio.NewReader(d).Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("denied forward: read %d, %v; want EOF or reset", n, err)
	}
	var sawDenied bool
	waitFor(t, "denied forward event", func() bool {
		for _, ev := range o.eventsOf(EventForward) {
			sawDenied = sawDenied || (!ev.Allowed && ev.Dest == "192.0.2.1:80")
		}
		return sawDenied
	})
	_ = strconv.Itoa
}

// TestOpenSSHRemoteForward: "ssh -R port:host:port", with no bind address,
// asks for "localhost", which the server serves on 127.0.0.1 and on ::1 at the
// same port. (Tests listen on 127.0.0.1 only: the ::1 listen is recorded and
// refused here, as on a host without IPv6; TestRemoteForwardLocalhost serves a
// stand-in for it.)
func TestOpenSSHRemoteForward(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	o := newOpenSSHEnv(t, func(_ *testEnv, s *Server) {
		s.PermitRemoteForward = func(_, bind string, _ uint32) bool { return bind == "localhost" }
		s.listen = func(network, addr string) (net.Listener, error) {
			mu.Lock()
			asked = append(asked, addr)
			mu.Unlock()
			if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
				return nil, syscall.EADDRNOTAVAIL
			}
			return net.Listen(network, addr)
		}
	})
	echo := echoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	port := freePort(t)
	c, _ := o.forward(t, needProgram(t, "ssh"), port, nil, "-R", port+":127.0.0.1:"+echoPort)
	echoThrough(t, c)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"127.0.0.1:" + port, "[::1]:" + port}; !slices.Equal(asked, want) {
		t.Errorf("ssh -R %s: listened on %q, want %q", port, asked, want)
	}
}

// TestOpenSSHCipherChoice: which cipher OpenSSH's client ends up with. By
// default, on amd64 with AES-NI the server leaves ChaCha20 out so that the
// client picks AES in hardware; elsewhere the client gets its first choice,
// chacha20-poly1305. A configured list is all that is offered.
func TestOpenSSHCipherChoice(t *testing.T) {
	negotiated := func(o *openSSHEnv, extra ...string) (string, string) {
		t.Helper()
		args := append([]string{"-o", "LogLevel=DEBUG1"}, o.opts()...)
		args = append(append(args, extra...), "-p", o.port, "root@127.0.0.1", "true")
		_, errOut, code := o.run(t, nil, needProgram(t, "ssh"), args...)
		for _, l := range strings.Split(errOut, "\n") {
			if _, rest, ok := strings.Cut(l, "kex: client->server cipher: "); ok && code == 0 {
				return strings.Fields(rest)[0], errOut
			}
		}
		return "", errOut
	}

	def := newOpenSSHEnv(t, nil)
	got, log := negotiated(def)
	switch {
	case got == "":
		t.Fatalf("no cipher negotiated:\n%s", log)
	case aesHardware() && strings.HasPrefix(got, "chacha20"):
		t.Errorf("AES hardware, default list: client got %s, want AES", got)
	case !aesHardware() && got != "chacha20-poly1305@openssh.com":
		t.Errorf("no AES hardware, default list: client got %s, want chacha20-poly1305@openssh.com", got)
	}
	if aesHardware() {
		// The cost of leaving ChaCha20 out: a client that allows nothing else.
		if got, _ := negotiated(def, "-c", "chacha20-poly1305@openssh.com"); got != "" {
			t.Errorf("chacha20-only client got %s from the AES default list", got)
		}
	}
	if got, _ := negotiated(def, "-c", "aes256-gcm@openssh.com"); got != "aes256-gcm@openssh.com" {
		t.Errorf("client asking for aes256-gcm got %q", got)
	}

	chacha := newOpenSSHEnv(t, func(_ *testEnv, s *Server) { s.Ciphers = []string{gossh.CipherChaCha20Poly1305} })
	if got, log := negotiated(chacha); got != gossh.CipherChaCha20Poly1305 {
		t.Errorf("configured chacha20 only: client got %q\n%s", got, log)
	}
	if got, _ := negotiated(chacha, "-c", "aes128-ctr"); got != "" {
		t.Errorf("configured chacha20 only: aes128-ctr client got %s", got)
	}
}

func TestCheckCiphers(t *testing.T) {
	for _, tc := range []struct {
		list []string
		ok   bool
	}{
		{[]string{gossh.CipherAES128GCM}, true},
		{[]string{gossh.CipherChaCha20Poly1305, gossh.CipherAES256CTR}, true},
		{[]string{}, false},
		{[]string{"aes128-cbc"}, false}, // insecure: not in SupportedAlgorithms
		{[]string{"3des-cbc"}, false},
		{[]string{gossh.CipherAES128GCM, "rot13"}, false},
	} {
		if err := CheckCiphers(tc.list); (err == nil) != tc.ok {
			t.Errorf("CheckCiphers(%q) = %v, want ok=%v", tc.list, err, tc.ok)
		}
	}
	s := &Server{DataDir: t.TempDir(), Ciphers: []string{"rot13"}}
	if err := s.init(); err == nil || !strings.Contains(err.Error(), "rot13") {
		t.Errorf("server with a bad cipher: init = %v, want an error naming it", err)
	}
}

// dialAlgorithms logs in as root with a Go client whose algorithms mod
// restricts, taking any host key, and returns the handshake's error.
func dialAlgorithms(e *testEnv, mod func(c *gossh.ClientConfig)) error {
	c := e.clientConfig("root", gossh.PublicKeys(e.key))
	c.HostKeyCallback = gossh.InsecureIgnoreHostKey()
	mod(c)
	cl, err := gossh.Dial("tcp", e.addr, c)
	if err == nil {
		cl.Close()
	}
	return err
}

// TestKexAndMACsWithoutSHA1Insecure: the server offers x/crypto's default key
// exchanges and MACs without the two x/crypto lists as insecure,
// diffie-hellman-group14-sha1 and hmac-sha1-96, which OpenSSH 9.2's sshd does
// not offer either (ssh-audit flagged both). The rest stays, hmac-sha1 too, as
// in OpenSSH 9.2.
func TestKexAndMACsWithoutSHA1Insecure(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		kex, mac string
		ok       bool
	}{
		{kex: gossh.InsecureKeyExchangeDH14SHA1},
		{mac: gossh.InsecureHMACSHA196},
		{kex: gossh.KeyExchangeDH14SHA256, ok: true},
		{kex: gossh.KeyExchangeECDHP256, ok: true},
		{kex: "curve25519-sha256@libssh.org", ok: true},
		{kex: gossh.KeyExchangeMLKEM768X25519, ok: true},
		{mac: gossh.HMACSHA1, ok: true},
		{mac: gossh.HMACSHA256, ok: true},
		{mac: gossh.HMACSHA512ETM, ok: true},
	} {
		err := dialAlgorithms(e, func(c *gossh.ClientConfig) {
			if tc.kex != "" {
				c.KeyExchanges = []string{tc.kex}
			}
			if tc.mac != "" {
				c.Ciphers = []string{gossh.CipherAES128CTR} // a MAC of its own
				c.MACs = []string{tc.mac}
			}
		})
		if tc.ok && err != nil {
			t.Errorf("client offering only %s%s: %v", tc.kex, tc.mac, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "no common algorithm")) {
			t.Errorf("client offering only %s%s: %v, want no common algorithm", tc.kex, tc.mac, err)
		}
		// The client knows before the server has logged: the first
		// refusal's line is waited for, so that it is the one logged (under
		// qemu-user the next refusal's came first).
		for deadline := time.Now().Add(10 * time.Second); tc.kex == gossh.InsecureKeyExchangeDH14SHA1 && len(e.logs.logged("no algorithm in common")) == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The operator of such a client learns why from the log at info (as
	// OpenSSH's "Unable to negotiate"): the first refusal; the next within
	// refusalLogInterval is held (scanners).
	if l := e.logs.logged("level=INFO", `msg="no algorithm in common with the client"`, `what="key exchange"`, "client_offered="+gossh.InsecureKeyExchangeDH14SHA1); len(l) != 1 {
		t.Errorf("log lines about the client offering only %s: %q, want one at info", gossh.InsecureKeyExchangeDH14SHA1, l)
	}
	if l := e.logs.logged("no algorithm in common"); len(l) != 1 {
		t.Errorf("log lines about algorithms: %q, want one within %v", l, refusalLogInterval)
	}
}

// TestOpenSSHDefaultKexAndMACs: OpenSSH's client connects with its defaults,
// and one that asks for diffie-hellman-group14-sha1 alone does not (its
// "no matching key exchange method" is below LogLevel=ERROR; the server logs
// "no algorithm in common with the client" at info).
func TestOpenSSHDefaultKexAndMACs(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	if out, errOut, code := o.ssh(t, nil, "root@127.0.0.1", "echo ok"); code != 0 || out != "ok\n" {
		t.Errorf("ssh with its defaults: exit %d, %q %q", code, out, errOut)
	}
	if _, errOut, code := o.ssh(t, nil, "-o", "KexAlgorithms=diffie-hellman-group14-sha1", "root@127.0.0.1", "true"); code != 255 {
		t.Errorf("ssh -o KexAlgorithms=diffie-hellman-group14-sha1: exit %d, %q; want 255 (no key exchange in common)", code, errOut)
	}
}

// processesWith returns the pids of processes whose command line contains
// marker.
func processesWith(marker string) []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(marker)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sshIntoHead runs "ssh args | head -c 10", the two joined by a pipe, and
// returns what head printed, ssh's stderr and exit code, and whether both
// ended within timeout (if not, both are killed).
func (o *openSSHEnv) sshIntoHead(t *testing.T, stdin io.Reader, timeout time.Duration, args ...string) (out, errOut string, code int, ended bool) {
	t.Helper()
	ssh := exec.Command(needProgram(t, "ssh"), append(append(o.opts(), "-p", o.port), args...)...)
	ssh.Env = append(os.Environ(), "HOME="+o.dir)
	head := exec.Command("head", "-c", "10") // coreutils
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var headOut bytes.Buffer
	sshErr := &cappedBuffer{max: 4 << 10}
	ssh.Stdin, ssh.Stdout, ssh.Stderr = stdin, w, sshErr
	head.Stdin, head.Stdout = r, &headOut
	if err := head.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ssh.Start(); err != nil {
		head.Process.Kill()
		head.Wait()
		t.Fatal(err)
	}
	r.Close()
	w.Close()
	done := make(chan error, 1)
	go func() {
		head.Wait()
		done <- ssh.Wait()
	}()
	select {
	case err = <-done:
		ended = true
	case <-time.After(timeout):
		ssh.Process.Kill()
		head.Process.Kill()
		err = <-done
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	return headOut.String(), sshErr.String(), code, ended
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (c *cappedBuffer) Write(b []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(b[:min(room, len(b))])
	}
	return len(b), nil
}

// TestOpenSSHOutputClosed is "ssh host yes | head -c 10": when head exits,
// ssh's writes fail and it sends "eow@openssh.com"; the server stops reading
// the program's output, the program ends (SIGPIPE without a pty, a hangup
// with one), its end is reported, and ssh exits at once.
func TestOpenSSHOutputClosed(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	for i, tc := range []struct {
		name    string
		flags   []string
		command string // with %s for a marker that finds the process; "" for a shell
		stdin   string // the shell's input, with %s for the marker
		wantSig string // how the program ended, in the session's audit event
	}{
		{name: "exec", command: "exec yes %s", wantSig: "PIPE"},
		{name: "shell", stdin: "exec yes %s\n", wantSig: "PIPE"},
		{name: "exec pty", flags: []string{"-tt"}, command: "exec yes %s", wantSig: "HUP"},
		{name: "shell pty", flags: []string{"-tt"}, stdin: "exec yes %s\n", wantSig: "HUP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker := fmt.Sprintf("porthole-eow-%d-%d", os.Getpid(), i)
			args := append(append([]string(nil), tc.flags...), "root@127.0.0.1")
			if tc.command != "" {
				args = append(args, fmt.Sprintf(tc.command, marker))
			}
			var stdin io.Reader
			if tc.stdin != "" {
				stdin = strings.NewReader(fmt.Sprintf(tc.stdin, marker))
			}
			out, errOut, code, ended := o.sshIntoHead(t, stdin, 5*time.Second, args...)
			if !ended {
				t.Fatalf("ssh %q | head -c 10 still running after 5 s (head read %q; ssh: %s)", args, out, errOut)
			}
			t.Logf("ssh %q | head -c 10: head read %q, ssh exit %d, stderr %q", args, out, code, errOut)
			if len(out) != 10 {
				t.Errorf("head read %q, want 10 bytes", out)
			}
			waitFor(t, "the session to end", func() bool { return len(o.eventsOf(EventSessionEnd)) == i+1 })
			ev := o.eventsOf(EventSessionEnd)[i]
			if ev.ExitSignal != tc.wantSig {
				t.Errorf("session end: signal %q, status %d; want signal %s", ev.ExitSignal, ev.ExitStatus, tc.wantSig)
			}
			if pids := processesWith(marker); len(pids) != 0 {
				t.Errorf("yes still running on the server: pids %v", pids)
			}
		})
	}
}

// TestOpenSSHSFTPLinks: OpenSSH's sftp sends a symlink's target as typed and
// its link path made absolute against its "cd". The target must be stored
// as sent, relative or absolute, like OpenSSH's sftp-server does; hard links
// ("ln" without -s) link the named file.
func TestOpenSSHSFTPLinks(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	sftp := needProgram(t, "sftp")
	home := o.home("root")
	dir := filepath.Join(home, "dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "renamed.bin"), "payload")
	abs := filepath.Join(o.dir, "elsewhere.bin")
	writeFile(t, abs, "elsewhere")
	fetched := filepath.Join(o.dir, "fetched.bin")
	batch := filepath.Join(o.dir, "batch")
	writeFile(t, batch, strings.Join([]string{
		"cd dir",
		"symlink renamed.bin link.bin",
		"ln -s " + abs + " abs.bin",
		"ln renamed.bin hard.bin",
		"-symlink renamed.bin link.bin", // exists: fails, the session goes on
		"get link.bin " + fetched,
		"cd ..",
		"symlink dir/renamed.bin top.bin",
		"symlink ../up.bin dir/up.bin",
	}, "\n")+"\n")
	args := append(o.opts(), "-P", o.port, "-b", batch, "root@127.0.0.1")
	out, errOut, code := o.run(t, nil, sftp, args...)
	if code != 0 {
		t.Errorf("sftp -b: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "link.bin") {
		t.Errorf("sftp -b: no error for the second link.bin: %q", errOut)
	}
	for _, tc := range []struct{ link, target string }{
		{filepath.Join(dir, "link.bin"), "renamed.bin"},
		{filepath.Join(dir, "abs.bin"), abs},
		{filepath.Join(home, "top.bin"), "dir/renamed.bin"},
		{filepath.Join(dir, "up.bin"), "../up.bin"},
	} {
		if got, err := os.Readlink(tc.link); err != nil || got != tc.target {
			t.Errorf("readlink %s = %q, %v; want %q", tc.link, got, err, tc.target)
		}
	}
	if got, err := os.ReadFile(fetched); err != nil || string(got) != "payload" {
		t.Errorf("get through link.bin = %q, %v; want payload", got, err)
	}
	orig, err1 := os.Lstat(filepath.Join(dir, "renamed.bin"))
	hard, err2 := os.Lstat(filepath.Join(dir, "hard.bin"))
	if err1 != nil || err2 != nil || !os.SameFile(orig, hard) {
		t.Errorf("hard.bin is not a hard link of renamed.bin: %v, %v", err1, err2)
	}
}

// TestOpenSSHForwardRefused: "ssh -L" to a destination that refuses the
// connection logs what sshd's refusal would, without a word twice.
func TestOpenSSHForwardRefused(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	local, closed := freePort(t), freePort(t)
	needRefusedErrno(t, "127.0.0.1:"+closed)
	// The refusal is logged at INFO; the first LogLevel given wins.
	c, errOut := o.forward(t, needProgram(t, "ssh"), local, []string{"-o", "LogLevel=INFO"},
		"-L", "127.0.0.1:"+local+":127.0.0.1:"+closed)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("forward to a closed port: read %d, %v; want EOF or reset", n, err)
	}
	const want = "open failed: connect failed: Connection refused\r\n"
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(errOut.String(), want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := errOut.String(); !strings.Contains(got, want) {
		t.Errorf("ssh -L to a closed port logged %q, want %q", got, want)
	}
}

// forward runs "ssh -N" with the -L arguments in forwards (before them, the
// options in first) until the test ends, and returns a connection to the local
// port of the first, once it listens, and what ssh writes on stderr.
func (o *openSSHEnv) forward(t *testing.T, ssh, local string, first []string, forwards ...string) (net.Conn, *lockedBuffer) {
	t.Helper()
	args := append(append(first, o.opts()...), "-p", o.port, "-N", "-o", "ExitOnForwardFailure=yes")
	args = append(append(args, forwards...), "root@127.0.0.1")
	cmd := exec.Command(ssh, args...)
	cmd.Env = append(os.Environ(), "HOME="+o.dir)
	errOut := &lockedBuffer{}
	cmd.Stderr = errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	var c net.Conn
	waitFor(t, "ssh -L listening", func() bool {
		var err error
		c, err = net.Dial("tcp", "127.0.0.1:"+local)
		return err == nil
	})
	t.Cleanup(func() { c.Close() })
	return c, errOut
}

// lockedBuffer is a bytes.Buffer that a program writes while a test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestOpenSSHSFTPOwnerNames: sftp's ls -l of files (not a directory's
// listing) names owners and groups through users-groups-by-id@openssh.com,
// from the server's passwd and group files; an id they do not name is shown
// as the number.
func TestOpenSSHSFTPOwnerNames(t *testing.T) {
	needRoot(t)
	o := newOpenSSHEnv(t, nil)
	sftp := needProgram(t, "sftp")
	dir := filepath.Join(o.home("root"), "owners")
	os.MkdirAll(dir, 0o755)
	for name, ids := range map[string][2]int{"alices": {1000, 10}, "nobodys": {4242, 4343}} {
		p := filepath.Join(dir, name)
		writeFile(t, p, name)
		if err := os.Chown(p, ids[0], ids[1]); err != nil {
			t.Fatal(err)
		}
	}
	batch := filepath.Join(o.dir, "batch")
	writeFile(t, batch, "ls -l "+dir+"/*\n") // files, by a glob: not a directory listing
	out, errOut, code := o.run(t, nil, sftp, append(o.opts(), "-P", o.port, "-b", batch, "root@127.0.0.1")...)
	if code != 0 {
		t.Fatalf("sftp ls -l: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^-rw-r--r-- +\? alice +wheel +6 .*/alices$`),
		regexp.MustCompile(`(?m)^-rw-r--r-- +\? 4242 +4343 +7 .*/nobodys$`),
	} {
		if !want.MatchString(out) {
			t.Errorf("sftp ls -l printed\n%s\nwant a line matching %s", out, want)
		}
	}
}

// TestOpenSSHSFTPListing: "ls -la" in OpenSSH's sftp must read as with
// OpenSSH's own sftp-server (Debian's openssh-sftp-server), which sftp runs
// directly with -D for the reference: "." and ".." are listed, and a time in
// the future or more than six months ago shows its year. Both offer
// users-groups-by-id@openssh.com, so sftp (9.1 and later) formats the lines
// itself, with the full path and "?" for the link count, and the two must be
// the same. Without the extension (older clients, and other clients always)
// sftp prints the long names the server sends, which must read as
// sftp-server's do, with the link count and the name alone.
func TestOpenSSHSFTPListing(t *testing.T) {
	for _, ext := range []bool{true, false} {
		t.Run(map[bool]string{true: "users-groups-by-id", false: "long names"}[ext], func(t *testing.T) {
			if !ext {
				saved := sftpExtensions
				sftpExtensions = slices.DeleteFunc(slices.Clone(saved), func(e string) bool { return e == usersGroupsExt })
				t.Cleanup(func() { sftpExtensions = saved })
			}
			testOpenSSHSFTPListing(t, ext)
		})
	}
}

func testOpenSSHSFTPListing(t *testing.T, ext bool) {
	o := newOpenSSHEnv(t, nil)
	sftp := needProgram(t, "sftp")
	server := o.srv.externalSFTPServer()
	if server == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no sftp-server (install Debian's openssh-sftp-server; tools/deps.sh test does)")
		}
		t.Skip("no sftp-server; install openssh-sftp-server to run this test")
	}
	dir := filepath.Join(o.home("root"), "list")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.Chmod(filepath.Join(dir, "sub"), os.ModeSticky|0o777)
	now := time.Now()
	for name, age := range map[string]time.Duration{
		"recent": time.Hour, "old": 300 * 24 * time.Hour, "future": -30 * 24 * time.Hour, "setuid": 24 * time.Hour,
	} {
		p := filepath.Join(dir, name)
		writeFile(t, p, name)
		os.Chtimes(p, now, now.Add(-age))
	}
	os.Chmod(filepath.Join(dir, "setuid"), os.ModeSetuid|0o754)
	os.Symlink("recent", filepath.Join(dir, "link"))
	os.Chtimes(dir, now, now.Add(-400*24*time.Hour))
	batch := filepath.Join(o.dir, "batch")
	writeFile(t, batch, "ls -la "+dir+"\n")
	ours, errOut, code := o.run(t, nil, sftp, append(o.opts(), "-P", o.port, "-b", batch, "root@127.0.0.1")...)
	if code != 0 {
		t.Fatalf("sftp ls -la: exit %d\n%s\n%s", code, ours, errOut)
	}
	want, errOut, code := o.run(t, nil, sftp, "-b", batch, "-D", server)
	if code != 0 {
		t.Fatalf("sftp -D %s ls -la: exit %d\n%s\n%s", server, code, want, errOut)
	}
	if !ext {
		want = strings.ReplaceAll(want, dir+"/", "")
		ours = regexp.MustCompile(`(?m)^(\S+ +)\d`).ReplaceAllString(ours, "$1?") // link counts here are below 10
	}
	if ours != want {
		t.Errorf("sftp ls -la through the server:\n%s\nthrough %s:\n%s", ours, server, want)
	}
}

// TestOpenSSHSFTPLimits: sftp and scp (OpenSSH 8.7 and later) ask
// limits@openssh.com and size their requests to it: uploads in WRITEs of
// 255 KiB, as to OpenSSH's sftp-server, downloads in pkg/sftp's 32 KiB READs.
// Without the extension they use 32 KiB for both.
func TestOpenSSHSFTPLimits(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	sftp := needProgram(t, "sftp")
	src := filepath.Join(o.dir, "local.bin")
	randomFile(t, src, 3<<20+12_345)
	got := filepath.Join(o.dir, "fetched.bin")
	batch := filepath.Join(o.dir, "batch")
	writeFile(t, batch, fmt.Sprintf("put %s remote.bin\nget remote.bin %s\n", src, got))
	// sftp's own debug3 (-vvv) prints the sizes it chose; ssh's LogLevel
	// (ERROR in opts) keeps ssh quiet.
	args := append(append([]string{"-vvv"}, o.opts()...), "-P", o.port, "-b", batch, "root@127.0.0.1")
	out, errOut, code := o.run(t, nil, sftp, args...)
	if code != 0 {
		t.Fatalf("sftp -b: exit %d\n%s\n%s", code, out, errOut)
	}
	sameFile(t, src, filepath.Join(o.home("root"), "remote.bin"))
	sameFile(t, src, got)
	want := fmt.Sprintf("server upload/download buffer sizes %d / %d; using %d / %d", maxSFTPWrite, maxSFTPRead, maxSFTPWrite, maxSFTPRead)
	if !strings.Contains(errOut, want) {
		var lines []string
		for _, l := range strings.Split(errOut, "\n") {
			if strings.Contains(l, "limits") || strings.Contains(l, "buffer sizes") {
				lines = append(lines, l)
			}
		}
		t.Errorf("sftp did not say %q; its lines on limits:\n%s", want, strings.Join(lines, "\n"))
	}
}

// TestOpenSSHSFTPFsync: sftp -f has each uploaded file flushed with
// fsync@openssh.com (without the extension it skips that in silence), after
// the last write, and the server flushes that file.
func TestOpenSSHSFTPFsync(t *testing.T) {
	calls := recordFsyncs(t)
	o := newOpenSSHEnv(t, nil)
	sftp := needProgram(t, "sftp")
	src := filepath.Join(o.dir, "local.bin")
	randomFile(t, src, 1<<20+4_321)
	batch := filepath.Join(o.dir, "batch")
	writeFile(t, batch, fmt.Sprintf("put %s remote.bin\n", src))
	args := append(append([]string{"-vv", "-f"}, o.opts()...), "-P", o.port, "-b", batch, "root@127.0.0.1")
	out, errOut, code := o.run(t, nil, sftp, args...)
	if code != 0 {
		t.Fatalf("sftp -f -b: exit %d\n%s\n%s", code, out, errOut)
	}
	remote := filepath.Join(o.home("root"), "remote.bin")
	sameFile(t, src, remote)
	if !strings.Contains(errOut, fsyncExt) || strings.Contains(errOut, "remote fsync") {
		t.Errorf("sftp -f did not have the file flushed:\n%s", errOut)
	}
	if want := fmt.Sprintf("%s %d", remote, 1<<20+4_321); calls.String() != fmt.Sprintf("fsync [%q], sync 0", want) {
		t.Errorf("flushed: %v, want fsync of %s", calls, want)
	}
}

// TestOpenSSHSFTPCopy: sftp's cp (OpenSSH 9.0+) copies a file on the server
// with copy-data, onto a new name (with the mode of the original) and over a
// longer file (which it truncates).
func TestOpenSSHSFTPCopy(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	sftp := needProgram(t, "sftp")
	home := o.home("root")
	src := filepath.Join(home, "image.bin")
	randomFile(t, src, 3<<20+777)
	os.Chmod(src, 0o640)
	randomFile(t, filepath.Join(home, "old.bin"), 5<<20)
	batch := filepath.Join(o.dir, "batch")
	writeFile(t, batch, "cp image.bin copy.bin\ncp image.bin old.bin\n")
	args := append(o.opts(), "-P", o.port, "-b", batch, "root@127.0.0.1")
	if out, errOut, code := o.run(t, nil, sftp, args...); code != 0 {
		t.Fatalf("sftp cp: exit %d\n%s\n%s", code, out, errOut)
	}
	sameFile(t, src, filepath.Join(home, "copy.bin"))
	sameFile(t, src, filepath.Join(home, "old.bin"))
	// The mode of a new file; an existing one keeps its own, as with sftp-server.
	if fi, err := os.Stat(filepath.Join(home, "copy.bin")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("copy.bin: mode %v (%v), want 0640", fi.Mode(), err)
	}
}

// scp (SFTP protocol, OpenSSH 9's default) needs expand-path@openssh.com for
// host:~user/path, which the server adds to pkg/sftp's extensions and serves.
// (OpenSSH 9.2's sftp itself does not use it.)
func TestOpenSSHSCPExpandPath(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	scp := needProgram(t, "scp")
	base := append(o.opts(), "-P", o.port)
	src := filepath.Join(o.home("root"), "sub", "f.bin")
	os.MkdirAll(filepath.Dir(src), 0o755)
	randomFile(t, src, 10_007)
	for i, remote := range []string{"~root/sub/f.bin", "~root/sub/../sub/f.bin"} {
		back := filepath.Join(o.dir, fmt.Sprint("back", i))
		if _, errOut, code := o.run(t, nil, scp, append(base, "root@127.0.0.1:"+remote, back)...); code != 0 {
			t.Fatalf("scp root@host:%s: exit %d\n%s", remote, code, errOut)
		}
		sameFile(t, src, back)
	}
	if _, errOut, code := o.run(t, nil, scp, append(base, "root@127.0.0.1:~nosuchuser/f.bin", o.dir)...); code == 0 || !strings.Contains(errOut, "no such file") {
		t.Errorf("scp root@host:~nosuchuser/f.bin: exit %d, %q; want not found", code, errOut)
	}
}

// TestSFTPRemoveAndRenameAsSFTPServer: OpenSSH's sftp against the in-process
// SFTP server, compared with sftp-server: rm removes files only, rmdir
// directories only, and a plain rename (rename -l, SSH_FXP_RENAME) never
// replaces an existing name; the default rename (posix-rename@openssh.com)
// does. pkg/sftp deleted a file for rmdir and replaced the file for rename -l.
func TestSFTPRemoveAndRenameAsSFTPServer(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	sftp := needProgram(t, "sftp")
	home := o.home("root")
	writeFile(t, filepath.Join(home, "file"), "keep me")
	writeFile(t, filepath.Join(home, "gone"), "x")
	for _, d := range []string{"dir", "emptied"} {
		if err := os.Mkdir(filepath.Join(home, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(home, "src"), "new")
	writeFile(t, filepath.Join(home, "dst"), "precious")
	writeFile(t, filepath.Join(home, "src2"), "second")
	writeFile(t, filepath.Join(home, "dst2"), "replaced")
	batch := filepath.Join(o.dir, "batch")
	// A leading - lets the batch go on after a command fails.
	writeFile(t, batch, "-rmdir file\n-rm dir\nrm gone\nrmdir emptied\n-rename -l src dst\nrename -l src fresh\nrename src2 dst2\n")
	out, errOut, code := o.run(t, nil, sftp, append(o.opts(), "-P", o.port, "-b", batch, "root@127.0.0.1")...)
	if code != 0 {
		t.Fatalf("sftp -b: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{`remote rmdir "` + home + `/file": No such file`, `remote delete ` + home + `/dir: Failure`,
		`remote rename "` + home + `/src" to "` + home + `/dst": Failure`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("sftp's errors lack %q:\n%s", want, errOut)
		}
	}
	for name, want := range map[string]string{"file": "keep me", "dst": "precious", "fresh": "new", "dst2": "second"} {
		if b, err := os.ReadFile(filepath.Join(home, name)); string(b) != want {
			t.Errorf("%s holds %q, %v; want %q", name, b, err, want)
		}
	}
	for name, exists := range map[string]bool{"dir": true, "gone": false, "emptied": false, "src": false, "src2": false} {
		if _, err := os.Lstat(filepath.Join(home, name)); (err == nil) != exists {
			t.Errorf("%s: Lstat = %v; want it to exist: %v", name, err, exists)
		}
	}
}

// curl --append (libssh2) opens the remote file with SSH_FXF_APPEND and writes
// from offset 0: the data must land after what the file held.
func TestCurlSFTPAppend(t *testing.T) {
	curl := needProgram(t, "curl")
	o := newOpenSSHEnv(t, nil)
	remote := filepath.Join(o.home("root"), "log")
	writeFile(t, remote, "line1\n")
	local := filepath.Join(o.dir, "more")
	writeFile(t, local, "line2\n")
	// --noproxy: not through the machine's all_proxy to loopback.
	out, errOut, code := o.run(t, nil, curl, "--noproxy", "*", "-sS", "-k", "--key", o.keyFile, "-u", "root:", "--append", "-T", local,
		"sftp://127.0.0.1:"+o.port+remote)
	if code != 0 {
		t.Fatalf("curl: exit %d %s %s", code, out, errOut)
	}
	if b, _ := os.ReadFile(remote); string(b) != "line1\nline2\n" {
		t.Errorf("after curl --append: %q", b)
	}
}

// TestOpenSSHSCPRelativePaths: scp in its default SFTP mode (OpenSSH 9)
// sends a remote path as typed, relative to the home directory. A trailing
// "/" says the name must be a directory: with OpenSSH's sftp-server (and
// with "scp -O", see resolvePath) "scp f host:conf/" fails and leaves the
// file conf alone, and "scp f host:newdir/" fails without making a file
// named newdir; "scp host:conf/ ." finds no such file. And "link/.." is
// the parent of link's target, as the kernel takes it, not link's own.
func TestOpenSSHSCPRelativePaths(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	scp := needProgram(t, "scp")
	base := append(o.opts(), "-P", o.port)
	home := o.home("root")
	writeFile(t, filepath.Join(home, "conf"), "precious")
	src := filepath.Join(o.dir, "f")
	writeFile(t, src, "new")
	for _, remote := range []string{"conf/", "newdir/", "./conf/"} {
		if _, errOut, code := o.run(t, nil, scp, append(base, src, "root@127.0.0.1:"+remote)...); code == 0 {
			t.Errorf("scp f host:%s: exit 0 (%q), want a failure", remote, errOut)
		}
	}
	if b, err := os.ReadFile(filepath.Join(home, "conf")); string(b) != "precious" {
		t.Errorf("after scp f host:conf/, conf holds %q, %v; want it untouched", b, err)
	}
	if _, err := os.Lstat(filepath.Join(home, "newdir")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after scp f host:newdir/: Lstat(newdir) = %v, want it not made", err)
	}
	if _, errOut, code := o.run(t, nil, scp, append(base, "root@127.0.0.1:conf/", filepath.Join(o.dir, "back"))...); code == 0 {
		t.Errorf("scp host:conf/ back: exit 0 (%q), want not found", errOut)
	}
	// A directory with a slash still takes the file.
	os.Mkdir(filepath.Join(home, "dir"), 0o755)
	if _, errOut, code := o.run(t, nil, scp, append(base, src, "root@127.0.0.1:dir/")...); code != 0 {
		t.Errorf("scp f host:dir/: exit %d %s", code, errOut)
	}
	sameFile(t, src, filepath.Join(home, "dir", "f"))
	os.MkdirAll(filepath.Join(home, "dir", "sub"), 0o755)
	os.Symlink("dir/sub", filepath.Join(home, "deep"))
	writeFile(t, filepath.Join(home, "dir", "conf"), "inner")
	back := filepath.Join(o.dir, "back")
	if _, errOut, code := o.run(t, nil, scp, append(base, "root@127.0.0.1:deep/../conf", back)...); code != 0 {
		t.Errorf("scp host:deep/../conf: exit %d %s", code, errOut)
	} else if b, _ := os.ReadFile(back); string(b) != "inner" {
		t.Errorf("scp host:deep/../conf fetched %q, want dir/conf's %q", b, "inner")
	}
}

// TestOpenSSHRealpath: scp -r (SFTP mode) and sftp's cd canonicalize the
// remote path with SSH_FXP_REALPATH, which must resolve it as OpenSSH's
// sftp-server does, symbolic links first: with deep a link to dir/sub,
// "deep/../x" is ~/dir/x (pkg/sftp made it ~/x, so the upload landed beside
// the link), and "newdir2/", a directory that does not exist, is refused
// (pkg/sftp named it, and scp -r made it). Each command runs against the
// server and, through scp -S and sftp -S, against sftp-server in a home of
// its own laid out alike; they must end alike and leave the same names.
// And expand-path, which scp uses for ~user paths, names a file that does
// not exist yet, so that "scp f host:~root/newname" makes it.
func TestOpenSSHRealpath(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	scp, sftp := needProgram(t, "scp"), needProgram(t, "sftp")
	server := o.srv.externalSFTPServer()
	if server == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no sftp-server (install Debian's openssh-sftp-server; tools/deps.sh test does)")
		}
		t.Skip("no sftp-server; install openssh-sftp-server to run this test")
	}
	home, ref := o.home("root"), filepath.Join(o.dir, "ref")
	for _, h := range []string{home, ref} {
		os.MkdirAll(filepath.Join(h, "dir", "sub"), 0o755)
		os.Symlink("dir/sub", filepath.Join(h, "deep"))
	}
	wrapper := filepath.Join(o.dir, "sftp-server.sh") // run by scp and sftp as their ssh
	writeFile(t, wrapper, "#!/bin/sh\ncd '"+ref+"' && exec "+server+"\n")
	os.Chmod(wrapper, 0o755)
	src := filepath.Join(o.dir, "d")
	os.Mkdir(src, 0o755)
	writeFile(t, filepath.Join(src, "f"), "data")
	batch := filepath.Join(o.dir, "batch")
	writeFile(t, batch, "cd deep/..\nput "+filepath.Join(src, "f")+" g\n")
	for _, tc := range []struct {
		name       string
		prog       string
		args       []string // the host's name is the last argument's prefix
		wantExists []string
	}{
		{"scp -r d host:deep/../x", scp, []string{"-r", src, "HOST:deep/../x"}, []string{"dir/x/f"}},
		{"scp -r d host:newdir2/", scp, []string{"-r", src, "HOST:newdir2/"}, nil},
		{"sftp cd deep/.. and put", sftp, []string{"-b", batch, "HOST"}, []string{"dir/g"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := func(opts []string, host string) int {
				args := slices.Clone(tc.args)
				args[len(args)-1] = strings.Replace(args[len(args)-1], "HOST", host, 1)
				_, errOut, code := o.run(t, nil, tc.prog, append(opts, args...)...)
				t.Logf("%s with %s: exit %d %s", tc.name, host, code, errOut)
				return code
			}
			port := "-P"
			ours := run(append(o.opts(), port, o.port), "root@127.0.0.1")
			want := run([]string{"-S", wrapper}, "ref")
			if (ours == 0) != (want == 0) {
				t.Errorf("exit %d, with sftp-server %d", ours, want)
			}
			for _, name := range []string{"x", "newdir2", "g", "dir/x/f", "dir/g", "dir/newdir2"} {
				_, err1 := os.Lstat(filepath.Join(home, name))
				_, err2 := os.Lstat(filepath.Join(ref, name))
				if (err1 == nil) != (err2 == nil) {
					t.Errorf("~/%s: %v; with sftp-server: %v", name, err1, err2)
				}
			}
			for _, name := range tc.wantExists {
				if _, err := os.Lstat(filepath.Join(home, name)); err != nil {
					t.Errorf("~/%s: %v", name, err)
				}
			}
		})
	}
	if _, errOut, code := o.run(t, nil, scp, append(o.opts(), "-P", o.port, filepath.Join(src, "f"), "root@127.0.0.1:~root/newname")...); code != 0 {
		t.Errorf("scp f host:~root/newname: exit %d %s", code, errOut)
	}
	sameFile(t, filepath.Join(src, "f"), filepath.Join(home, "newname"))
}

// TestOpenSSHOtherKeysOfferedFirst: OpenSSH's client offers each key it has
// (the agent's, ~/.ssh/id_*) until one is accepted. Keys refused on the way
// to a successful login are no failed login: OpenSSH's sshd logs them at
// VERBOSE (hidden at its default INFO), and no login-failure event should
// reach the audit stream (the agent publishes each one, and at most 20 a
// minute one by one), nor a "login refused" line in the log. A connection that
// ends without logging in still reports the keys it was refused.
func TestOpenSSHOtherKeysOfferedFirst(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	other := filepath.Join(o.dir, "id_other")
	if out, err := exec.Command(needProgram(t, "ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", other).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %s %v", out, err)
	}
	// The unauthorized key first, as ssh tries them in order.
	args := append([]string{"-i", other}, o.opts()...)
	args = append(args, "-p", o.port, "root@127.0.0.1", "echo in")
	out, errOut, code := o.run(t, nil, needProgram(t, "ssh"), args...)
	if out != "in\n" || code != 0 {
		t.Fatalf("ssh with two keys = %q, %q, exit %d", out, errOut, code)
	}
	if fails := o.eventsOf(EventLoginFailure); len(fails) != 0 {
		t.Errorf("a successful login produced %d login-failure events: %+v", len(fails), fails)
	}
	if lines := o.logs.logged("login refused"); len(lines) != 0 {
		t.Errorf("a successful login logged %q", lines)
	}
	// Only the unauthorized key: the login fails, and says so once per key.
	args = append([]string{"-i", other, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-F", "/dev/null",
		"-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + o.knownHosts, "-o", "LogLevel=ERROR"}, "-p", o.port, "root@127.0.0.1", "true")
	cmd := exec.Command(needProgram(t, "ssh"), args...)
	cmd.Env = append(os.Environ(), "HOME="+o.dir)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "Permission denied") {
		t.Fatalf("ssh with an unauthorized key: %q, %v", b, err)
	}
	waitFor(t, "the login-failure event", func() bool { return len(o.eventsOf(EventLoginFailure)) == 1 })
	ev := o.eventsOf(EventLoginFailure)[0]
	if ev.Method != "publickey" || ev.User != "root" || ev.KeyFingerprint == "" || ev.Reason != "key not in authorized_keys" {
		t.Errorf("login-failure event = %+v", ev)
	}
	if lines := o.logs.logged("login refused", "key not in authorized_keys"); len(lines) != 1 {
		t.Errorf("failed login logged %q, want one line", lines)
	}
}

// TestOpenSSHStderrAfterEOW: "ssh host script | head": once head exits, ssh
// sends "eow@openssh.com" for the channel's data (stdout) only; its stderr
// still works. OpenSSH's sshd (nchan.c, chan_rcvd_eow) then closes only the
// program's stdout: a script that goes on after its stdout consumer left and
// writes a line to stderr keeps running, and ssh exits with its status.
// Here stderr is closed too, so the shell's own "echo >&2" kills it with
// SIGPIPE: the rest of the script never runs and ssh exits 255.
func TestOpenSSHStderrAfterEOW(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	mark := filepath.Join(o.dir, "ran-to-the-end")
	script := "yes | head -c 1000000; sleep 0.5; echo 'note: done' >&2; touch " + mark + "; exit 7"
	out, errOut, code, ended := o.sshIntoHead(t, nil, 10*time.Second, "root@127.0.0.1", script)
	if !ended {
		t.Fatalf("ssh | head -c 10 still running after 10 s (head read %q; ssh: %s)", out, errOut)
	}
	if len(out) != 10 {
		t.Errorf("head read %q, want 10 bytes", out)
	}
	if _, err := os.Stat(mark); err != nil {
		t.Errorf("the script did not run to its end after writing to stderr: %v", err)
	}
	if code != 7 {
		t.Errorf("ssh exit %d (stderr %q), want the script's status 7, as with OpenSSH's sshd", code, errOut)
	}
}
