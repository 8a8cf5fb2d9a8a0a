package sshd

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

func authorizedLine(opts string, k gossh.PublicKey) string {
	line := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
	if opts != "" {
		line = opts + " " + line
	}
	return line + "\n"
}

// newCert signs a user certificate for key with ca.
func newCert(t testing.TB, ca, key gossh.Signer, mutate func(c *gossh.Certificate)) gossh.Signer {
	t.Helper()
	c := &gossh.Certificate{
		Key:             key.PublicKey(),
		CertType:        gossh.UserCert,
		KeyId:           "test-cert",
		Serial:          42,
		ValidPrincipals: []string{"root"},
		ValidAfter:      uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
		Permissions: gossh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-port-forwarding": "", "permit-agent-forwarding": "",
		}},
	}
	if mutate != nil {
		mutate(c)
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewCertSigner(c, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPublicKeyAuth(t *testing.T) {
	e := newEnv(t, nil)
	other := newSigner(t)
	for _, tc := range []struct {
		name   string
		user   string
		signer gossh.Signer
		ok     bool
	}{
		{"root with key", "root", e.key, true},
		{"alice with key", "alice", e.key, os.Geteuid() == 0},
		{"unknown key", "root", other, false},
		{"unknown user", "nosuch", e.key, false},
		{"user without authorized_keys", "carol", e.key, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := e.dial(tc.user, gossh.PublicKeys(tc.signer))
			if c != nil {
				c.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("login as %s: %v, want ok=%v", tc.user, err, tc.ok)
			}
		})
	}
	// Refused keys are reported when the server has seen the connection end,
	// which may come after the client's Dial has returned.
	sawUnknownUser := func() bool {
		for _, f := range e.eventsOf(EventLoginFailure) {
			if f.User == "nosuch" && strings.Contains(f.Reason, "unknown user") && f.Method == "publickey" {
				return true
			}
		}
		return false
	}
	waitFor(t, "the failure event of the unknown user", sawUnknownUser)
}

func TestSessionRunsAsLoginUser(t *testing.T) {
	needRoot(t)
	e := newEnv(t, nil)
	for _, tc := range []struct{ user, want string }{
		{"root", "0 0 " + e.home("root")},
		{"alice", "1000 1000 10 " + e.home("alice")},
		// bob's shell does not exist: he may not log in (TestDisabledAccountLogin).
	} {
		t.Run(tc.user, func(t *testing.T) {
			c := e.login(tc.user)
			out, _, code := run(t, c, `echo $(id -u) $(id -G) $(pwd)`, "")
			if strings.TrimSpace(out) != tc.want || code != 0 {
				t.Errorf("id as %s = %q (exit %d), want %q", tc.user, out, code, tc.want)
			}
		})
	}
}

// TestPrimaryGroupNotUID: a user whose primary group is not numbered as its
// uid, here root's group 0 (devices put operators in it), runs with its uid
// and that gid, and is not the server's own user for having the server's uid
// as gid: in-process SFTP, which acts with the server's privileges, is not
// served to it.
func TestPrimaryGroupNotUID(t *testing.T) {
	needRoot(t)
	e := newEnv(t, func(e *testEnv, s *Server) {
		s.sftpServerPaths = []string{} // no sftp-server: only in-process SFTP could serve alice
		passwd, err := os.ReadFile(s.PasswdFile)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, s.PasswdFile, strings.Replace(string(passwd), "alice:x:1000:1000:", "alice:x:1000:0:", 1))
	})
	c := e.login("alice")
	if out, _, code := run(t, c, `echo $(id -u) $(id -g) $(id -G)`, ""); strings.TrimSpace(out) != "1000 0 0 10" || code != 0 {
		t.Errorf("id as alice with gid 0 = %q (exit %d), want %q", out, code, "1000 0 0 10")
	}
	if err := openSession(t, c).RequestSubsystem("sftp"); err == nil {
		t.Error("sftp granted to alice, with gid 0, on a root server without an sftp-server")
	}
	if err := openSession(t, c).Start("internal-sftp"); err == nil {
		t.Error("internal-sftp started for alice, with gid 0, on a root server")
	}
}

func TestNotRootOnlyOwnUser(t *testing.T) {
	// As root, pretend to run as uid 1000 (alice); otherwise this is the
	// real thing and the test user "root" has the tests' own uid.
	own, other := "alice", "root"
	if os.Geteuid() != 0 {
		own, other = "root", "alice"
	}
	e := newEnv(t, func(_ *testEnv, s *Server) {
		if os.Geteuid() == 0 {
			s.geteuid = func() int { return 1000 }
		}
	})
	if err := e.checkRefused(other, gossh.PublicKeys(e.key)); err != nil {
		t.Errorf("on a server running as another uid: %v", err)
	}
	c := e.login(own)
	// The session runs as the server's own user; no credential switch.
	if cred := e.srv.credential(&account{UID: 1000}); cred != nil {
		t.Errorf("credential = %+v, want nil when not root", cred)
	}
	out, _, _ := run(t, c, "echo $USER $HOME", "")
	if want := own + " " + e.home(own); strings.TrimSpace(out) != want {
		t.Errorf("env = %q, want %q", out, want)
	}
}

// TestCertAuthorityLineOverTrustedCA: a CA trusted server-wide that also has
// a cert-authority line in the user's authorized_keys logs in with that line's
// options, as OpenSSH's sshd (which reads authorized_keys first): command=,
// restrict and permitopen= applied; the trusted CA was checked first, and a
// line meant to hold the CA's certificates to one command gave a shell. A line
// that refuses the login (from=) leaves the trusted CA to decide.
func TestCertAuthorityLineOverTrustedCA(t *testing.T) {
	ca := newSigner(t)
	cert := newCert(t, ca, newSigner(t), nil)
	env := func(t *testing.T, line string) *testEnv {
		e := newEnv(t, func(e *testEnv, s *Server) {
			caFile := filepath.Join(e.dir, "user_ca.pub")
			writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
			s.TrustedUserCAKeysFiles = []string{caFile}
		})
		e.writeAuthorizedKeys("root", authorizedLine(line, ca.PublicKey()))
		return e
	}
	t.Run("command=", func(t *testing.T) {
		c, err := env(t, `cert-authority,command="echo only-this"`).dial("root", gossh.PublicKeys(cert))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if out, _, _ := run(t, c, "echo hello", ""); strings.TrimSpace(out) != "only-this" {
			t.Errorf("exec \"echo hello\" printed %q, want the line's command: only-this", out)
		}
	})
	t.Run("restrict", func(t *testing.T) {
		c, err := env(t, "cert-authority,restrict").dial("root", gossh.PublicKeys(cert))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := openSession(t, c).RequestPty("xterm", 24, 80, nil); err == nil {
			t.Error("pty granted under the line's restrict")
		}
	})
	t.Run("from= refuses, the trusted CA admits", func(t *testing.T) {
		c, err := env(t, `cert-authority,from="192.0.2.1",command="echo only-this"`).dial("root", gossh.PublicKeys(cert))
		if err != nil {
			t.Fatalf("the trusted CA did not admit the certificate: %v", err)
		}
		defer c.Close()
		if out, _, _ := run(t, c, "echo hello", ""); strings.TrimSpace(out) != "hello" {
			t.Errorf("exec printed %q, want hello (the line did not apply)", out)
		}
	})
}

