package main

import (
	"bufio"
	"bytes"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
)

// withConfig writes the device config of writeDevice with from replaced by to
// (or extra appended) and returns its path and data directory.
func withConfig(t *testing.T, from, to, extra string) (path, data string) {
	t.Helper()
	dev := writeDevice(t, t.TempDir())
	b, _ := os.ReadFile(dev.path)
	s := strings.Replace(string(b), from, to, 1) + extra
	os.WriteFile(dev.path, []byte(s), 0o600)
	return dev.path, dev.data
}

// What can never work refuses check-config and the agent alike, with exit 1:
// an init system must not restart the agent every few seconds for it.
func TestStartRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, from, to, extra string
		want                  []string
		agentToo              bool
	}{
		// By an absolute path either may be on storage not mounted yet
		// (TestFilesOnStorageNotThereYet); a relative one is read from
		// another working directory than meant.
		{name: "tunnel CA missing", extra: "[tunnel]\nca_file = \"nonexistent-ca.pem\"\n",
			want: []string{"config: tunnel.ca_file: stat nonexistent-ca.pem"}, agentToo: true},
		{name: "placeholders", from: `thing_name = "dev"`, to: `thing_name = "CHANGE-ME"`,
			want: []string{`thing_name: "CHANGE-ME" is still the example's placeholder`}, agentToo: true},
		{name: "example endpoint", from: `endpoint = "b:8883"`, to: `endpoint = "xxxxxxxxxxxxxx-ats.iot.eu-west-1.amazonaws.com:8883"`,
			want: []string{`mqtt.endpoint: "xxxxxxxxxxxxxx-ats.iot.eu-west-1.amazonaws.com:8883" is still the example's placeholder`}, agentToo: true},
		{name: "extra host key missing", extra: "[ssh]\nhost_keys = [\"nonexistent-hk\"]\n",
			want: []string{"config: ssh.host_keys: ", "nonexistent-hk", "unusable host key"}, agentToo: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, _ := withConfig(t, tc.from, tc.to, tc.extra)
			cmds := []string{"check-config"}
			if tc.agentToo {
				cmds = append(cmds, "agent")
			}
			for _, cmd := range cmds {
				code, _, errs := runCmd(t, nil, cmd, "-c", path)
				if code != exitUsage {
					t.Errorf("%s: exit %d, want %d: %s", cmd, code, exitUsage, errs)
				}
				for _, w := range tc.want {
					if !strings.Contains(errs, w) {
						t.Errorf("%s: stderr %q, want %q", cmd, errs, w)
					}
				}
			}
		})
	}
}

// SSH login files that a login would ignore are reported by check-config as
// warnings, which it prints and exits 0 with (keys may come after first boot).
func TestCheckConfigLoginWarnings(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("who may log in depends on the passwd file unless the agent runs as root; CI runs as root")
		}
		t.Skip("who may log in depends on the passwd file unless the agent runs as root; run as root (CI does)")
	}
	ak := hostenv.FileInTmp(t, "porthole-test-authorized_keys-")
	os.WriteFile(ak, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKhQb9QyJ0r1y0y5mR2hJ3fKpqkz6bq9Dq0Zt8ka5u1Y op\n"), 0o600)
	path, _ := withConfig(t, "", "", fmt.Sprintf("[ssh]\nauthorized_keys = [%q]\n", ak))
	code, out, errs := runCmd(t, nil, "check-config", "-c", path)
	if code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("check-config: exit %d, stdout %q, stderr %q; want ok", code, out, errs)
	}
	for _, w := range []string{
		path + ": warning: ssh.authorized_keys: " + ak + " is ignored at login (user root): bad modes of /tmp: 1777",
		path + ": warning: ssh: no login method can work",
	} {
		if !strings.Contains(errs, w) {
			t.Errorf("stderr %q, want %q", errs, w)
		}
	}
}

func TestKeygenRelativeDataDir(t *testing.T) {
	code, out, errs := runCmd(t, nil, "keygen", "-data-dir", "relative")
	if code != exitUsage || out != "" || !strings.Contains(errs, `-data-dir "relative" must be an absolute path`) {
		t.Fatalf("keygen -data-dir relative: %d %q %q", code, out, errs)
	}
	if _, err := os.Stat("relative"); !os.IsNotExist(err) {
		t.Fatalf("keygen made ./relative (stat: %v)", err)
	}
}

