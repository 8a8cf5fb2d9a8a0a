package sshd

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// What a login may do once in: each restriction of a certificate (its
// permit-* extensions, as ssh-keygen -O clear drops them) and of an
// authorized_keys line is checked with the request it restricts, next to
// the same request granted without the restriction, so that neither a
// restriction ignored nor a request refused for another reason passes.

// tryPTY, tryForward, tryAgent and tryListen ask for one thing on a logged-in
// client and say whether it was granted.
func tryPTY(t *testing.T, c *gossh.Client) bool {
	s := openSession(t, c)
	defer s.Close()
	return s.RequestPty("xterm", 24, 80, nil) == nil
}

func tryForward(t *testing.T, c *gossh.Client, echo string) bool {
	fc, err := c.Dial("tcp", echo)
	if err != nil {
		return false
	}
	echoThrough(t, fc)
	return true
}

func tryAgent(t *testing.T, c *gossh.Client) bool {
	keyring := agent.NewKeyring()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	if err := agent.ForwardToAgent(c, keyring); err != nil {
		t.Fatal(err)
	}
	s := openSession(t, c)
	defer s.Close()
	return agent.RequestAgentForwarding(s) == nil
}

func tryListen(c *gossh.Client, addr string) bool {
	l, err := c.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// TestCertificateExtensionsRestrict: a certificate grants a PTY, port
// forwarding and agent forwarding only with its permit-pty,
// permit-port-forwarding and permit-agent-forwarding extensions (sshd's
// sshauthopt_from_cert), whether its CA is trusted server-wide or by a
// cert-authority line.
func TestCertificateExtensionsRestrict(t *testing.T) {
	echo := echoServer(t)
	ca := newSigner(t)
	userKey := newSigner(t)
	for _, how := range []string{"TrustedUserCAKeysFiles", "cert-authority line"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t, func(e *testEnv, s *Server) {
				s.AgentForwarding = true
				if how == "TrustedUserCAKeysFiles" {
					caFile := filepath.Join(e.dir, "user_ca.pub")
					writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
					s.TrustedUserCAKeysFiles = []string{caFile}
				}
			})
			if how == "cert-authority line" {
				e.writeAuthorizedKeys("root", authorizedLine("cert-authority", ca.PublicKey()))
			}
			for _, tc := range []struct {
				ext                string // the permit-* extension left out; "" for none
				pty, forward, agnt bool
			}{
				{"", true, true, true},
				{"permit-pty", false, true, true},
				{"permit-port-forwarding", true, false, true},
				{"permit-agent-forwarding", true, true, false},
			} {
				name := "all permitted"
				if tc.ext != "" {
					name = "without " + tc.ext
				}
				t.Run(name, func(t *testing.T) {
					cert := newCert(t, ca, userKey, func(c *gossh.Certificate) { delete(c.Extensions, tc.ext) })
					c, err := e.dial("root", gossh.PublicKeys(cert))
					if err != nil {
						t.Fatalf("login: %v", err)
					}
					defer c.Close()
					if got := tryPTY(t, c); got != tc.pty {
						t.Errorf("pty-req granted = %v, want %v", got, tc.pty)
					}
					if got := tryForward(t, c, echo); got != tc.forward {
						t.Errorf("direct-tcpip to %s granted = %v, want %v", echo, got, tc.forward)
					}
					if got := tryAgent(t, c); got != tc.agnt {
						t.Errorf("auth-agent-req granted = %v, want %v", got, tc.agnt)
					}
				})
			}
		})
	}
}

// TestCertAuthorityLineDefaultPrincipal: a cert-authority line without
// principals= accepts a certificate only for the login name (sshd's
// auth2-pubkey: "principals" defaults to the user name); a certificate of
// the same CA for another user does not log in as root.
func TestCertAuthorityLineDefaultPrincipal(t *testing.T) {
	ca := newSigner(t)
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine("cert-authority", ca.PublicKey()))
	userKey := newSigner(t)
	for _, tc := range []struct {
		principals []string
		ok         bool
	}{
		{[]string{"root"}, true},
		{[]string{"alice", "root"}, true},
		{[]string{"alice"}, false},
		{[]string{"ops", "admin"}, false},
	} {
		t.Run(strings.Join(tc.principals, ","), func(t *testing.T) {
			cert := newCert(t, ca, userKey, func(c *gossh.Certificate) { c.ValidPrincipals = tc.principals })
			c, err := e.dial("root", gossh.PublicKeys(cert))
			if err == nil {
				c.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("login as root with a certificate for %q: %v, want ok=%v", tc.principals, err, tc.ok)
			}
		})
	}
}