// TestSetLogins: SetLogins changes who may log in for every login after it,
// as OpenSSH's SIGHUP does; a hash that is not bcrypt's changes nothing.
func TestSetLogins(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ca := newSigner(t)
	var caFile string
	e := newEnv(t, func(e *testEnv, s *Server) {
		caFile = filepath.Join(e.dir, "user_ca.pub")
		writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
		s.TrustedUserCAKeysFiles = []string{caFile}
		s.PasswordHashes = map[string]string{"root": string(hash)}
	})
	cert := newCert(t, ca, newSigner(t), nil)
	ok := func(user string, auth gossh.AuthMethod) bool {
		c, err := e.dial(user, auth)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	if !ok("root", gossh.PublicKeys(e.key)) || !ok("root", gossh.PublicKeys(cert)) || !ok("root", gossh.Password("s3cret")) {
		t.Fatal("a login method fails before SetLogins")
	}
	// What the server started with stays while SetLogins refuses.
	if err := e.srv.SetLogins(Logins{PasswordHashes: map[string]string{"root": "$2y$secret"}}); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("SetLogins of a hash that is not bcrypt's: %v", err)
	}
	if !ok("root", gossh.PublicKeys(e.key)) || !ok("root", gossh.PublicKeys(cert)) || !ok("root", gossh.Password("s3cret")) {
		t.Fatal("a refused SetLogins changed the logins")
	}
	if err := e.srv.SetLogins(Logins{PasswordHashes: map[string]string{"alice": string(hash)}}); err != nil {
		t.Fatal(err)
	}
	if ok("root", gossh.PublicKeys(e.key)) || ok("root", gossh.PublicKeys(cert)) || ok("root", gossh.Password("s3cret")) {
		t.Error("a key, CA or password taken away by SetLogins still logs in")
	}
	if !ok("alice", gossh.Password("s3cret")) {
		t.Error("the password SetLogins gave does not log in")
	}
	// A server that started without passwords does not offer them.
	e2 := newEnv(t, nil)
	if err := e2.srv.SetLogins(Logins{PasswordHashes: map[string]string{"root": string(hash)}}); !errors.Is(err, ErrPasswordLoginOff) {
		t.Errorf("SetLogins of passwords on a server started without: %v, want ErrPasswordLoginOff", err)
	}
}

// TestDummyHashCostFollowsHashes: a wrong password for a user without a hash
// (or unknown) is compared against a dummy hash of the highest cost among the
// password hashes, at start and after each SetLogins (the agent's SIGHUP), so
// that its refusal takes as long as a known user's; the dummy was made once,
// at the cost of whichever hash the map yielded first, and a reload to hashes
// of another cost told by the time of a failed login which users have a
// password. A reload that keeps the cost does not make it again (seconds on a
// router).
func TestDummyHashCostFollowsHashes(t *testing.T) {
	low, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	mid, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost+1)
	high, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost+3)
	var mu sync.Mutex
	costs := map[string]int{} // the cost of the hash each user's wrong password was compared against
	var user string
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.PasswordHashes = map[string]string{"root": string(low), "alice": string(mid)}
		s.MaxAuthFailures = 1000
		s.compareHash = func(hash, pw []byte) error {
			c, _ := bcrypt.Cost(hash)
			mu.Lock()
			costs[user] = c
			mu.Unlock()
			return bcrypt.CompareHashAndPassword(hash, pw)
		}
	})
	check := func(when string, want map[string]int) {
		t.Helper()
		for u := range want {
			mu.Lock()
			user = u
			mu.Unlock()
			if err := e.checkRefused(u, gossh.Password("wrong")); err != nil {
				t.Fatalf("%s: a wrong password: %v", when, err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for u, c := range want {
			if costs[u] != c {
				t.Errorf("%s: a wrong password for %s is checked at bcrypt cost %d, want %d", when, u, costs[u], c)
			}
		}
	}
	// carol has no hash; nosuchuser has no account.
	check("at start", map[string]int{"root": bcrypt.MinCost, "alice": bcrypt.MinCost + 1, "carol": bcrypt.MinCost + 1, "nosuchuser": bcrypt.MinCost + 1})
	if err := e.srv.SetLogins(Logins{PasswordHashes: map[string]string{"root": string(high)}}); err != nil {
		t.Fatal(err)
	}
	// The dummy is made after SetLogins returns (seconds on a router).
	for deadline := time.Now().Add(10 * time.Second); e.srv.dummy.Load().cost != bcrypt.MinCost+3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the dummy hash still has cost %d, want %d", e.srv.dummy.Load().cost, bcrypt.MinCost+3)
		}
	}
	check("after SetLogins of another cost", map[string]int{"root": bcrypt.MinCost + 3, "nosuchuser": bcrypt.MinCost + 3})
	made := e.srv.dummy.Load()
	again, _ := bcrypt.GenerateFromPassword([]byte("other"), bcrypt.MinCost+3)
	if err := e.srv.SetLogins(Logins{PasswordHashes: map[string]string{"root": string(again), "alice": string(low)}}); err != nil {
		t.Fatal(err)
	}
	e.srv.updateDummy() // as SetLogins' own, which may not have run yet
	if e.srv.dummy.Load() != made {
		t.Error("SetLogins of hashes of the same highest cost made the dummy hash again")
	}
}

// TestSetLoginsDoesNotWaitForTheDummyHash: SetLogins (the agent's SIGHUP) of
// hashes of another cost returns before the new dummy hash is made: tens of
// seconds of bcrypt on a router at cost 14, during which the agent's reload
// held off a SIGTERM until the init system killed it. Here the dummy is held
// up by holding its lock, as a slow CPU would.
func TestSetLoginsDoesNotWaitForTheDummyHash(t *testing.T) {
	low, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	high, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost+1)
	e := newEnv(t, func(_ *testEnv, s *Server) { s.PasswordHashes = map[string]string{"root": string(low)} })
	e.srv.dummyMu.Lock()
	returned := make(chan error, 1)
	go func() { returned <- e.srv.SetLogins(Logins{PasswordHashes: map[string]string{"root": string(high)}}) }()
	select {
	case err := <-returned:
		if err != nil {
			t.Errorf("SetLogins: %v", err)
		}
	case <-time.After(10 * time.Second):
		e.srv.dummyMu.Unlock()
		<-returned
		t.Fatal("SetLogins waited for the dummy hash to be made")
	}
	e.srv.dummyMu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); e.srv.dummy.Load().cost != bcrypt.MinCost+1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the dummy hash still has cost %d after SetLogins, want %d", e.srv.dummy.Load().cost, bcrypt.MinCost+1)
		}
	}
	if c, err := e.dial("root", gossh.Password("s3cret")); err != nil {
		t.Errorf("the new hash's password: %v", err)
	} else {
		c.Close()
	}
}

func TestPasswordAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.PasswordHashes = map[string]string{"root": string(hash), "nosuch": string(hash)}
	})
	for _, tc := range []struct {
		user, pw string
		ok       bool
	}{
		{"root", "s3cret", true},
		{"root", "wrong", false},
		{"alice", "s3cret", false},  // no hash for alice
		{"nosuch", "s3cret", false}, // hash but no such user
	} {
		c, err := e.dial(tc.user, gossh.Password(tc.pw))
		if c != nil {
			out, _, _ := run(t, c, "echo $USER", "")
			if strings.TrimSpace(out) != tc.user {
				t.Errorf("password session user = %q, want %q", out, tc.user)
			}
			c.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("password login %s/%s: %v, want ok=%v", tc.user, tc.pw, err, tc.ok)
		}
	}
	for _, ev := range e.events {
		if strings.Contains(fmt.Sprintf("%+v", ev), "s3cret") {
			t.Errorf("event contains the password: %+v", ev)
		}
	}
}