// TestEmptyPaths: an empty path is refused as keygen's -data-dir is, naming
// the flag; it said "open : no such file or directory".
func TestEmptyPaths(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check-config", "-c", ""}, "-c: empty"},
		{[]string{"agent", "-c", ""}, "-c: empty"},
		{[]string{"keygen", "-c", ""}, "-c: empty"},
		{[]string{"connect", "--token-file", "", "--region", noRegion}, "--token-file: empty"},
	} {
		code, out, errs := runCmd(t, nil, tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errs, tc.want) || strings.Contains(errs, "open :") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, code, out, errs, exitUsage, tc.want)
		}
	}
}

func TestVersionHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		code, out, errs := runCmd(t, nil, "version", arg)
		if code != 0 || errs != "" || !strings.Contains(out, "usage: porthole version") {
			t.Errorf("version %s: %d %q %q; want a usage line", arg, code, out, errs)
		}
	}
	if code, out, _ := runCmd(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "porthole ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// check-config refuses an expired device certificate; with -start, as the init
// scripts run it, it says so as a warning and passes: the agent starts with one
// and reads a renewed file before its next connection to the broker.
func TestCheckConfigStartExpiredCertificate(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cert, key := pki.ClientAt(t, "dev", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	path, _ := withConfig(t, "", "", "")
	b, _ := os.ReadFile(path)
	s := regexp.MustCompile(`(?m)^(cert|key)_file = .*$`).ReplaceAllStringFunc(string(b), func(l string) string {
		if strings.HasPrefix(l, "cert") {
			return fmt.Sprintf("cert_file = %q", cert)
		}
		return fmt.Sprintf("key_file = %q", key)
	})
	os.WriteFile(path, []byte(s), 0o600)
	const expired = " expired on 2020-01-02"
	if code, _, errs := runCmd(t, nil, "check-config", "-c", path); code != exitUsage || !strings.Contains(errs, "mqtt.cert_file: "+cert+expired) {
		t.Errorf("check-config: exit %d, stderr %q; want %d and the expiry", code, errs, exitUsage)
	}
	code, out, errs := runCmd(t, nil, "check-config", "-start", "-c", path)
	if code != 0 || !strings.Contains(out, "ok") || !strings.Contains(errs, "warning: mqtt.cert_file "+cert+expired) {
		t.Errorf("check-config -start: exit %d, stdout %q, stderr %q; want ok and the expiry as a warning", code, out, errs)
	}
	// Anything else that stops the agent still fails -start.
	os.WriteFile(path, []byte(strings.Replace(s, `thing_name = "dev"`, `thing_name = "CHANGE-ME"`, 1)), 0o600)
	if code, _, errs := runCmd(t, nil, "check-config", "-start", "-c", path); code != exitUsage || !strings.Contains(errs, "placeholder") {
		t.Errorf("check-config -start with a placeholder: exit %d, stderr %q; want %d", code, errs, exitUsage)
	}
}

// A data_dir on storage that is not mounted yet, so that a directory above it
// is missing, is what the agent's design calls a runtime failure: the agent
// exits 2, which init systems restart until the storage is there, and
// check-config -start (which the init scripts run first) warns and lets it
// start, as for a read-only parent. It was a configuration error (exit 1,
// "lstat …: no such file or directory"), which no init system restarts: after
// a boot where the storage came late the device stayed off until someone
// restarted the agent by hand.
func TestDataDirBelowMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	dev := writeDevice(t, dir)
	storage := filepath.Join(dir, "storage")
	data := filepath.Join(storage, "porthole")
	b, err := os.ReadFile(dev.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dev.path, bytes.Replace(b, []byte(dev.data), []byte(data), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, nil, "check-config", "-start", "-c", dev.path)
	if code != exitOK || !strings.Contains(errs, "warning: data_dir: "+storage+" does not exist") || !strings.Contains(errs, "exit (2)") {
		t.Errorf("check-config -start: exit %d, stderr %q; want %d and a warning that %s does not exist and the agent exits 2", code, errs, exitOK, storage)
	}
	code, _, errs = runCmd(t, nil, "agent", "-c", dev.path)
	if code != exitRuntime || !strings.Contains(errs, "data_dir: "+storage+" does not exist") || !strings.Contains(errs, "mkdir -p") {
		t.Errorf("agent: exit %d, stderr %q; want %d (runtime: the storage may come) naming %s and what to do", code, errs, exitRuntime, storage)
	}
	if _, err := os.Stat(storage); !os.IsNotExist(err) {
		t.Errorf("%s was made (stat: %v); the agent makes data_dir only, not what it is on", storage, err)
	}
}

// MQTT identity files on storage mounted later in boot (/persist, /mnt/data,
// beside a read-only root), or half renewed when the device rebooted (the new
// certificate, the old key), are what a data_dir on storage not there yet is:
// the agent exits 2, which init systems restart until the files load, and
// check-config, with -start (which the init scripts gate the start on) or
// without, warns and says ok. They were configuration errors (exit 1), which
// systemd's unit (RestartPreventExitStatus=1) does not restart and OpenWrt's
// init does not start: the device stayed off the network until someone
// restarted the agent by hand, though a renewal on disk was to bring it back.
// Files that say something else was put there still stop both (exit 1).
func TestIdentityFilesNotThereYet(t *testing.T) {
	dir := t.TempDir()
	dev := writeDevice(t, dir)
	_, otherKey := mqtttest.NewPKI(t).Client(t, "other")
	storage := filepath.Join(dir, "persist") // not mounted
	empty := filepath.Join(dir, "empty.key")
	os.WriteFile(empty, nil, 0o600)
	encrypted := filepath.Join(dir, "encrypted.key")
	os.WriteFile(encrypted, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")}), 0o600)
	b, err := os.ReadFile(dev.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, from, to string
		code           int
		want           []string
	}{
		{"CA not mounted yet", dev.ca, filepath.Join(storage, "ca.pem"), exitRuntime,
			[]string{"mqtt.ca_file: open " + filepath.Join(storage, "ca.pem") + ": no such file or directory"}},
		{"certificate not mounted yet", dev.cert, filepath.Join(storage, "device.pem.crt"), exitRuntime,
			[]string{"mqtt.cert_file: open " + filepath.Join(storage, "device.pem.crt") + ": no such file or directory"}},
		{"key not mounted yet", dev.key, filepath.Join(storage, "device.pem.key"), exitRuntime,
			[]string{"mqtt.key_file: open " + filepath.Join(storage, "device.pem.key") + ": no such file or directory"}},
		{"key not written yet", dev.key, empty, exitRuntime, []string{"mqtt.key_file: " + empty + " is empty"}},
		{"new certificate, old key", dev.key, otherKey, exitRuntime,
			[]string{"mqtt.cert_file: loading the key pair " + dev.cert + " and " + otherKey, "private key does not match public key"}},

		{"key is a directory", dev.key, dir, exitUsage, []string{"config: mqtt.key_file: " + dir + " is not a regular file"}},
		{"CA certificate as the device's", dev.cert, dev.ca, exitUsage, []string{"config: mqtt.cert_file: " + dev.ca + " holds a CA certificate"}},
		{"encrypted key", dev.key, encrypted, exitUsage, []string{"config: mqtt.key_file: " + encrypted + " is encrypted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(dev.path, bytes.Replace(b, []byte(`"`+tc.from+`"`), []byte(`"`+tc.to+`"`), 1), 0o600)
			for _, args := range [][]string{{"check-config", "-start"}, {"check-config"}} {
				code, out, errs := runCmd(t, nil, append(args, "-c", dev.path)...)
				switch {
				case tc.code == exitUsage && code != exitUsage:
					t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d", args, code, out, errs, exitUsage)
				case tc.code == exitRuntime && (code != exitOK || !strings.Contains(out, "ok") ||
					!strings.Contains(errs, dev.path+": warning: "+tc.want[0]) || !strings.Contains(errs, "the agent will exit (2) at start")):
					t.Errorf("%s: exit %d, stdout %q, stderr %q; want ok and a warning %q that the agent will exit (2)", args, code, out, errs, tc.want[0])
				}
				for _, w := range tc.want {
					if !strings.Contains(errs, w) {
						t.Errorf("%s: stderr %q, want %q", args, errs, w)
					}
				}
			}
			code, _, errs := runCmd(t, nil, "agent", "-c", dev.path)
			if code != tc.code {
				t.Errorf("agent: exit %d, stderr %q; want %d", code, errs, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("agent: stderr %q, want %q", errs, w)
				}
			}
		})
	}
	if _, err := os.Stat(storage); !os.IsNotExist(err) {
		t.Errorf("%s was made (stat: %v)", storage, err)
	}
}

// A tunnel.ca_file or an ssh.host_keys file on storage mounted later in boot
// (/persist, /mnt/data), or a CA file not written whole yet, is what MQTT
// files not there yet are (TestIdentityFilesNotThereYet): the agent exits 2,
// which init systems restart until it is there, and check-config warns and
// says ok. Both were configuration errors (exit 1), which no init system
// restarts: the device stayed off the network until someone restarted the
// agent by hand. What says something else was put there stops both (exit 1).
func TestFilesOnStorageNotThereYet(t *testing.T) {
	dir := t.TempDir()
	dev := writeDevice(t, dir)
	storage := filepath.Join(dir, "persist") // not mounted
	ca, err := os.ReadFile(dev.ca)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, mode)
		os.Chmod(p, mode)
		return p
	}
	empty := write("empty.pem", nil, 0o600)
	cut := write("cut.pem", ca[:bytes.Index(ca, []byte("-----END "))], 0o600)
	garbage := write("garbage", []byte("not a certificate nor a key\n"), 0o600)
	openKey := filepath.Join(dir, "open_key")
	writeHostKey(t, openKey, 0o644)
	missingCA, missingKey := filepath.Join(storage, "ca.pem"), filepath.Join(storage, "ssh_host_ecdsa_key")
	b, err := os.ReadFile(dev.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, extra string
		code        int
		want        string
	}{
		{"tunnel CA not mounted yet", "[tunnel]\nca_file = " + strconv.Quote(missingCA), exitRuntime,
			"tunnel.ca_file: stat " + missingCA + ": no such file or directory"},
		{"tunnel CA not written yet", "[tunnel]\nca_file = " + strconv.Quote(empty), exitRuntime, "tunnel.ca_file: " + empty + " is empty"},
		{"tunnel CA written halfway", "[tunnel]\nca_file = " + strconv.Quote(cut), exitRuntime, "tunnel.ca_file: " + cut + " ends before its -----END line"},
		{"host key not mounted yet", "[ssh]\nhost_keys = [" + strconv.Quote(missingKey) + "]", exitRuntime,
			"ssh.host_keys: reading host key " + missingKey + ": stat " + missingKey + ": no such file or directory"},

		{"tunnel CA garbage", "[tunnel]\nca_file = " + strconv.Quote(garbage), exitUsage, "config: tunnel.ca_file: no PEM certificate in " + garbage},
		{"host key garbage", "[ssh]\nhost_keys = [" + strconv.Quote(garbage) + "]", exitUsage, garbage},
		{"host key too open", "[ssh]\nhost_keys = [" + strconv.Quote(openKey) + "]", exitUsage, "permissions 0644 are too open"},
		{"host key missing by a relative path", "[ssh]\nhost_keys = [\"ssh_host_missing_key\"]", exitUsage, "ssh_host_missing_key"},
		{"host key not mounted yet, and one garbage", "[ssh]\nhost_keys = [" + strconv.Quote(missingKey) + ", " + strconv.Quote(garbage) + "]",
			exitUsage, garbage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(dev.path, append(append(b[:len(b):len(b)], tc.extra...), '\n'), 0o600)
			for _, args := range [][]string{{"check-config", "-start"}, {"check-config"}} {
				code, out, errs := runCmd(t, nil, append(args, "-c", dev.path)...)
				switch {
				case tc.code == exitUsage && (code != exitUsage || !strings.Contains(errs, tc.want)):
					t.Errorf("%s: exit %d, stderr %q; want %d and %q", args, code, errs, exitUsage, tc.want)
				case tc.code == exitRuntime && (code != exitOK || !strings.Contains(out, "ok") ||
					!strings.Contains(errs, dev.path+": warning: "+tc.want) || !strings.Contains(errs, "the agent will exit (2) at start")):
					t.Errorf("%s: exit %d, stdout %q, stderr %q; want ok and a warning %q that the agent will exit (2)", args, code, out, errs, tc.want)
				}
			}
			code, _, errs := runCmd(t, nil, "agent", "-c", dev.path)
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Errorf("agent: exit %d, stderr %q; want %d and %q", code, errs, tc.code, tc.want)
			}
		})
	}
	if _, err := os.Stat(storage); !os.IsNotExist(err) {
		t.Errorf("%s was made (stat: %v)", storage, err)
	}
}

