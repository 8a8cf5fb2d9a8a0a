package agent

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// secret is the fuzz seeds' password hash: an error may name a key, never repeat
// a value.
const secret = "hunter2-secret"

// secretValue finds the secret where it is a string value: right after "key ="
// and a string's opening quotes.
var secretValue = regexp.MustCompile(`=[ \t]*("""|'''|"|')` + secret)

// secretOnlyAsValue reports whether b has the secret, and only as a value: the
// fuzzer also writes it where a key goes, and keys are named in errors.
func secretOnlyAsValue(b []byte) bool {
	n := bytes.Count(b, []byte(secret))
	return n > 0 && len(secretValue.FindAll(b, -1)) == n
}

// FuzzParseConfig checks that the TOML config decoder never panics, that what it
// accepts is valid (Validate passes again, defaults are set), and that an error
// never repeats the seeded password hash value.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimalConfig))
	if b, err := os.ReadFile("porthole.example.toml"); err == nil {
		f.Add(b)
	}
	for _, extra := range []string{
		"[tunnel]\nmax_tunnels = 1000",
		"[services]\nWEB = \"unix:/run/x\"\nCAM = \"127.0.0.1:80\"",
		"[ssh]\npermit_local_forward = [\"loopback\", \"10.0.0.0/8\", \"[::1]:22\"]",
		"[ssh]\npassword_hashes = { root = \"hunter2-secret\" }",
		"[ssh]\npassword_hashes = { root = \"hunter2-secret\" }\nbogus = 1",
		"[ssh.password_hashes]\nroot = 'hunter2-secret' x",
		"[tunnel]\nping_interval = \"-1s\"",
		"[log]\nlevel = \"debug\"\nformat = \"json\"",
		"[services]\n\"CAM-2\" = 'unix:/run/cam.sock'\n[ssh.password_hashes]\nroot = \"\"\"$2y$10$x\"\"\"",
		"[ssh]\naccept_env = [\n  \"LANG\", # comment\n  'LC_*',\n]\nmax_sessions = 0x10",
		"[mqtt\n",
		"a = [[[[[[[[[[1]]]]]]]]]]",
	} {
		f.Add([]byte(minimalConfig + extra))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			if secretOnlyAsValue(b) && strings.Contains(err.Error(), secret) {
				t.Fatalf("ParseConfig error repeats a password hash value: %v", err)
			}
			return
		}
		if c.DataDir == "" || c.Tunnel.MaxTunnels <= 0 || len(c.Services) == 0 {
			t.Fatalf("ParseConfig(%q) accepted without defaults: %+v", b, c)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig(%q) accepted, then Validate = %v", b, err)
		}
		if _, err := localForwardPolicy(c.SSH.PermitLocalForward); err != nil {
			t.Fatalf("accepted permit_local_forward %q: %v", c.SSH.PermitLocalForward, err)
		}
	})
}