func TestPasswordOffByDefault(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.dial("root", gossh.Password("anything"))
	if err == nil || !strings.Contains(err.Error(), "[none]") && !strings.Contains(err.Error(), "no supported methods remain") {
		t.Fatalf("password login without PasswordHashes: %v, want refused", err)
	}
	// The method list the server offers must not include password.
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var offered []string
	cfg := e.clientConfig("root", gossh.PasswordCallback(func() (string, error) {
		offered = append(offered, "password")
		return "x", nil
	}))
	if _, _, _, err := gossh.NewClientConn(conn, e.addr, cfg); err == nil {
		t.Fatal("login succeeded")
	}
	if len(offered) != 0 {
		t.Errorf("client was asked for a password although password auth is off")
	}
}

func TestBadPasswordHashRefused(t *testing.T) {
	s := &Server{DataDir: t.TempDir(), PasswordHashes: map[string]string{"root": "plaintext"}}
	if _, err := s.PublicKeys(); err == nil || !strings.Contains(err.Error(), "not bcrypt") {
		t.Fatalf("setup with a plain-text password = %v, want a bcrypt error", err)
	}
}

// A bcrypt hash cut short, or with a character after it (a newline or space
// copied with it), is refused at setup: no password would ever match it, and
// its user would lose password login without a word.
func TestBcryptHashOfAnotherLengthRefused(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{string(h[:59]), string(h) + "\n", string(h) + " "} {
		s := &Server{DataDir: t.TempDir(), PasswordHashes: map[string]string{"root": bad}}
		if _, err := s.PublicKeys(); err == nil || !strings.Contains(err.Error(), "want 60") {
			t.Errorf("setup with the %d-character hash %q = %v, want it refused as not 60 characters", len(bad), bad, err)
		}
	}
	s := &Server{DataDir: t.TempDir(), PasswordHashes: map[string]string{"root": string(h)}}
	if _, err := s.PublicKeys(); err != nil {
		t.Errorf("setup with a whole hash: %v", err)
	}
}

// A 60-character bcrypt hash with a character bcrypt does not write in its
// salt or hash (one copied wrong, a newline) is refused at setup, as one of
// another length is: bcrypt.Cost reads only the version and cost, and no
// password would ever match it.
func TestBcryptHashWithBadCharactersRefused(t *testing.T) {
	const alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	with := func(i int, c byte) string {
		b := append([]byte(nil), h...)
		b[i] = c
		return string(b)
	}
	// The hash's last character holds 4 bits and 2 that bcrypt leaves 0.
	last := strings.IndexByte(alphabet, h[59])
	for _, bad := range []string{
		with(7, '!'),   // the salt's first character
		with(20, '\n'), // a newline in the salt
		with(29, '-'),  // the hash's first character
		with(59, '='),  // a base64 padding character
		with(59, alphabet[last+1]),
	} {
		if _, err := bcrypt.Cost([]byte(bad)); err != nil {
			t.Fatalf("bcrypt.Cost(%q): %v; the case is one it reads", bad, err)
		}
		if bcrypt.CompareHashAndPassword([]byte(bad), []byte("pw")) == nil {
			t.Fatalf("%q matches its password", bad)
		}
		s := &Server{DataDir: t.TempDir(), PasswordHashes: map[string]string{"root": bad}}
		if _, err := s.PublicKeys(); err == nil || !strings.Contains(err.Error(), "is not bcrypt: 60 characters, want 60 of its alphabet as bcrypt writes them") {
			t.Errorf("setup with the hash %q = %v, want it refused as not bcrypt", bad, err)
		}
	}
	// The salt's last character holds 2 bits and 4 that bcrypt ignores when
	// it reads the salt: other low bits there still match. Without a minor
	// version ("$2$"), the salt starts a character earlier, and bcrypt
	// ignores a 60th character.
	saltLast := strings.IndexByte(alphabet, h[28])
	for _, good := range []string{with(28, alphabet[saltLast^1]), "$2$" + string(h[4:]) + "x"} {
		if err := bcrypt.CompareHashAndPassword([]byte(good), []byte("pw")); err != nil {
			t.Fatalf("%q does not match its password: %v", good, err)
		}
		s := &Server{DataDir: t.TempDir(), PasswordHashes: map[string]string{"root": good}}
		if _, err := s.PublicKeys(); err != nil {
			t.Errorf("setup with the hash %q, which matches: %v", good, err)
		}
	}
}

func TestAuthorizedKeysOptions(t *testing.T) {
	e := newEnv(t, nil)
	k := e.key.PublicKey()
	for _, tc := range []struct {
		name, opts, cmd string
		loginOK         bool
		want            string
	}{
		{name: "command forced", opts: `command="echo forced:$SSH_ORIGINAL_COMMAND"`, cmd: "echo mine", loginOK: true, want: "forced:echo mine"},
		{name: "from loopback", opts: `from="127.0.0.0/8"`, cmd: "echo ok", loginOK: true, want: "ok"},
		{name: "from wildcard", opts: `from="127.0.0.*"`, cmd: "echo ok", loginOK: true, want: "ok"},
		{name: "from other", opts: `from="10.0.0.0/8"`, loginOK: false},
		{name: "from negated", opts: `from="!127.0.0.1,127.0.0.0/8"`, loginOK: false},
		{name: "expired", opts: `expiry-time="20200101"`, loginOK: false},
		{name: "not yet expired", opts: `expiry-time="29990101"`, cmd: "echo ok", loginOK: true, want: "ok"},
		{name: "unknown option", opts: `frobnicate`, loginOK: false},
		// sshd applies verify-required to security keys only
		// (TestSecurityKeyTouch).
		{name: "verify-required", opts: `verify-required`, cmd: "echo ok", loginOK: true, want: "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.writeAuthorizedKeys("root", authorizedLine(tc.opts, k))
			c, err := e.dial("root", gossh.PublicKeys(e.key))
			if (err == nil) != tc.loginOK {
				t.Fatalf("login with %s: %v, want ok=%v", tc.opts, err, tc.loginOK)
			}
			if err != nil {
				return
			}
			defer c.Close()
			out, _, _ := run(t, c, tc.cmd, "")
			if strings.TrimSpace(out) != tc.want {
				t.Errorf("Run(%q) = %q, want %q", tc.cmd, out, tc.want)
			}
		})
	}
}

func TestNoPTYOption(t *testing.T) {
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine("no-pty", e.key.PublicKey()))
	c := e.login("root")
	s := openSession(t, c)
	if err := s.RequestPty("xterm", 24, 80, nil); err == nil {
		t.Error("pty-req granted despite no-pty")
	}
}