// An endpoint with a password in it (mqtts://user:pass@broker, as other MQTT
// clients take it; a proxy URL put in tunnel.endpoint) is refused without the
// password in what check-config and the agent print: an init script sends it
// to syslog (log_err, procd's stderr), the SysV one to a log file.
func TestEndpointPasswordNotPrinted(t *testing.T) {
	const secret = "S3cretPassw0rd"
	for _, tc := range []struct{ from, to, extra string }{
		{from: `endpoint = "b:8883"`, to: `endpoint = "mqtts://dev:` + secret + `@b:8883"`},
		{from: `endpoint = "b:8883"`, to: `endpoint = "dev:` + secret + `@b:8883"`},
		{extra: "[tunnel]\nendpoint = \"wss://op:" + secret + "@tunnel.example.com\"\n"},
	} {
		path, _ := withConfig(t, tc.from, tc.to, tc.extra)
		for _, cmd := range []string{"check-config", "agent"} {
			code, _, errs := runCmd(t, nil, cmd, "-c", path)
			if code != exitUsage {
				t.Errorf("%s %s%s: exit %d, want %d", cmd, tc.to, tc.extra, code, exitUsage)
			}
			if strings.Contains(errs, secret) {
				t.Errorf("%s %s%s: the password is in stderr:\n%s", cmd, tc.to, tc.extra, errs)
			}
		}
	}
}

