package sshd

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// TestQueriedKeyOptionsDoNotLeak (CVE-2024-45337, the misuse x/crypto/ssh
// warns of: options of a key a client only offered): a client offers
// (queries) key B, unrestricted, whose private half it lacks, then logs in
// with key A, restricted by command=. The session must get A's options.
// OpenSSH's ssh does exactly this for an IdentityFile whose private key is
// missing: it queries with the .pub and moves on when it cannot sign.
func TestQueriedKeyOptionsDoNotLeak(t *testing.T) {
	o := newOpenSSHEnv(t, nil)
	mk := func(name string) (string, gossh.PublicKey) {
		p := filepath.Join(o.dir, name)
		pub := writeEd25519Key(t, p)
		writeFile(t, p+".pub", string(gossh.MarshalAuthorizedKey(pub)))
		return p, pub
	}
	aFile, aKey := mk("id_a")
	bFile, bKey := mk("id_b")
	os.Remove(bFile) // only B.pub is left: query, then no signature
	for _, order := range []string{"B then A", "A then B"} {
		t.Run(order, func(t *testing.T) {
			o.writeAuthorizedKeys("root",
				authorizedLine("", bKey)+
					authorizedLine(`command="echo restricted",no-pty,no-port-forwarding`, aKey))
			ids := []string{"-i", bFile + ".pub", "-i", aFile}
			if order == "A then B" {
				ids = []string{"-i", aFile, "-i", bFile + ".pub"}
			}
			ssh := needProgram(t, "ssh")
			// o.opts() but its identity and LogLevel: these keys alone, and
			// -v for the line that shows the query accepted.
			args := []string{"-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
				"-o", "UserKnownHostsFile=" + o.knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
				"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-v"}
			args = append(args, ids...)
			args = append(args, "-p", o.port, "root@127.0.0.1", "echo UNRESTRICTED")
			out, errOut, code := o.run(t, nil, ssh, args...)
			if order == "B then A" && !strings.Contains(errOut, "Server accepts key: "+bFile+".pub") {
				t.Fatalf("the server did not accept the query of key B: the test proves nothing (exit %d):\n%s", code, errOut)
			}
			if strings.Contains(out, "UNRESTRICTED") {
				t.Fatalf("login by key A ran with key B's (unrestricted) options: %q", out)
			}
			if out != "restricted\n" {
				t.Fatalf("out = %q, want restricted", out)
			}
		})
	}
}

// queryOnly offers a public key it cannot sign with: x/crypto's client
// queries the key, and on the server's PK_OK calls Sign, which fails, ending
// the publickey method (the server saw the query only).
type queryOnly struct {
	pub   gossh.PublicKey
	asked *bool // Sign was called: the server accepted the query
}

func (q queryOnly) PublicKey() gossh.PublicKey { return q.pub }
func (q queryOnly) Sign(io.Reader, []byte) (*gossh.Signature, error) {
	*q.asked = true
	return nil, errors.New("no private key")
}

// dialQueryThenSign queries `queried` (accepted, never signed), then logs in
// with signer through a second publickey attempt (AuthCallback).
func dialQueryThenSign(e *testEnv, queried gossh.PublicKey, signer gossh.Signer) (*gossh.Client, error) {
	var asked bool
	cfg := e.clientConfig("root", gossh.PublicKeys(queryOnly{queried, &asked}))
	var n int
	cfg.AuthCallback = func(ctx *gossh.ClientAuthContext) (gossh.AuthMethod, error) {
		n++
		if n == 2 { // after "none" and the query-only attempt
			return gossh.PublicKeys(signer), nil
		}
		return nil, nil
	}
	c, err := gossh.Dial("tcp", e.addr, cfg)
	if !asked {
		e.t.Fatal("the server did not accept the queried key: the test proves nothing")
	}
	return c, err
}

// TestQueryOtherKeyThenSign: the Go-client form of CVE-2024-45337's attack.
func TestQueryOtherKeyThenSign(t *testing.T) {
	t.Run("restrictions", func(t *testing.T) {
		e := newEnv(t, nil)
		victim := newSigner(t) // unrestricted; the attacker knows only its public half
		attacker := newSigner(t)
		e.writeAuthorizedKeys("root", authorizedLine("", victim.PublicKey())+
			authorizedLine(`command="echo restricted",no-pty,no-port-forwarding,permitopen="127.0.0.1:1"`, attacker.PublicKey()))
		c, err := dialQueryThenSign(e, victim.PublicKey(), attacker)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		out, _, _ := run(t, c, "echo UNRESTRICTED", "")
		if strings.TrimSpace(out) != "restricted" {
			t.Errorf("attacker's key ran %q, want the forced command", out)
		}
		if _, err := c.Dial("tcp", "127.0.0.1:22"); err == nil {
			t.Errorf("port forwarding allowed for a no-port-forwarding key")
		}
	})
	t.Run("no-touch-required", func(t *testing.T) {
		e := newEnv(t, nil)
		waived := newSKSigner(t) // no-touch-required: the attacker knows its public half
		needsTouch := newSKSigner(t)
		needsTouch.touched = false // signs without a touch
		e.writeAuthorizedKeys("root", authorizedLine("no-touch-required", waived.PublicKey())+
			authorizedLine("", needsTouch.PublicKey()))
		c, err := dialQueryThenSign(e, waived.PublicKey(), needsTouch)
		if err == nil {
			c.Close()
			t.Fatal("an untouched signature of a key without no-touch-required logged in after another key's no-touch-required query")
		}
		// Control: the waived key itself, untouched, logs in after querying the other.
		waived.touched = false
		c, err = dialQueryThenSign(e, needsTouch.PublicKey(), waived)
		if err != nil {
			t.Fatalf("control: waived key untouched: %v", err)
		}
		c.Close()
	})
}