func TestCertificateAuth(t *testing.T) {
	ca, otherCA := newSigner(t), newSigner(t)
	var caFile string
	e := newEnv(t, func(e *testEnv, s *Server) {
		caFile = filepath.Join(e.dir, "user_ca.pub")
		writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
		s.TrustedUserCAKeysFiles = []string{caFile}
	})
	userKey := newSigner(t)
	for _, tc := range []struct {
		name    string
		signer  gossh.Signer
		user    string
		ok      bool
		cmd     string
		want    string
		noForce bool
	}{
		{name: "valid", signer: newCert(t, ca, userKey, nil), user: "root", ok: true, cmd: "echo hi", want: "hi"},
		{name: "wrong principal", signer: newCert(t, ca, userKey, nil), user: "alice", ok: false},
		{name: "expired", signer: newCert(t, ca, userKey, func(c *gossh.Certificate) {
			c.ValidBefore = uint64(time.Now().Add(-time.Minute).Unix())
		}), user: "root"},
		{name: "not yet valid", signer: newCert(t, ca, userKey, func(c *gossh.Certificate) {
			c.ValidAfter = uint64(time.Now().Add(time.Hour).Unix())
		}), user: "root"},
		{name: "untrusted CA", signer: newCert(t, otherCA, userKey, nil), user: "root"},
		{name: "host cert", signer: newCert(t, ca, userKey, func(c *gossh.Certificate) { c.CertType = gossh.HostCert }), user: "root"},
		{name: "force-command", signer: newCert(t, ca, userKey, func(c *gossh.Certificate) {
			c.CriticalOptions = map[string]string{"force-command": "echo forced"}
		}), user: "root", ok: true, cmd: "echo hi", want: "forced"},
		{name: "source-address ok", signer: newCert(t, ca, userKey, func(c *gossh.Certificate) {
			c.CriticalOptions = map[string]string{"source-address": "127.0.0.1/32,::1"}
		}), user: "root", ok: true, cmd: "echo hi", want: "hi"},
		{name: "source-address other", signer: newCert(t, ca, userKey, func(c *gossh.Certificate) {
			c.CriticalOptions = map[string]string{"source-address": "10.0.0.0/8"}
		}), user: "root"},
		{name: "unknown critical option", signer: newCert(t, ca, userKey, func(c *gossh.Certificate) {
			c.CriticalOptions = map[string]string{"verify-required": ""}
		}), user: "root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := e.dial(tc.user, gossh.PublicKeys(tc.signer))
			if (err == nil) != tc.ok {
				t.Fatalf("login: %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				return
			}
			defer c.Close()
			out, _, _ := run(t, c, tc.cmd, "")
			if strings.TrimSpace(out) != tc.want {
				t.Errorf("Run(%q) = %q, want %q", tc.cmd, out, tc.want)
			}
		})
	}
	// x/crypto will not sign a certificate without principals; sshd must
	// refuse one anyway (it would be valid for every user).
	if _, err := e.srv.authorizeCert(&connState{}, &account{Name: "root"}, &gossh.Certificate{CertType: gossh.UserCert, SignatureKey: ca.PublicKey()}); err == nil || !strings.Contains(err.Error(), "no principals") {
		t.Errorf("certificate without principals: %v, want refused", err)
	}
	var sawCert bool
	for _, ev := range e.eventsOf(EventLoginSuccess) {
		if ev.CertID == "test-cert" && ev.CertSerial == 42 && ev.KeyFingerprint == gossh.FingerprintSHA256(userKey.PublicKey()) {
			sawCert = true
		}
	}
	if !sawCert {
		t.Errorf("no login-success event with the certificate id: %+v", e.eventsOf(EventLoginSuccess))
	}
}

// TestTrustedCAFileOthersCouldWrite: a trusted user CA keys file trusts
// certificates for every user, root too; one that others could have written
// (the file, or a directory above it that is not sticky) is ignored, as an
// authorized_keys file would be. A CA key written into a 0666 file logged in
// as root.
func TestTrustedCAFileOthersCouldWrite(t *testing.T) {
	ca := newSigner(t)
	var dir, caFile string
	e := newEnv(t, func(e *testEnv, s *Server) {
		dir = filepath.Join(e.dir, "ca")
		caFile = filepath.Join(dir, "user_ca.pub")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
		s.TrustedUserCAKeysFiles = []string{caFile}
	})
	cert := newCert(t, ca, newSigner(t), nil)
	login := func() error {
		c, err := e.dial("root", gossh.PublicKeys(cert))
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := login(); err != nil {
		t.Fatalf("CA file 0644 in a 0755 directory: %v", err)
	}
	for _, tc := range []struct {
		name      string
		file, dir os.FileMode
		ok        bool
	}{
		{"file world-writable", 0o666, 0o755, false},
		{"file group-writable", 0o664, 0o755, false},
		{"directory world-writable", 0o644, 0o777, false},
		{"directory sticky", 0o644, 0o777 | os.ModeSticky, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Chmod(caFile, tc.file); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.dir); err != nil {
				t.Fatal(err)
			}
			if err := login(); (err == nil) != tc.ok {
				t.Fatalf("login with a certificate of the CA: %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				if p, _ := e.srv.CheckLogins(); !strings.Contains(fmt.Sprint(p), "TrustedUserCAKeysFiles: "+caFile) {
					t.Errorf("CheckLogins does not name the CA file: %v", p)
				}
			}
		})
	}
}

func TestCertAuthorityLine(t *testing.T) {
	ca := newSigner(t)
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine(`cert-authority,principals="ops,admin",no-pty`, ca.PublicKey()))
	userKey := newSigner(t)
	ops := newCert(t, ca, userKey, func(c *gossh.Certificate) { c.ValidPrincipals = []string{"ops"} })
	if c, err := e.dial("root", gossh.PublicKeys(ops)); err != nil {
		t.Errorf("cert-authority login with principal ops: %v", err)
	} else {
		s, _ := c.NewSession()
		if err := s.RequestPty("xterm", 24, 80, nil); err == nil {
			t.Error("no-pty on the cert-authority line not applied")
		}
		s.Close()
		c.Close()
	}
	alice := newCert(t, ca, userKey, func(c *gossh.Certificate) { c.ValidPrincipals = []string{"root"} })
	if err := e.checkRefused("root", gossh.PublicKeys(alice)); err != nil {
		t.Errorf("principal root, principals= lists only ops,admin: %v", err)
	}
	// The CA's own key is not a user key.
	if err := e.checkRefused("root", gossh.PublicKeys(ca)); err != nil {
		t.Errorf("the CA key itself: %v", err)
	}
}

func TestMaxAuthTries(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.MaxAuthTries = 2 })
	var signers []gossh.Signer
	for range 4 {
		signers = append(signers, newSigner(t))
	}
	signers = append(signers, e.key) // the good key comes too late
	_, err := e.dial("root", gossh.PublicKeys(signers...))
	if err == nil {
		t.Fatal("login succeeded after more failures than MaxAuthTries")
	}
}

func TestLoginGraceTime(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.LoginGraceTime = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = io.Copy(io.Discard, conn) // the banner, then EOF when the server gives up
	if err != nil {
		t.Fatalf("read: %v (want EOF from the grace timer)", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("closed after %v, before the grace time", d)
	}
	waitFor(t, "grace event", func() bool {
		for _, ev := range e.eventsOf(EventLoginFailure) {
			if ev.Reason == "login grace time exceeded" {
				return true
			}
		}
		return false
	})
}

func TestFailureRateLimit(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.MaxAuthFailures = 2
		s.AuthFailureWindow = time.Hour
	})
	bad := newSigner(t)
	for i := range 2 {
		if err := e.checkRefused("root", gossh.PublicKeys(bad)); err != nil {
			t.Fatalf("attempt %d with a bad key: %v", i, err)
		}
	}
	// The limiter counts a connection when its goroutine ends.
	waitFor(t, "failures counted", func() bool { return e.srv.limiter.blocked("127.0.0.1", time.Now()) })
	_, err := e.dial("root", gossh.PublicKeys(e.key))
	if err == nil {
		t.Fatal("login from a source over the failure limit succeeded")
	}
	var limited bool
	for _, ev := range e.eventsOf(EventLoginFailure) {
		limited = limited || strings.Contains(ev.Reason, "too many failed logins")
	}
	if !limited {
		t.Error("no rate-limit event")
	}
}

func TestFailureLimiterWindow(t *testing.T) {
	l := newFailureLimiter(2, time.Minute)
	t0 := time.Unix(1000, 0)
	l.fail("a", t0)
	l.fail("a", t0.Add(time.Second))
	if !l.blocked("a", t0.Add(2*time.Second)) {
		t.Error("not blocked after 2 failures")
	}
	if l.blocked("b", t0) {
		t.Error("another source blocked")
	}
	if l.blocked("a", t0.Add(61*time.Second)) {
		t.Error("still blocked after the window")
	}
	off := newFailureLimiter(-1, time.Minute)
	off.fail("a", t0)
	if off.blocked("a", t0) {
		t.Error("disabled limiter blocked")
	}
}

