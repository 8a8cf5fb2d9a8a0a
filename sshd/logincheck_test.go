package sshd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// A login refused because every authorized_keys file was ignored or missing
// says so, not "key not in authorized_keys", which sends the operator
// looking at the key.
func TestRefusalNamesIgnoredOrMissingFile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, e *testEnv, s *Server)
		want  []string
	}{
		{"below /tmp", func(t *testing.T, e *testEnv, s *Server) {
			// t.TempDir is below the sticky, world-writable /tmp, which sshd's
			// StrictModes refuses above a key file.
			p := filepath.Join(e.dir, "keys", "authorized_keys")
			os.MkdirAll(filepath.Dir(p), 0o755)
			writeFile(t, p, authorizedLine("", e.key.PublicKey()))
			s.AuthorizedKeysFiles = []string{p}
		}, []string{"authorized_keys file", "ignored", "bad modes of " + os.TempDir(), "1777"}},
		{"missing", func(t *testing.T, e *testEnv, s *Server) {
			s.AuthorizedKeysFiles = []string{"%h/.ssh/nonexistent"}
		}, []string{"no authorized_keys file", ".ssh/nonexistent not found"}},
		{"key not in the file", func(t *testing.T, e *testEnv, s *Server) {
			e.key = newSigner(t)
		}, []string{"key not in authorized_keys"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if fi, err := os.Stat(os.TempDir()); tc.name == "below /tmp" && (err != nil || fi.Mode().Perm() != 0o777) {
				t.Skipf("%s is not world-writable here", os.TempDir())
			}
			e := newEnv(t, func(e *testEnv, s *Server) { tc.setup(t, e, s) })
			e.refuse("root", gossh.PublicKeys(e.key))
			// A refused public key is reported when the connection ends.
			waitFor(t, "the login-failure event", func() bool { return len(e.eventsOf(EventLoginFailure)) > 0 })
			fails := e.eventsOf(EventLoginFailure)
			for _, w := range tc.want {
				if !strings.Contains(fails[0].Reason, w) {
					t.Errorf("refusal reason %q, want it to contain %q", fails[0].Reason, w)
				}
			}
		})
	}
}

func TestOctalMode(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		want string
	}{
		{0o755, "0755"},
		{os.ModeDir | os.ModeSticky | 0o777, "1777"},
		{os.ModeSetgid | 0o775, "2775"},
		{os.ModeSetuid | 0o4755&0o777, "4755"},
	} {
		if got := OctalMode(tc.mode); got != tc.want {
			t.Errorf("OctalMode(%v) = %s, want %s", tc.mode, got, tc.want)
		}
	}
}