// TestCertForceCommandAndLineCommand: a certificate's force-command and the
// command= of the cert-authority line that trusts its CA must agree, else the
// login is refused (sshd's sshauthopt_merge); when they agree, that command
// runs.
func TestCertForceCommandAndLineCommand(t *testing.T) {
	ca := newSigner(t)
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine(`cert-authority,command="echo line"`, ca.PublicKey()))
	userKey := newSigner(t)
	differ := newCert(t, ca, userKey, func(c *gossh.Certificate) {
		c.CriticalOptions = map[string]string{"force-command": "echo cert"}
	})
	// Not checkRefused: a login let in says which command it ran.
	if c, err := e.dial("root", gossh.PublicKeys(differ)); err == nil {
		out, _, _ := run(t, c, "echo asked", "")
		c.Close()
		t.Errorf("certificate force-command differing from command= logged in (ran %q)", strings.TrimSpace(out))
	} else if !isRefusal(err) {
		t.Errorf("certificate force-command differing from command=: %v, want the login refused (%s)", err, refusedText)
	}
	same := newCert(t, ca, userKey, func(c *gossh.Certificate) {
		c.CriticalOptions = map[string]string{"force-command": "echo line"}
	})
	c, err := e.dial("root", gossh.PublicKeys(same))
	if err != nil {
		t.Fatalf("certificate force-command equal to command=: %v", err)
	}
	defer c.Close()
	if out, _, _ := run(t, c, "echo asked", ""); strings.TrimSpace(out) != "line" {
		t.Errorf("ran %q, want the forced command's output %q", out, "line")
	}
}

// TestKeyLineNoAgentForwarding: no-agent-forwarding on an authorized_keys
// line refuses ssh -A even where the server allows agent forwarding.
func TestKeyLineNoAgentForwarding(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) { s.AgentForwarding = true })
	for _, tc := range []struct {
		opts string
		ok   bool
	}{
		{"", true},
		{"no-agent-forwarding", false},
		{"restrict", false},
		{"restrict,agent-forwarding", true},
	} {
		t.Run("opts="+tc.opts, func(t *testing.T) {
			e.writeAuthorizedKeys("root", authorizedLine(tc.opts, e.key.PublicKey()))
			c := e.login("root")
			defer c.Close()
			if got := tryAgent(t, c); got != tc.ok {
				t.Errorf("auth-agent-req with %q granted = %v, want %v", tc.opts, got, tc.ok)
			}
		})
	}
}

// TestRemoteForwardKeyOptions: no-port-forwarding and permitlisten= of the
// key's line apply to ssh -R as they do to ssh -L, under a server policy
// that allows the listen.
func TestRemoteForwardKeyOptions(t *testing.T) {
	e := newEnv(t, func(_ *testEnv, s *Server) {
		s.PermitRemoteForward = func(user, addr string, port uint32) bool { return addr == "127.0.0.1" }
	})
	port := freePortIn(t, 20000, 30000)
	other := freePortIn(t, 30001, 40000)
	listed := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	unlisted := net.JoinHostPort("127.0.0.1", strconv.Itoa(other))
	for _, tc := range []struct {
		opts string
		addr string
		ok   bool
	}{
		{"", listed, true},
		{"no-port-forwarding", listed, false},
		{"restrict", listed, false},
		{`permitlisten="` + listed + `"`, listed, true},
		{`permitlisten="` + listed + `"`, unlisted, false},
	} {
		t.Run(tc.opts+" "+tc.addr, func(t *testing.T) {
			e.writeAuthorizedKeys("root", authorizedLine(tc.opts, e.key.PublicKey()))
			c := e.login("root")
			defer c.Close()
			if got := tryListen(c, tc.addr); got != tc.ok {
				t.Errorf("tcpip-forward %s with %q granted = %v, want %v", tc.addr, tc.opts, got, tc.ok)
			}
		})
	}
}