// A config that holds secrets (a proxy password in tunnel.https_proxy, the
// password hashes) and that other local users can read is said, as a key
// file's mode is (mqtt.key_file): an offline guess at a bcrypt hash, or the
// proxy's password as it is.
func TestCheckConfigWarnsReadableSecrets(t *testing.T) {
	path, _ := withConfig(t, "", "", "[tunnel]\nhttps_proxy = \"http://op:S3cretPassw0rd@proxy.example.com:3128\"\n")
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, nil, "check-config", "-c", path)
	if code != 0 {
		t.Fatalf("check-config: exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "0644") {
		t.Errorf("check-config on a config readable by all, with a proxy password in it: stderr %q, want a warning about its mode", errs)
	}
}

// nobody is the uid (and gid) the tests of an agent run as its own user run it as.
const nobody = 65534

// nobodyDevice is writeDevice for an agent run as uid nobody, as a non-root
// install has it: the config and the MQTT files are that user's, the test's
// directories are open to it, and data_dir is not made. It returns them and a
// copy of this test binary that nobody may run (go test's directory is root's
// alone), for nobodyCommand. It needs root: CI runs as root.
func nobodyDevice(t *testing.T) (dev deviceFiles, bin string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the agent runs as uid 65534 here, which needs root; CI runs as root")
		}
		t.Skip("the agent runs as uid 65534 here, which needs root; run as root (CI does)")
	}
	dir := t.TempDir()
	dev = writeDevice(t, dir)
	for _, p := range []string{filepath.Dir(dir), dir, filepath.Dir(dev.ca)} {
		os.Chmod(p, 0o755)
	}
	pki, _ := os.ReadDir(filepath.Dir(dev.ca))
	for _, e := range pki {
		if err := os.Chown(filepath.Join(filepath.Dir(dev.ca), e.Name()), nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(dev.path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "porthole")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return dev, bin
}

// nobodyCommand is porthole args, run by bin (nobodyDevice's) as uid nobody.
func nobodyCommand(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	return cmd
}

// TestDataDirTheAgentMayNotOpen: an agent run as its own user on a data_dir
// it may not open is a configuration error: exit 1, with the fix for the
// cause. On one of root's, mode 0700 (made by an installer run as root), that
// says whose the directory is and whose the agent. The agent exited 2
// ("data_dir: open …: permission denied" at its lock), which systemd restarts
// for ever, while check-config refused it (exit 1) naming the host key in it.
// On its own, mode 0000, the mode is the cause: chown, which the message
// said, would change nothing.
func TestDataDirTheAgentMayNotOpen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		owner int
		mode  os.FileMode
		want  string
	}{
		{"root's, 0700", 0, 0o700, " belongs to uid 0 (mode 0700) and the agent runs as uid 65534, which may not open it: chown -R 65534 DIR, or run the agent as uid 0"},
		{"its own, 0000", nobody, 0, " has mode 0000, which does not let its owner, the agent's user (uid 65534), open it: chmod 700 DIR"},
		// access(2) is asked for both: without x (0600) no file in it can be
		// reached, without r (0300) the lock cannot open it.
		{"its own, 0600", nobody, 0o600, " has mode 0600, which does not let its owner, the agent's user (uid 65534), open it: chmod 700 DIR"},
		{"its own, 0300", nobody, 0o300, " has mode 0300, which does not let its owner, the agent's user (uid 65534), open it: chmod 700 DIR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, bin := nobodyDevice(t)
			if err := os.Mkdir(dev.data, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dev.data, tc.owner, tc.owner); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dev.data, tc.mode); err != nil {
				t.Fatal(err)
			}
			want := "data_dir: " + dev.data + strings.ReplaceAll(tc.want, "DIR", dev.data)
			for _, args := range [][]string{{"check-config", "-start"}, {"agent"}} {
				var stderr bytes.Buffer
				cmd := nobodyCommand(bin, append(args, "-c", dev.path)...)
				cmd.Stderr = &stderr
				err := cmd.Run()
				if code := cmd.ProcessState.ExitCode(); code != exitUsage || !strings.Contains(stderr.String(), want) {
					t.Errorf("%s as uid %d on a data_dir %s: %v, exit %d, stderr %q; want %d and %q", args, nobody, tc.name, err, code, &stderr, exitUsage, want)
				}
			}
		})
	}
}