// CheckLogins finds, as a login would, the files that cannot serve and
// whether some login method can work.
func TestCheckLogins(t *testing.T) {
	ca := newSigner(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tmp := os.TempDir()
	fi, err := os.Stat(tmp)
	sticky := err == nil && fi.Mode()&os.ModeSticky != 0
	for _, tc := range []struct {
		name      string
		euid      int
		files     map[string]string // files to write under the test dir: content ("KEY" is a key line)
		modes     map[string]os.FileMode
		authKeys  []string // DIR is the test dir
		caFiles   []string
		passwords map[string]string
		shadow    string // the shadow file next to passwd, if not ""
		ok        bool
		problems  []string // each a substring of one problem, in order
	}{
		{name: "good file", files: map[string]string{"root/ak": "KEY"}, authKeys: []string{"DIR/root/ak"}, ok: true},
		{name: "below a sticky directory", files: map[string]string{"keys/ak": "KEY"}, authKeys: []string{"DIR/keys/ak"},
			problems: []string{"AuthorizedKeysFiles: DIR/keys/ak is ignored at login (user root): bad modes of " + tmp + ": 1777"}},
		{name: "group-writable file", files: map[string]string{"root/ak": "KEY"}, modes: map[string]os.FileMode{"root/ak": 0o664},
			authKeys: []string{"DIR/root/ak"}, problems: []string{"DIR/root/ak is ignored at login (user root): bad modes of DIR/root/ak: 0664"}},
		{name: "ignored file, but a CA works", files: map[string]string{"keys/ak": "KEY", "ca.pub": "KEY"}, authKeys: []string{"DIR/keys/ak"},
			caFiles: []string{"DIR/ca.pub"}, ok: true, problems: []string{"DIR/keys/ak is ignored"}},
		{name: "missing", authKeys: []string{"DIR/root/ak"}, problems: []string{"AuthorizedKeysFiles: DIR/root/ak does not exist (user root)"}},
		{name: "missing, a password works", authKeys: []string{"DIR/root/ak"}, passwords: map[string]string{"root": "HASH"}, ok: true},
		{name: "none configured", authKeys: []string{}},
		{name: "empty file", files: map[string]string{"root/ak": ""}, authKeys: []string{"DIR/root/ak"}, problems: []string{"DIR/root/ak (user root): holds no key"}},
		// No line is quoted: the file may be a link to one only root may read.
		{name: "only bad lines", files: map[string]string{"root/ak": "db_password:secret\n"}, authKeys: []string{"DIR/root/ak"},
			problems: []string{"holds no usable key (1 lines are not keys)"}},
		{name: "per-user file of another user", files: map[string]string{"alice/.ssh/authorized_keys": "KEY"}, authKeys: []string{"%h/.ssh/authorized_keys"}, ok: true},
		{name: "per-user file of a user who may not log in", euid: 1000, files: map[string]string{"root/.ssh/authorized_keys": "KEY"},
			authKeys: []string{"%h/.ssh/authorized_keys"}, problems: []string{"DIR/alice/.ssh/authorized_keys does not exist (user alice)"}},
		{name: "server's uid not in passwd", euid: 4242, files: map[string]string{"root/ak": "KEY"}, authKeys: []string{"DIR/root/ak"},
			problems: []string{"PasswdFile: DIR/passwd has no enabled account with uid 4242"}},
		// Why root may not is said: the keys are not what is missing.
		{name: "no account may log in", files: map[string]string{"root/ak": "KEY"}, authKeys: []string{"DIR/root/ak"},
			shadow:   "root:!:19000::::::\nalice:!:19000::::::\n",
			problems: []string{`PasswdFile: DIR/passwd has no account that may log in (sshd: user not allowed "root": `}},
		{name: "password of an unknown user", passwords: map[string]string{"nosuch": "HASH"}, authKeys: []string{},
			problems: []string{`PasswordHashes: nosuch cannot log in: sshd: unknown user "nosuch"`}},
		{name: "CA file missing", caFiles: []string{"DIR/ca.pub"}, authKeys: []string{}, problems: []string{"TrustedUserCAKeysFiles: DIR/ca.pub: stat DIR/ca.pub: no such file"}},
		{name: "CA file", files: map[string]string{"ca.pub": "KEY"}, caFiles: []string{"DIR/ca.pub"}, authKeys: []string{}, ok: true},
		// Each account is checked against its own shadow line, all read at once.
		{name: "per-user file of a locked user", files: map[string]string{"alice/.ssh/authorized_keys": "KEY"},
			authKeys: []string{"%h/.ssh/authorized_keys"}, shadow: "root:*:19000::::::\nalice:!:19000::::::\n",
			problems: []string{"DIR/root/.ssh/authorized_keys does not exist (user root)"}},
		{name: "per-user file of a user beside a locked one", files: map[string]string{"alice/.ssh/authorized_keys": "KEY"},
			authKeys: []string{"%h/.ssh/authorized_keys"}, shadow: "root:!:19000::::::\nalice:*:19000::::::\nalice:!:19000::::::\n", ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "below a sticky directory" && !sticky {
				t.Skipf("%s is not sticky here (a private TMPDIR, which TestMain replaces)", tmp)
			}
			dir := t.TempDir()
			chmodWalkUp(t, dir)
			writeFile(t, filepath.Join(dir, "passwd"), fmt.Sprintf("root:x:0:0:root:%s/root:/bin/sh\nalice:x:1000:1000:alice:%s/alice:/bin/sh\n", dir, dir))
			os.MkdirAll(filepath.Join(dir, "root"), 0o755)
			if tc.shadow != "" {
				writeFile(t, filepath.Join(dir, "shadow"), tc.shadow)
			}
			for name, content := range tc.files {
				p := filepath.Join(dir, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				writeFile(t, p, strings.ReplaceAll(content, "KEY", authorizedLine("", ca.PublicKey())))
				if m, ok := tc.modes[name]; ok {
					os.Chmod(p, m)
				}
			}
			expand := func(paths []string) []string {
				out := []string{}
				for _, p := range paths {
					out = append(out, strings.ReplaceAll(p, "DIR", dir))
				}
				return out
			}
			s := &Server{
				PasswdFile:             filepath.Join(dir, "passwd"),
				AuthorizedKeysFiles:    expand(tc.authKeys),
				TrustedUserCAKeysFiles: expand(tc.caFiles),
				geteuid:                func() int { return tc.euid },
			}
			if tc.passwords != nil {
				s.PasswordHashes = map[string]string{}
				for u := range tc.passwords {
					s.PasswordHashes[u] = string(hash)
				}
			}
			problems, ok := s.CheckLogins()
			if ok != tc.ok {
				t.Errorf("CheckLogins() ok = %v, want %v (problems %v)", ok, tc.ok, problems)
			}
			if len(problems) != len(tc.problems) {
				t.Fatalf("CheckLogins() = %v, want %d problems: %q", problems, len(tc.problems), tc.problems)
			}
			for i, p := range problems {
				if want := strings.ReplaceAll(tc.problems[i], "DIR", dir); !strings.Contains(p.Error(), want) {
					t.Errorf("problem %d = %q, want it to contain %q", i, p, want)
				}
				if strings.Contains(p.Error(), "secret") {
					t.Errorf("problem %d = %q quotes the file", i, p)
				}
			}
		})
	}
}

// CheckLogins reads the shadow file once for all accounts: its allocations
// grow with the number of accounts, not with its square (it once read the
// whole file again for each account: 40 KB of garbage on a router with ten,
// which an idle agent keeps until its first collection).
func TestCheckLoginsReadsShadowOnce(t *testing.T) {
	allocs := func(n int) float64 {
		dir := t.TempDir()
		var passwd, shadow strings.Builder
		for i := range n {
			fmt.Fprintf(&passwd, "user%d:x:%d:%d::/:/bin/sh\n", i, 1000+i, 1000+i)
			fmt.Fprintf(&shadow, "user%d:*:19000:0:99999:7:::\n", i)
		}
		writeFile(t, filepath.Join(dir, "passwd"), passwd.String())
		writeFile(t, filepath.Join(dir, "shadow"), shadow.String())
		s := &Server{PasswdFile: filepath.Join(dir, "passwd"), AuthorizedKeysFiles: []string{}, geteuid: func() int { return 0 }}
		return testing.AllocsPerRun(3, func() { s.CheckLogins() })
	}
	small, large := allocs(25), allocs(200)
	if small == 0 {
		t.Fatal("CheckLogins allocated nothing for 25 accounts: it read no file")
	}
	// Linear: 8 times the accounts, 8 times the allocations (give or take
	// the map's growth); the quadratic read made it 40 times.
	if large > 12*small {
		t.Errorf("CheckLogins made %.0f allocations for 25 accounts and %.0f for 200: more than linear", small, large)
	}
}
