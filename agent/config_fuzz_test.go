package agent

import (
	"os"
	"strings"
	"testing"
)

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
			if strings.Contains(string(b), "hunter2-secret") && strings.Contains(err.Error(), "hunter2-secret") {
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
