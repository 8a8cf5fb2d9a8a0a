package sshd

import (
	"crypto/rand"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// TestCertLineRefusalFallsThrough: a cert-authority line whose options
// cannot be merged with the certificate's (command= and the certificate's
// force-command differ) refuses only that line, as sshd's sshauthopt_merge
// failure does: the next line, or the trusted CA, decides. It refused the
// login outright. The refusal says why the line that came closest refused.
func TestCertLineRefusalFallsThrough(t *testing.T) {
	ca := newSigner(t)
	userKey := newSigner(t)
	forced := newCert(t, ca, userKey, func(c *gossh.Certificate) {
		c.CriticalOptions = map[string]string{"force-command": "echo cert"}
	})
	const differ = "certificate force-command and authorized_keys command= differ"
	for _, tc := range []struct {
		name      string
		lines     string
		trustedCA bool
		cert      gossh.Signer
		want      string // the command's output, or with refused the refusal
		refused   bool
	}{
		{name: "second line admits",
			lines: authorizedLine(`cert-authority,command="echo line1"`, ca.PublicKey()) +
				authorizedLine(`cert-authority,command="echo cert",no-pty`, ca.PublicKey()),
			cert: forced, want: "cert"},
		{name: "trusted CA admits",
			lines:     authorizedLine(`cert-authority,command="echo line"`, ca.PublicKey()),
			trustedCA: true, cert: forced, want: "cert"},
		{name: "no other line",
			lines: authorizedLine(`cert-authority,command="echo line"`, ca.PublicKey()),
			cert:  forced, refused: true, want: differ},
		{name: "the closest refusal is kept",
			lines: authorizedLine(`cert-authority,principals="ops",command="echo line"`, ca.PublicKey()) +
				authorizedLine(`cert-authority,principals="nobody"`, ca.PublicKey()),
			trustedCA: true, // which wants the principal root
			cert: newCert(t, ca, userKey, func(c *gossh.Certificate) {
				c.ValidPrincipals = []string{"ops"}
				c.CriticalOptions = map[string]string{"force-command": "echo cert"}
			}),
			refused: true, want: differ},
		{name: "source-address",
			lines:     authorizedLine(`cert-authority,principals="ops"`, ca.PublicKey()),
			trustedCA: true,
			cert: newCert(t, ca, userKey, func(c *gossh.Certificate) {
				c.ValidPrincipals = []string{"ops"}
				c.CriticalOptions = map[string]string{"source-address": "192.0.2.0/24"}
			}),
			refused: true, want: "not allowed by the certificate's source-address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(e *testEnv, s *Server) {
				if tc.trustedCA {
					caFile := filepath.Join(e.dir, "user_ca.pub")
					writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
					s.TrustedUserCAKeysFiles = []string{caFile}
				}
			})
			e.writeAuthorizedKeys("root", tc.lines)
			c, err := e.dial("root", gossh.PublicKeys(tc.cert))
			if (err != nil) != tc.refused {
				t.Fatalf("login: %v, want refused=%v", err, tc.refused)
			}
			if err == nil {
				defer c.Close()
				if out, _, _ := run(t, c, "echo hello", ""); strings.TrimSpace(out) != tc.want {
					t.Errorf("exec printed %q, want %q", out, tc.want)
				}
				return
			}
			a, err := e.srv.lookupUser("root")
			if err != nil {
				t.Fatal(err)
			}
			st := &connState{remote: "127.0.0.1:2222", ip: netip.MustParseAddr("127.0.0.1")}
			cert := tc.cert.PublicKey().(*gossh.Certificate)
			if _, err := e.srv.authorizeCert(st, a, cert); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("authorizeCert = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestCertLoginNamesCA: the login events and log lines of a certificate name
// the CA that signed it (ca_fingerprint), as sshd logs "CA ED25519 SHA256:…",
// for a login and for a refusal, where which CA it was tells a forgotten CA
// from a foreign one.
func TestCertLoginNamesCA(t *testing.T) {
	ca, otherCA := newSigner(t), newSigner(t)
	e := newEnv(t, func(e *testEnv, s *Server) {
		caFile := filepath.Join(e.dir, "user_ca.pub")
		writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
		s.TrustedUserCAKeysFiles = []string{caFile}
	})
	userKey := newSigner(t)
	for _, tc := range []struct {
		name string
		ca   gossh.Signer
		typ  EventType
		line string // the log line's message
	}{
		{"login", ca, EventLoginSuccess, "msg=login "},
		{"refused", otherCA, EventLoginFailure, `msg="login refused"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := e.dial("root", gossh.PublicKeys(newCert(t, tc.ca, userKey, nil)))
			if err == nil {
				c.Close()
			}
			want := gossh.FingerprintSHA256(tc.ca.PublicKey())
			waitFor(t, "the "+string(tc.typ)+" event", func() bool {
				for _, ev := range e.eventsOf(tc.typ) {
					if ev.CAFingerprint == want {
						return true
					}
				}
				return false
			})
			for _, ev := range e.eventsOf(tc.typ) {
				if ev.CAFingerprint == want && (ev.CertID != "test-cert" || ev.CertSerial != 42 || ev.KeyFingerprint != gossh.FingerprintSHA256(userKey.PublicKey())) {
					t.Errorf("%s event %+v, want the certificate's id, serial and key", tc.typ, ev)
				}
			}
			if len(e.logs.logged(tc.line, "cert=test-cert serial=42 ca="+want)) == 0 {
				t.Errorf("no %s log line names the CA %s", tc.line, want)
			}
		})
	}
	if ev := e.eventsOf(EventLoginSuccess); len(ev) != 1 || ev[0].CAFingerprint == gossh.FingerprintSHA256(otherCA.PublicKey()) {
		t.Errorf("login-success events %+v, want one, of the trusted CA", ev)
	}
}

// certSourceAddresses are source-address critical options and what a login
// with each from 127.0.0.1 gives: "" for a login, else words of the refusal.
var certSourceAddresses = []struct {
	sa   string
	want string
}{
	{"127.0.0.1", ""},
	{"127.1/32", ""},
	{"127.0.0.1/032", ""},
	{"127.000.000.001", ""},
	{"127.0.0.01", ""},
	{"127.1", ""},
	{"127.0.1", ""},
	{"0177.0.0.1", ""}, // octal
	{"2130706433", ""},
	{"10.0.0.0/8,127.1", ""},
	{"::1,127.0.0.0/8", ""},
	{"0127.0.0.1", saOther}, // octal: 87.0.0.1
	{"127.0.65535", saOther},
	{"::ffff:127.0.0.1", saOther}, // sshd compares an IPv4 client as IPv4
	{"127.0.0.2", saOther},
	{"0x7f.0.0.1", saInvalid}, // sshd allows no x (inet_aton would)
	{"127.0.0.*", saInvalid},
	{"127.0.0.1/", saInvalid},
	{"127.0.0.1/33", saInvalid},
	{"08.0.0.1", saInvalid},
	{"127.0.0.256", saInvalid},
	{"127.0.0.1.", saInvalid},
	{"1.2.3.4.5", saInvalid},
	{"127.0.0.1,", saInvalid},
	{"127.0.0.1 ", saInvalid},
	{"fe80::1%lo", saInvalid},
	{"0000000000000000000000000000000000000000000127.0.0.1", saInvalid}, // over 49 bytes
	{"127.1/8", saHostBits},
}

const (
	saInvalid  = "is not an address list"
	saHostBits = "has a CIDR block with bits set past its prefix length"
	saOther    = "not allowed by the certificate's source-address"
)

// TestCertSourceAddressForms: a certificate's source-address is read as
// sshd's addr_match_cidr_list reads it, addresses by inet_aton(3) (parseAddr),
// the mask length by strtoul: forms that ssh-keygen issues and OpenSSH 9.2's
// sshd accepts from 127.0.0.1 (checked with it: 127.1/32, 127.0.0.1/032,
// 127.000.000.001, 0177.0.0.1, 2130706433) were refused as not an address
// list; what sshd refuses still is. x/crypto's own check of the option, with
// net.ParseIP, must not refuse them either.
func TestCertSourceAddressForms(t *testing.T) {
	ca := newSigner(t)
	e := newEnv(t, func(e *testEnv, s *Server) {
		caFile := filepath.Join(e.dir, "user_ca.pub")
		writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
		s.TrustedUserCAKeysFiles = []string{caFile}
		s.MaxAuthFailures = 100 // most of these logins are refused
	})
	for _, tc := range certSourceAddresses {
		t.Run(tc.sa, func(t *testing.T) {
			cert := newCert(t, ca, newSigner(t), func(c *gossh.Certificate) {
				c.CriticalOptions = map[string]string{"source-address": tc.sa}
			})
			c, err := e.dial("root", gossh.PublicKeys(cert))
			if err == nil {
				c.Close()
			}
			if (err == nil) != (tc.want == "") {
				t.Fatalf("login from 127.0.0.1: %v, want ok=%v", err, tc.want == "")
			}
			a, err := e.srv.lookupUser("root")
			if err != nil {
				t.Fatal(err)
			}
			st := &connState{remote: "127.0.0.1:2222", ip: netip.MustParseAddr("127.0.0.1")}
			p, err := e.srv.authorizeCert(st, a, cert.PublicKey().(*gossh.Certificate))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("authorizeCert = %v", err)
				}
				// As x/crypto reads it: every entry a net.ParseIP or ParseCIDR form.
				for _, s := range strings.Split(p.CriticalOptions["source-address"], ",") {
					if _, _, err := net.ParseCIDR(s); err != nil && net.ParseIP(s) == nil {
						t.Errorf("source-address for x/crypto %q: %q is neither an IP nor a CIDR block", p.CriticalOptions["source-address"], s)
					}
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("authorizeCert = %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzCertSourceAddress: a certificate's source-address, which its holder
// presents, from a client address and against another address. A refusal
// leaves the login's Permissions as they were. What is accepted must let the
// login through x/crypto's own check of the Permissions' list, and so must
// the other address if the certificate's list allows it: a login needs both
// checks, so a refusal there would end one this check allowed. (x/crypto may
// allow more, ::ffff:127.0.0.1 for 127.0.0.1: this check has refused those.)
func FuzzCertSourceAddress(f *testing.F) {
	for _, tc := range certSourceAddresses {
		f.Add(tc.sa, []byte{127, 0, 0, 1}, []byte{10, 1, 2, 3})
	}
	f.Add("::1,10.0.0.0/8", []byte(net.IPv6loopback), []byte{10, 255, 255, 255})
	f.Add("::/0", []byte(net.IPv4(192, 0, 2, 1)), []byte(net.ParseIP("2001:db8::1")))
	f.Fuzz(func(t *testing.T, sa string, client, otherAddr []byte) {
		from, ok := netip.AddrFromSlice(client)
		if !ok {
			return
		}
		from = from.Unmap() // as remoteIP gives it
		st := &connState{remote: from.String(), ip: from}
		cert := &gossh.Certificate{Permissions: gossh.Permissions{CriticalOptions: map[string]string{"source-address": sa}}}
		p := &gossh.Permissions{}
		if err := checkSourceAddress(st, cert, p); err != nil {
			if p.CriticalOptions != nil {
				t.Fatalf("checkSourceAddress(%q) refused (%v) and set %v", sa, err, p.CriticalOptions)
			}
			return
		}
		canon, ok := p.CriticalOptions["source-address"]
		if !ok {
			t.Fatalf("checkSourceAddress(%q) from %v accepted without a source-address for x/crypto", sa, from)
		}
		if !xcryptoSourceAddress(client, canon) {
			t.Fatalf("checkSourceAddress(%q) from %v accepted, as %q, which x/crypto refuses", sa, from, canon)
		}
		to, ok := netip.AddrFromSlice(otherAddr)
		if !ok {
			return
		}
		if matchFrom(to, splitList(sa)) && !xcryptoSourceAddress(otherAddr, canon) {
			t.Fatalf("source-address %q allows %v, which x/crypto refuses as %q", sa, to, canon)
		}
	})
}

// xcryptoSourceAddress is x/crypto's checkSourceAddress (ssh/server.go), which
// checks the Permissions' source-address after the login is decided: whether
// the list allows a client at ip.
func xcryptoSourceAddress(ip net.IP, list string) bool {
	for _, s := range strings.Split(list, ",") {
		if allowed := net.ParseIP(s); allowed != nil {
			if allowed.Equal(ip) {
				return true
			}
		} else if _, n, err := net.ParseCIDR(s); err != nil {
			return false
		} else if n.Contains(ip) {
			return true
		}
	}
	return false
}

// TestCertAuthorityLineChecksTheCertificate: a certificate trusted by a
// cert-authority line of authorized_keys is checked as one trusted by
// TrustedUserCAKeysFiles is (TestCertificateAuth): its dates, its critical
// options and the CA's signature over it. A certificate that names the
// line's CA as its signer but was signed by another key, or one that has
// expired, would otherwise let in whoever holds any key.
func TestCertAuthorityLineChecksTheCertificate(t *testing.T) {
	ca, otherCA, userKey := newSigner(t), newSigner(t), newSigner(t)
	e := newEnv(t, nil)
	e.writeAuthorizedKeys("root", authorizedLine(`cert-authority,principals="ops"`, ca.PublicKey()))
	ops := func(c *gossh.Certificate) { c.ValidPrincipals = []string{"ops"} }
	forged := &gossh.Certificate{Key: userKey.PublicKey(), CertType: gossh.UserCert, KeyId: "forged",
		ValidPrincipals: []string{"ops"}, ValidBefore: gossh.CertTimeInfinity,
		Permissions: gossh.Permissions{Extensions: map[string]string{"permit-pty": ""}}}
	if err := forged.SignCert(rand.Reader, otherCA); err != nil {
		t.Fatal(err)
	}
	forged.SignatureKey = ca.PublicKey() // claims the line's CA; the signature is otherCA's
	forgedSigner, err := gossh.NewCertSigner(forged, userKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		signer gossh.Signer
		ok     bool
	}{
		{"valid", newCert(t, ca, userKey, ops), true},
		{"expired", newCert(t, ca, userKey, func(c *gossh.Certificate) {
			ops(c)
			c.ValidAfter, c.ValidBefore = uint64(time.Now().Add(-2*time.Hour).Unix()), uint64(time.Now().Add(-time.Hour).Unix())
		}), false},
		{"not yet valid", newCert(t, ca, userKey, func(c *gossh.Certificate) {
			ops(c)
			c.ValidAfter = uint64(time.Now().Add(time.Hour).Unix())
			c.ValidBefore = uint64(time.Now().Add(2 * time.Hour).Unix())
		}), false},
		{"unknown critical option", newCert(t, ca, userKey, func(c *gossh.Certificate) {
			ops(c)
			c.CriticalOptions = map[string]string{"verify-required": ""}
		}), false},
		{"signature not the CA's", forgedSigner, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := e.dial("root", gossh.PublicKeys(tc.signer))
			if err == nil {
				c.Close()
			}
			if ok := err == nil; ok != tc.ok {
				t.Errorf("login by a certificate trusted by a cert-authority line: %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// TestSecurityKeyLineStops: an authorized_keys line that admits a security
// key on a condition the server cannot check (verify-required; for a
// certificate, the touch its cert-authority line requires where the
// certificate waives it) refuses the login, as sshd's login ends at that
// line (the signature then meets the condition, under the line's options,
// or fails). No later line, nor TrustedUserCAKeysFiles trusting the same CA,
// may admit the key without the line's command= and restrict.
func TestSecurityKeyLineStops(t *testing.T) {
	ca := newSigner(t)
	for _, tc := range []struct {
		name, opts  string
		plain       bool // the key's own line, then a line without options
		certNoTouch bool
	}{
		{name: "certificate waives the touch, line does not", opts: `cert-authority,restrict,command="echo line"`, certNoTouch: true},
		{name: "cert-authority line with verify-required", opts: `cert-authority,verify-required,restrict,command="echo line"`},
		{name: "key line with verify-required", opts: `verify-required,restrict,command="echo line"`, plain: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(e *testEnv, s *Server) {
				caFile := filepath.Join(e.dir, "user_ca.pub")
				writeFile(t, caFile, authorizedLine("", ca.PublicKey()))
				s.TrustedUserCAKeysFiles = []string{caFile}
			})
			sk := newSKSigner(t)
			sk.touched = !tc.certNoTouch
			var signer gossh.Signer = sk
			if tc.plain {
				e.writeAuthorizedKeys("root", authorizedLine(tc.opts, sk.PublicKey())+authorizedLine("", sk.PublicKey()))
			} else {
				e.writeAuthorizedKeys("root", authorizedLine(tc.opts, ca.PublicKey()))
				signer = newCert(t, ca, sk, func(c *gossh.Certificate) {
					if tc.certNoTouch {
						c.Extensions["no-touch-required"] = ""
					}
				})
			}
			c, err := e.dial("root", gossh.PublicKeys(signer))
			if err != nil {
				if !isRefusal(err) {
					t.Fatalf("login: %v, want a refusal", err)
				}
				return
			}
			defer c.Close()
			out, _, _ := run(t, c, "echo shell", "")
			t.Errorf("%s: logged in past the line, without its command= and restrict (exec printed %q)", tc.opts, strings.TrimSpace(out))
		})
	}
}