// TestSSHListenLowPortAsUser: an agent run as its own user with ssh.listen on
// a port below 1024 got "bind: permission denied" and tried again for ever,
// never saying why. check-config warns, and the agent's error line says it
// (the retries, at debug, do not).
func TestSSHListenLowPortAsUser(t *testing.T) {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err != nil || strings.TrimSpace(string(b)) != "1024" {
		t.Skipf("net.ipv4.ip_unprivileged_port_start is %q (%v) here, not 1024: every user may bind port 1023", b, err)
	}
	dev, bin := nobodyDevice(t)
	os.Mkdir(dev.data, 0o700)
	os.Chown(dev.data, nobody, nobody)
	f, err := os.OpenFile(dev.path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("[ssh]\nlisten = \"127.0.0.1:1023\"\n")
	f.Close()
	const hint = "ports below 1024 need root or CAP_NET_BIND_SERVICE (net.ipv4.ip_unprivileged_port_start), which the agent (uid 65534) does not have"

	var stderr bytes.Buffer
	check := nobodyCommand(bin, "check-config", "-start", "-c", dev.path)
	check.Stderr = &stderr
	if err := check.Run(); err != nil || !strings.Contains(stderr.String(), "warning: ssh.listen 127.0.0.1:1023: "+hint) {
		t.Errorf("check-config -start as uid %d: %v, stderr %q; want a warning %q", nobody, err, &stderr, hint)
	}

	agent := nobodyCommand(bin, "agent", "-c", dev.path)
	out, err := agent.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if line := sc.Text(); strings.Contains(line, "ssh.listen: cannot listen") {
			if !strings.Contains(line, "permission denied") || !strings.Contains(line, "hint=\""+hint+"\"") {
				t.Errorf("the agent as uid %d logged %q, want the error and the hint %q", nobody, line, hint)
			}
			return
		}
	}
	t.Errorf("the agent as uid %d ended without saying it cannot listen on 127.0.0.1:1023: %v", nobody, sc.Err())
}