var _ = errors.New

func TestAuthorizedKeysStrictModes(t *testing.T) {
	e := newEnv(t, nil)
	file := filepath.Join(e.home("root"), ".ssh", "authorized_keys")
	sshDir := filepath.Dir(file)
	for _, tc := range []struct {
		name     string
		fileMode os.FileMode
		dirMode  os.FileMode
		owner    int
		ok       bool
	}{
		{"sane", 0o600, 0o700, 0, true},
		{"group writable file", 0o620, 0o700, 0, false},
		{"world writable .ssh", 0o600, 0o777, 0, false},
		{"owned by another user", 0o600, 0o700, 1000, os.Geteuid() != 0}, // chown needs root
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Chmod(file, tc.fileMode)
			os.Chmod(sshDir, tc.dirMode)
			os.Chown(file, tc.owner, tc.owner)
			defer func() {
				os.Chmod(file, 0o644)
				os.Chmod(sshDir, 0o755)
				os.Chown(file, testRootUID(), testRootUID())
			}()
			c, err := e.dial("root", gossh.PublicKeys(e.key))
			if c != nil {
				c.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("login with %s: %v, want ok=%v", tc.name, err, tc.ok)
			}
		})
	}
}

func TestLoginFilesMustBeRegular(t *testing.T) {
	ca := newSigner(t)
	cert := newCert(t, ca, newSigner(t), nil)
	for _, tc := range []struct {
		name string
		// point makes the file under test at fifo a FIFO (and sets up what
		// else the login needs).
		point func(t *testing.T, e *testEnv, s *Server, fifo string)
		cert  bool
		ok    bool
	}{
		{name: "authorized_keys", ok: true, point: func(t *testing.T, e *testEnv, s *Server, fifo string) {
			// The FIFO is root's first file; the key is in the second,
			// which must still be read.
			s.AuthorizedKeysFiles = []string{fifo, "%h/.ssh/authorized_keys2"}
			writeFile(t, filepath.Join(e.home("root"), ".ssh", "authorized_keys2"), authorizedLine("", e.key.PublicKey()))
		}},
		{name: "trusted CA keys", cert: true, ok: true, point: func(t *testing.T, e *testEnv, s *Server, fifo string) {
			caFile := filepath.Join(e.dir, "user_ca.pub")
			writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
			s.TrustedUserCAKeysFiles = []string{fifo, caFile}
		}},
		{name: "passwd", ok: false, point: func(t *testing.T, e *testEnv, s *Server, fifo string) {
			s.PasswdFile = fifo
		}},
		{name: "group", ok: true, point: func(t *testing.T, e *testEnv, s *Server, fifo string) {
			s.GroupFile = fifo
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opened func() bool
			e := newEnv(t, func(e *testEnv, s *Server) {
				fifo := filepath.Join(e.dir, "fifo")
				opened = mkfifo(t, fifo)
				tc.point(t, e, s, fifo)
			})
			signer := e.key
			if tc.cert {
				signer = cert
			}
			c, err := e.dial("root", gossh.PublicKeys(signer))
			if c != nil {
				c.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("login with %s a FIFO: %v, want ok=%v", tc.name, err, tc.ok)
			}
			if opened() {
				t.Errorf("the server opened the FIFO (%s) for reading; want it refused unopened", tc.name)
			}
			if tc.name != "group" && len(e.logs.logged("not a regular file but a named pipe")) == 0 {
				t.Errorf("no log line says the %s file is a named pipe", tc.name)
			}
		})
	}
}

func TestAuthorizedKeysOverlongLine(t *testing.T) {
	e := newEnv(t, nil)
	garbage := strings.Repeat("Z", maxKeysLine+1)
	// Two over-long lines with a comment between them; the key after them
	// must still log in.
	e.writeAuthorizedKeys("root", garbage+"\n# comment\n"+garbage+"\n"+authorizedLine("", e.key.PublicKey()))
	e.login("root").Close()
	if warns := e.logs.logged("level=WARN", "over-long lines skipped"); len(warns) != 1 {
		t.Fatalf("%d warnings about the over-long lines, want 1: %.300q", len(warns), warns)
	}
	// One line per read of the file (a login reads it for the key query
	// and again for the signature), with the first line's number: a
	// warning, then the same at debug.
	path := filepath.Join(e.home("root"), ".ssh", "authorized_keys")
	lines := e.logs.logged("over-long lines skipped")
	for _, l := range lines {
		if !strings.Contains(l, "path="+path) || !strings.Contains(l, "line=1 count=2") {
			t.Errorf("log line = %q, want path=%s line=1 count=2", l, path)
		}
	}
	if n := len(e.logs.logged("authorized keys")); n != len(lines) {
		t.Errorf("%d log lines about authorized keys, want only the %d about the over-long lines", n, len(lines))
	}
	if l := e.logs.logged("ZZZZZZZZ"); len(l) != 0 {
		t.Errorf("the over-long line's content was logged: %.100q", l[0])
	}
}

// TestAuthorizedKeysReadAsUser: a user's authorized_keys is read with the
// user's permissions, as sshd reads it (temporarily_use_uid), when the user
// could make it lead elsewhere. alice linked hers to a file only root may
// read, holding her key: the server, reading it as root, let her log in, and
// so told her whether a key was in a file she cannot read (and would have
// read /proc/kmsg for her, consuming the kernel's messages). Now what the
// kernel would refuse alice is not read: a root-only file, one in a
// directory only root may search, one reached by a ".." out of such a
// directory; one she may read through a supplementary group is read. The
// log and CheckLogins say why, without the file's words. A keys file that
// alice cannot make lead elsewhere is read as root, as before
// (/etc/porthole/authorized_keys, 0600, for every user). Afterwards every
// thread of the server has root's filesystem ids and groups again.
func TestAuthorizedKeysReadAsUser(t *testing.T) {
	needRoot(t)
	e := newEnv(t, nil)
	key := string(gossh.MarshalAuthorizedKey(e.key.PublicKey()))
	// In alice's home, which is hers: a file linked to from e.dir, below
	// the sticky /tmp, is refused before it is read (safeWalk checks where
	// the link leads). She may rename these directories, but not enter them.
	home := e.home("alice")
	mk := func(rel string, mode os.FileMode, gid int, data string) string {
		t.Helper()
		p := filepath.Join(home, rel)
		var err error
		if data == "" {
			err = os.Mkdir(p, mode)
		} else {
			err = os.WriteFile(p, []byte(data), mode)
		}
		if err == nil {
			err = os.Chmod(p, mode)
		}
		if err == nil {
			err = os.Chown(p, 0, gid)
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	mk("vault", 0o700, 0, "")
	rootOnly := mk("vault/root_keys", 0o600, 0, "Hunter2-token for the backup server\n"+key)
	mk("vault/open", 0o755, 0, "")
	mk("pub", 0o755, 0, "")
	mk("pub/keys", 0o644, 0, key)
	mk("wheel", 0o750, 10, "") // alice is in wheel (gid 10), not as her primary group
	mk("wheel/keys", 0o640, 10, key)
	mk("shut", 0o755, 0, "")
	mk("shut/root_keys", 0o600, 0, key)
	ak := filepath.Join(home, ".ssh", "authorized_keys")

	for _, tc := range []struct {
		name, target string
		ok           bool
	}{
		{"root-only file in a directory only root may search", rootOnly, false},
		{"readable file in a directory only root may search", mk("vault/readable", 0o644, 0, key), false},
		{"out of a directory only root may search by ..", home + "/vault/open/../../pub/keys", false}, // not filepath.Join, which takes the ".." away
		{"relative, out of such a directory by ..", "../vault/open/../../pub/keys", false},
		{"root-only file in a directory alice may search", filepath.Join(home, "shut", "root_keys"), false},
		{"file alice may read", filepath.Join(home, "pub", "keys"), true},
		{"file alice may read through a supplementary group", filepath.Join(home, "wheel", "keys"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(ak)
			if err := os.Symlink(tc.target, ak); err != nil {
				t.Fatal(err)
			}
			said := len(e.logs.logged("reading authorized keys", "path="+ak, "read as user alice, as sshd reads it", "permission denied"))
			c, err := e.dial("alice", gossh.PublicKeys(e.key))
			if err == nil {
				c.Close()
			}
			switch {
			case tc.ok && err != nil:
				t.Fatalf("alice's login with her key in %s: %v", tc.target, err)
			case !tc.ok && err == nil:
				t.Fatalf("alice logged in with a key in %s, which she may not read", tc.target)
			case !tc.ok:
				if len(e.logs.logged("reading authorized keys", "path="+ak, "read as user alice, as sshd reads it", "permission denied")) == said {
					t.Errorf("no log line says alice may not read %s", ak)
				}
			}
		})
	}

	t.Run("CheckLogins", func(t *testing.T) {
		os.Remove(ak)
		if err := os.Symlink(rootOnly, ak); err != nil {
			t.Fatal(err)
		}
		problems, _ := e.srv.CheckLogins()
		found := false
		for _, p := range problems {
			if strings.Contains(p.Error(), ak+" (user alice): read as user alice, as sshd reads it: stat ") {
				found = true
			}
		}
		if !found {
			t.Errorf("CheckLogins() = %v, want a problem saying alice may not read %s", problems, ak)
		}
	})

	// The admin's file, for every user: alice can change nothing on its
	// way (the sticky /tmp above it has no entry of hers), so it is read as
	// root, though only root may read it.
	t.Run("the admin's root-only file", func(t *testing.T) {
		admin := filepath.Join(e.dir, "etc-porthole")
		if err := os.Mkdir(admin, 0o700); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(admin, "authorized_keys")
		if err := os.WriteFile(p, []byte(key), 0o600); err != nil {
			t.Fatal(err)
		}
		alice, err := e.srv.lookupUser("alice")
		if err != nil {
			t.Fatal(err)
		}
		// safeWalk then refuses it for a world-writable /tmp above it, which
		// a device's /etc/porthole does not have: but only once it is open.
		keys, _, _, err := e.srv.loadKeysFile(p, alice)
		if !(err == nil && len(keys) == 1 || err != nil && strings.Contains(err.Error(), "bad modes of ")) {
			t.Errorf("loadKeysFile(%s, alice) = %d keys, %v; want it read as root", p, len(keys), err)
		}
	})

	for _, l := range e.logs.logged() {
		if strings.Contains(strings.ToLower(l), "hunter2") {
			t.Errorf("the root-only file's content was logged: %q", l)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	groups := func(task string) (ids, groups string) {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task, "status"))
		if err != nil {
			return "", "" // the thread has ended
		}
		for _, l := range strings.Split(string(b), "\n") {
			switch f := strings.Fields(l); {
			case len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:"):
				ids += l + "\n"
			case len(f) > 0 && f[0] == "Groups:":
				groups = l
			}
		}
		return ids, groups
	}
	wantIDs, wantGroups := groups(fmt.Sprint(os.Getpid()))
	for _, task := range tasks {
		if ids, g := groups(task.Name()); ids != "" && (ids != wantIDs || g != wantGroups) {
			t.Errorf("thread %s has\n%s%s\nwant the main thread's\n%s%s", task.Name(), ids, g, wantIDs, wantGroups)
		}
	}
}

func TestMissingAuthorizedKeysLogged(t *testing.T) {
	e := newEnv(t, nil)
	path := filepath.Join(e.home("root"), ".ssh", "authorized_keys")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	e.refuse("root", gossh.PublicKeys(e.key))
	if len(e.logs.logged("level=DEBUG", "authorized keys file not found", "path="+path, "user=root")) == 0 {
		t.Errorf("no debug line names the missing %s", path)
	}
}

func TestNoLoginMethodWarning(t *testing.T) {
	ca := newSigner(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		euid      int
		make      []string // files to write a key to, under the test dir
		authKeys  []string // AuthorizedKeysFiles; DIR is the test dir
		caFiles   []string // TrustedUserCAKeysFiles; DIR is the test dir
		passwords bool
		warn      bool
	}{
		{name: "nothing configured", warn: true},
		{name: "per-user file missing", authKeys: []string{"%h/.ssh/authorized_keys"}, warn: true},
		{name: "per-user file of another user", make: []string{"alice/.ssh/authorized_keys"}, authKeys: []string{"%h/.ssh/authorized_keys"}},
		{name: "per-user file of a user who may not log in", euid: 1000, make: []string{"root/.ssh/authorized_keys"}, authKeys: []string{"%h/.ssh/authorized_keys"}, warn: true},
		{name: "per-user file of the server's user", euid: 1000, make: []string{"alice/.ssh/authorized_keys"}, authKeys: []string{"%h/.ssh/authorized_keys"}},
		{name: "relative path", make: []string{"root/.ssh/authorized_keys"}, authKeys: []string{".ssh/authorized_keys"}},
		// Fixed paths below a home: above it, the test dir is below the
		// sticky /tmp, which a login refuses above a key file (safePath).
		{name: "by user name", make: []string{"alice/keys/alice"}, authKeys: []string{"DIR/alice/keys/%u"}},
		{name: "fixed path", make: []string{"root/keys/all"}, authKeys: []string{"DIR/root/keys/all"}},
		{name: "fixed path below /tmp", make: []string{"keys/all"}, authKeys: []string{"DIR/keys/all"}, warn: true},
		{name: "fixed path missing", authKeys: []string{"DIR/keys/all"}, warn: true},
		{name: "password hashes", passwords: true},
		{name: "trusted CA", make: []string{"ca.pub"}, caFiles: []string{"DIR/ca.pub"}},
		{name: "trusted CA file missing", caFiles: []string{"DIR/ca.pub"}, warn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			chmodWalkUp(t, dir)
			writeFile(t, filepath.Join(dir, "passwd"), fmt.Sprintf("root:x:0:0:root:%s/root:/bin/sh\nalice:x:1000:1000:alice:%s/alice:/bin/sh\n", dir, dir))
			for _, f := range tc.make {
				os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
				writeFile(t, filepath.Join(dir, f), authorizedLine("", ca.PublicKey()))
			}
			expand := func(paths []string) []string {
				var out []string
				for _, p := range paths {
					out = append(out, strings.ReplaceAll(p, "DIR", dir))
				}
				return out
			}
			logger, logs := newTestLogger(t)
			s := &Server{
				DataDir:                filepath.Join(dir, "data"),
				PasswdFile:             filepath.Join(dir, "passwd"),
				AuthorizedKeysFiles:    expand(tc.authKeys),
				TrustedUserCAKeysFiles: expand(tc.caFiles),
				Logger:                 logger,
				geteuid:                func() int { return tc.euid },
			}
			if tc.passwords {
				s.PasswordHashes = map[string]string{"root": string(hash)}
			}
			for range 2 {
				if _, err := s.PublicKeys(); err != nil {
					t.Fatal(err)
				}
			}
			want := 0
			if tc.warn {
				want = 1
			}
			if got := len(logs.logged("level=WARN", "no login method can work")); got != want {
				t.Errorf("%d warnings that no login method can work, want %d", got, want)
			}
		})
	}
}

// TestMaxAuthTriesCountsOfferedKeys: as with OpenSSH, a key refused at the
// client's query counts as a failed attempt, so the good key offered after
// MaxAuthTries refused ones does not log in (x/crypto lets MaxAuthTries refused
// queries go uncounted: sshd counts them itself), and one offered in time does.
func TestMaxAuthTriesCountsOfferedKeys(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.MaxAuthTries = 2 })
	bad := []gossh.Signer{newSigner(t), newSigner(t)}
	if err := e.checkRefused("root", gossh.PublicKeys(bad[0], bad[1], e.key)); err != nil {
		t.Errorf("the good key after 2 refused keys, MaxAuthTries 2: %v", err)
	}
	c, err := e.dial("root", gossh.PublicKeys(bad[0], e.key))
	if err != nil {
		t.Fatalf("the good key after 1 refused key, MaxAuthTries 2: %v", err)
	}
	c.Close()
}

// TestMaxAuthTriesTellsTheClient: a key offered after MaxAuthTries refused
// ones (6, the default) is refused with "Too many authentication failures"
// as OpenSSH's sshd disconnects with; x/crypto cannot send that disconnect
// here, so it comes as a banner, which ssh, dbclient and PuTTY show, and the
// connection is closed. Without it the client was refused quietly and went
// on to its next method (PuTTY to a password prompt).
func TestMaxAuthTriesTellsTheClient(t *testing.T) {
	e := newEnv(t, nil)
	var signers []gossh.Signer
	for range 6 {
		signers = append(signers, newSigner(t))
	}
	signers = append(signers, e.key) // authorized, offered 7th
	var mu sync.Mutex
	var banners string
	cfg := e.clientConfig("root", gossh.PublicKeys(signers...))
	cfg.BannerCallback = func(msg string) error {
		mu.Lock()
		banners += msg
		mu.Unlock()
		return nil
	}
	c, err := gossh.Dial("tcp", e.addr, cfg)
	if err == nil {
		c.Close()
		t.Fatal("login succeeded with a key offered after MaxAuthTries refused ones")
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.ToLower(banners), "too many authentication failures") {
		t.Errorf("the client was told %q (error %v), want \"Too many authentication failures\"", banners, err)
	}
	waitFor(t, "the connection closed", func() bool {
		return len(e.logs.logged("too many authentication failures (MaxAuthTries)", "remote=")) == 1
	})
}

// TestCertAuthorityNoTouchRequired: for a certificate trusted by a
// cert-authority line, OpenSSH (sshauthopt_merge) drops the user-presence
// check only when both the line (no-touch-required) and the certificate
// (extension no-touch-required) allow it.
func TestCertAuthorityNoTouchRequired(t *testing.T) {
	ca, userKey := newSigner(t), newSigner(t)
	for _, tc := range []struct {
		name, opts string
		certExt    bool
		want       bool
	}{
		{name: "certificate only", opts: "cert-authority", certExt: true, want: false},
		{name: "line only", opts: "cert-authority,no-touch-required", certExt: false, want: false},
		{name: "both", opts: "cert-authority,no-touch-required", certExt: true, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.writeAuthorizedKeys("root", authorizedLine(tc.opts, ca.PublicKey()))
			cs := newCert(t, ca, userKey, func(c *gossh.Certificate) {
				if tc.certExt {
					c.Extensions["no-touch-required"] = ""
				}
			})
			a, err := e.srv.lookupUser("root")
			if err != nil {
				t.Fatal(err)
			}
			p, err := e.srv.authorizeCert(&connState{}, a, cs.PublicKey().(*gossh.Certificate))
			if err != nil {
				t.Fatalf("authorizeCert: %v", err)
			}
			if _, got := p.Extensions[extNoTouch]; got != tc.want {
				t.Errorf("%s, certificate extension %v: no-touch-required = %v, want %v", tc.opts, tc.certExt, got, tc.want)
			}
		})
	}
}

// skSigner is a software sk-ssh-ed25519@openssh.com key: it signs as a FIDO
// security key does, saying in its flags whether it was touched.
type skSigner struct {
	priv    ed25519.PrivateKey
	pub     gossh.PublicKey
	touched bool
}

func newSKSigner(t *testing.T) *skSigner {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := gossh.ParsePublicKey(gossh.Marshal(struct {
		Name, Key, Application string
	}{gossh.KeyAlgoSKED25519, string(pub), "ssh:"}))
	if err != nil {
		t.Fatal(err)
	}
	return &skSigner{priv: priv, pub: pk, touched: true}
}

func (s *skSigner) PublicKey() gossh.PublicKey { return s.pub }

// Sign signs as PROTOCOL.u2f says: the hashes of the application and the
// data around the flags and a counter; flag 0x01 is the touch.
func (s *skSigner) Sign(_ io.Reader, data []byte) (*gossh.Signature, error) {
	var flags byte
	if s.touched {
		flags = 0x01
	}
	app, msg := sha256.Sum256([]byte("ssh:")), sha256.Sum256(data)
	rest := binary.BigEndian.AppendUint32([]byte{flags}, 1)
	signed := append(append(app[:], rest...), msg[:]...)
	return &gossh.Signature{Format: gossh.KeyAlgoSKED25519, Blob: ed25519.Sign(s.priv, signed), Rest: rest}, nil
}

// TestSecurityKeyTouch: a security key's signature must say it was touched
// unless no-touch-required allows otherwise, as in sshd: on a key's line;
// for a certificate, on its cert-authority line and in the certificate
// both. The line's option never reached x/crypto (a touch was always
// needed), and x/crypto honours a certificate's extension alone, so a
// certificate with it and a line without it is refused, touched or not.
func TestSecurityKeyTouch(t *testing.T) {
	ca := newSigner(t)
	for _, tc := range []struct {
		name, opts      string
		cert, certExt   bool
		touched, wantOK bool
	}{
		{name: "key touched", opts: "", touched: true, wantOK: true},
		{name: "key untouched", opts: "", wantOK: false},
		{name: "key untouched, no-touch-required", opts: "no-touch-required", wantOK: true},
		{name: "certificate touched", opts: "cert-authority", cert: true, touched: true, wantOK: true},
		{name: "certificate untouched", opts: "cert-authority", cert: true, wantOK: false},
		{name: "certificate untouched, line only", opts: "cert-authority,no-touch-required", cert: true, wantOK: false},
		{name: "certificate untouched, certificate only", opts: "cert-authority", cert: true, certExt: true, wantOK: false},
		{name: "certificate touched, certificate only", opts: "cert-authority", cert: true, certExt: true, touched: true, wantOK: false},
		{name: "certificate untouched, both", opts: "cert-authority,no-touch-required", cert: true, certExt: true, wantOK: true},
		{name: "key untouched, touch-required last", opts: "no-touch-required,touch-required", wantOK: false},
		{name: "key touched, touch-required", opts: "touch-required", touched: true, wantOK: true},
		// The user-verified flag cannot be checked: refused.
		{name: "key touched, verify-required", opts: "verify-required", touched: true, wantOK: false},
		{name: "key touched, no-verify-required last", opts: "verify-required,no-verify-required", touched: true, wantOK: true},
		{name: "certificate touched, verify-required", opts: "cert-authority,verify-required", cert: true, touched: true, wantOK: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			sk := newSKSigner(t)
			sk.touched = tc.touched
			var signer gossh.Signer = sk
			if tc.cert {
				e.writeAuthorizedKeys("root", authorizedLine(tc.opts, ca.PublicKey()))
				signer = newCert(t, ca, sk, func(c *gossh.Certificate) {
					if tc.certExt {
						c.Extensions["no-touch-required"] = ""
					}
				})
			} else {
				e.writeAuthorizedKeys("root", authorizedLine(tc.opts, sk.PublicKey()))
			}
			c, err := e.dial("root", gossh.PublicKeys(signer))
			if err == nil {
				c.Close()
			}
			if (err == nil) != tc.wantOK {
				t.Errorf("%q, touched %v, certificate extension %v: login error %v, want success %v", tc.opts, tc.touched, tc.certExt, err, tc.wantOK)
			}
		})
	}
}

// TestEmptyPasswordHashesOffersNoPassword: PasswordHashes "nil means password
// authentication is off"; the agent's config says "Empty: password login is
// off", and password_hashes = {} decodes to an empty, non-nil map. An empty
// map must not offer "password" either: clients would prompt for a password
// no one has.
func TestEmptyPasswordHashesOffersNoPassword(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.PasswordHashes = map[string]string{} })
	_, err := e.dial("root", gossh.Password("guess"))
	if err == nil {
		t.Fatal("password login succeeded with no password hashes")
	}
	if strings.Contains(err.Error(), "[none password]") {
		t.Errorf("empty PasswordHashes offers password authentication: %v", err)
	}
}

// TestEmptyPasswordRefused: an empty password never logs in, as with
// OpenSSH's default PermitEmptyPasswords no, even when a user's hash is the
// hash of "" (one made from an unset variable, or of a password prompt
// answered with Enter): a client's password prompt answered with Enter
// logged in.
func TestEmptyPasswordRefused(t *testing.T) {
	empty, err := bcrypt.GenerateFromPassword(nil, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(_ *testEnv, s *Server) { s.PasswordHashes = map[string]string{"root": string(empty)} })
	if err := e.checkRefused("root", gossh.Password("")); err != nil {
		t.Errorf("empty password, hash of the empty password: %v", err)
	}
}

// TestForcedCommandShellHasNoOriginalCommand: with a forced command, sshd
// sets SSH_ORIGINAL_COMMAND only when the client asked for a command
// (session.c: original_command is NULL for a shell). Wrappers test whether
// it is set to tell an interactive login from a command.
func TestForcedCommandShellHasNoOriginalCommand(t *testing.T) {
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine(`command="echo ${SSH_ORIGINAL_COMMAND+set}:$SSH_ORIGINAL_COMMAND"`, e.key.PublicKey()))
	c := e.login("root")
	s := openSession(t, c)
	var out strings.Builder
	s.Stdout = &out
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	s.Wait()
	if got := strings.TrimSpace(out.String()); got != ":" {
		t.Errorf("shell request with a forced command: got %q, want \":\" (SSH_ORIGINAL_COMMAND unset)", got)
	}
	if got, _, _ := run(t, c, "", ""); strings.TrimSpace(got) != "set:" {
		t.Errorf("exec of an empty command: got %q, want \"set:\"", strings.TrimSpace(got))
	}
}

// TestCertAuthorityEmptyPrincipals: principals="" on a cert-authority line
// lists no principal, so sshd (match_principals_option) accepts none; it
// must not fall back to the login name as if there were no principals=.
func TestCertAuthorityEmptyPrincipals(t *testing.T) {
	ca, userKey := newSigner(t), newSigner(t)
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine(`cert-authority,principals=""`, ca.PublicKey()))
	if err := e.checkRefused("root", gossh.PublicKeys(newCert(t, ca, userKey, nil))); err != nil {
		t.Errorf(`certificate for principal root, cert-authority line with principals="": %v`, err)
	}
}

// TestTrustedCAKeyWithOptionsNotTrusted: TrustedUserCAKeys holds bare public
// keys. sshd (sshkey_in_file) cannot read a line with options and trusts no
// CA of the file; here the options were parsed and dropped, so a line copied
// from authorized_keys, `from="10.0.0.0/8" <CA>` or
// `cert-authority,principals="ops" <CA>`, trusted the CA without the
// restriction it reads as having.
func TestTrustedCAKeyWithOptionsNotTrusted(t *testing.T) {
	ca, userKey := newSigner(t), newSigner(t)
	for _, opts := range []string{`from="10.0.0.0/8"`, `cert-authority,principals="ops"`, `expiry-time="20200101"`} {
		t.Run(opts, func(t *testing.T) {
			e := newEnv(t, func(e *testEnv, s *Server) {
				caFile := e.dir + "/user_ca.pub"
				writeFile(t, caFile, authorizedLine(opts, ca.PublicKey()))
				s.TrustedUserCAKeysFiles = []string{caFile}
			})
			e.refuse("root", gossh.PublicKeys(newCert(t, ca, userKey, nil)))
		})
	}
}

// TestSHA1SignaturesRefused: OpenSSH's sshd refuses SHA-1 RSA signatures
// ("ssh-rsa"): as a certificate's CA signature since 8.2
// (CASignatureAlgorithms, where a chosen-prefix collision forges a
// certificate), and for user authentication since 8.8
// (PubkeyAcceptedAlgorithms). x/crypto's server defaults accept both.
func TestSHA1SignaturesRefused(t *testing.T) {
	newRSA := func() gossh.AlgorithmSigner {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		s, err := gossh.NewSignerFromKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return s.(gossh.AlgorithmSigner)
	}
	sha1Only := func(s gossh.AlgorithmSigner) gossh.Signer {
		m, err := gossh.NewSignerWithAlgorithms(s, []string{gossh.KeyAlgoRSA})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	rsaCA := newRSA()
	e := newEnv(t, func(e *testEnv, s *Server) {
		caFile := filepath.Join(e.dir, "user_ca.pub")
		writeFile(t, caFile, authorizedLine("", rsaCA.PublicKey()))
		s.TrustedUserCAKeysFiles = []string{caFile}
	})

	t.Run("certificate signed with ssh-rsa", func(t *testing.T) {
		cert := newCert(t, sha1Only(rsaCA), newSigner(t), nil)
		if f := cert.PublicKey().(*gossh.Certificate).Signature.Format; f != gossh.KeyAlgoRSA {
			t.Fatalf("CA signature format %q, want ssh-rsa", f)
		}
		c, err := e.dial("root", gossh.PublicKeys(cert))
		if err == nil {
			c.Close()
			t.Fatal("a certificate whose CA signature is SHA-1 (ssh-rsa) logged in; sshd's CASignatureAlgorithms refuses it")
		}
	})
	t.Run("user key signing with ssh-rsa", func(t *testing.T) {
		user := newRSA()
		e.writeAuthorizedKeys("root", authorizedLine("", user.PublicKey()))
		c, err := e.dial("root", gossh.PublicKeys(sha1Only(user)))
		if err == nil {
			c.Close()
			t.Fatal("an RSA key signing with SHA-1 (ssh-rsa) logged in; sshd's PubkeyAcceptedAlgorithms refuses it")
		}
	})
}

// TestPrincipalsOnPlainKeyRefused: sshd's auth_authorise_keyopts
// (auth2-pubkeyfile.c) denies a line with principals= but without
// cert-authority ("principals on non-CA key"): the list only means something
// for certificates, and a writer who put it on a plain key meant a
// restriction that would otherwise be silently dropped.
func TestPrincipalsOnPlainKeyRefused(t *testing.T) {
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine(`principals="ops"`, e.key.PublicKey()))
	e.refuse("root", gossh.PublicKeys(e.key))
}
