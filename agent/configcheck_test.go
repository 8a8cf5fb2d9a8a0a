package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
	"github.com/porthole-iot/porthole/sshd"
)

// writeCert writes a self-signed certificate valid from notBefore to notAfter,
// and its key, into dir: the MQTT files New loads (it does not check the chain).
func writeCert(t *testing.T, dir string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dev-1"}, NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "dev.crt"), filepath.Join(dir, "dev.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// checkConfig is a config whose files exist, for Check and Warnings: extra is
// TOML appended after [mqtt] (so it starts with a table).
func checkConfig(t *testing.T, extra string) *Config {
	t.Helper()
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t)
	cert, key := writeCert(t, dir, time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`
thing_name = "dev-1"
data_dir = %q
[mqtt]
endpoint = "broker:8883"
ca_file = %q
cert_file = %q
key_file = %q
%s
`, filepath.Join(dir, "data"), pki.CAFile, cert, key, extra)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestPlaceholdersRefused(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"../buildroot/package/porthole/porthole.toml", []string{
			`config: thing_name: "CHANGE-ME" is still the example's placeholder`,
			`config: mqtt.endpoint: "CHANGE-ME-ats.iot.eu-west-1.amazonaws.com:8883" is still the example's placeholder`}},
		{"porthole.example.toml", []string{`config: mqtt.endpoint: "xxxxxxxxxxxxxx-ats.iot.eu-west-1.amazonaws.com:8883" is still the example's placeholder`}},
	} {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseConfig(b)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("ParseConfig(%s) = %v, want %q", tc.file, err, w)
			}
		}
	}
	for _, ep := range []string{"xxxx-ats.iot.eu-west-1.amazonaws.com", "mqtts://XXXXXXXX-ats.iot.us-east-1.amazonaws.com:443", "change-me.example:8883"} {
		if !placeholderEndpoint(ep) {
			t.Errorf("placeholderEndpoint(%q) = false", ep)
		}
	}
	for _, ep := range []string{"a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com:8883", "example-ats.iot.eu-west-1.amazonaws.com:8883", "x:8883", "127.0.0.1:8883", "mqtts://broker.lan"} {
		if placeholderEndpoint(ep) {
			t.Errorf("placeholderEndpoint(%q) = true", ep)
		}
	}
}

// A tunnel.ca_file that cannot serve is a configuration error at start, not a
// failure of every tunnel later. One not there yet (storage mounted later in
// boot, a file not written whole) is what mqtt.ca_file's is: New's error is
// notify.ErrNotReady (exit 2, which init systems restart) and check-config
// warns and passes. It was a configuration error (exit 1), which no init
// system restarts: the device stayed off the network until someone restarted
// the agent by hand.
func TestTunnelCAChecked(t *testing.T) {
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t)
	b, _ := os.ReadFile(pki.CAFile)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, b, 0o600)
		return p
	}
	cut := b[:bytes.Index(b, []byte("-----END "))]
	notPEM := write("notpem", []byte("hello\n"))
	bom := write("bom.pem", append([]byte("\ufeff"), b...))
	utf16 := []byte{0xff, 0xfe}
	for _, c := range b {
		utf16 = append(utf16, c, 0)
	}
	u16 := write("utf16.pem", utf16)
	empty := write("empty.pem", nil)
	half := write("half.pem", cut)
	caDir := filepath.Dir(write("cas/ca.pem", b))
	write("cas/a.txt", []byte("not a cert\n"))
	write("cas/half.pem", cut)
	halfDir := filepath.Dir(write("halves/half.pem", cut))
	write("halves/a.txt", []byte("not a cert\n"))
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	const notReady = "the agent will exit (2) at start until they load"
	for _, tc := range []struct {
		name, path string
		ready      bool // false: notify.ErrNotReady, a warning of Check
		want       string
	}{
		{"not there yet", filepath.Join(dir, "nope.pem"), false, "tunnel.ca_file: stat " + filepath.Join(dir, "nope.pem") + ": no such file"},
		{"storage not mounted", filepath.Join(dir, "persist/ca.pem"), false, "tunnel.ca_file: stat " + filepath.Join(dir, "persist/ca.pem") + ": no such file"},
		{"directory not mounted", filepath.Join(dir, "persist/certs"), false, "tunnel.ca_file: stat " + filepath.Join(dir, "persist/certs") + ": no such file"},
		{"empty", empty, false, "tunnel.ca_file: " + empty + " is empty (not written whole yet?)"},
		{"cut before its END line", half, false, "tunnel.ca_file: " + half + " ends before its -----END line"},
		{"directory of a cut file", halfDir, false, "tunnel.ca_file: " + filepath.Join(halfDir, "half.pem") + " ends before its -----END line"},

		{"missing by a relative path", "nope.pem", true, "config: tunnel.ca_file: stat nope.pem: no such file"},
		{"not PEM", notPEM, true, "config: tunnel.ca_file: no PEM certificate in " + notPEM},
		{"FIFO", fifo, true, "config: tunnel.ca_file: " + fifo + " is not a regular file"},
		{"a byte order mark", bom, true, "tunnel.ca_file: " + bom + " starts with a UTF-8 byte order mark"},
		{"saved as UTF-16", u16, true, "tunnel.ca_file: " + u16 + " is saved as UTF-16"},
		{"file", pki.CAFile, true, ""},
		{"directory", caDir, true, ""},
	} {
		cfg := checkConfig(t, fmt.Sprintf("[tunnel]\nca_file = %q\n", tc.path))
		_, err := New(cfg, nil)
		switch {
		case tc.want == "" && err != nil, tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: New = %v, want %q", tc.name, err, tc.want)
		case errors.Is(err, notify.ErrNotReady) == tc.ready:
			t.Errorf("%s: New = %v; notify.ErrNotReady: %v, want %v", tc.name, err, tc.ready, !tc.ready)
		case !tc.ready && !strings.Contains(err.Error(), notReady):
			t.Errorf("%s: New = %v, want it to say %q", tc.name, err, notReady)
		}
		for name, check := range map[string]func(*Config) error{"Check": Check, "CheckStart": CheckStart} {
			err := check(cfg)
			w := strings.Join(Warnings(cfg), "\n")
			switch {
			case tc.ready && tc.want == "" && err != nil:
				t.Errorf("%s: %s = %v, want nil", tc.name, name, err)
			case tc.ready && tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%s: %s = %v, want %q", tc.name, name, err, tc.want)
			case !tc.ready && (err != nil || !strings.Contains(w, tc.want) || !strings.Contains(w, notReady)):
				t.Errorf("%s: %s = %v, warnings %q; want nil and a warning %q... %q", tc.name, name, err, w, tc.want, notReady)
			}
		}
	}
}

// A tunnel.ca_file not there yet is said after every other setting: what
// stops the agent for good (exit 1) comes first, and MQTT files not there yet
// are a warning as without it.
func TestTunnelCANotReadyLast(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "persist", "ca.pem")
	cfg := checkConfig(t, fmt.Sprintf("[tunnel]\nca_file = %q\n", missing))
	cfg.MQTT.KeyFile = filepath.Join(filepath.Dir(missing), "device.key")
	if err := CheckStart(cfg); err != nil {
		t.Fatalf("CheckStart = %v, want nil", err)
	}
	if w, want := strings.Join(Warnings(cfg), "\n"), "mqtt.key_file: open "+cfg.MQTT.KeyFile; !strings.Contains(w, want) {
		t.Errorf("warnings %q, want %q", w, want)
	}
	cfg.MQTT.KeyFile = filepath.Join(t.TempDir(), "encrypted.key")
	os.WriteFile(cfg.MQTT.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")}), 0o600)
	if _, err := New(cfg, nil); err == nil || errors.Is(err, notify.ErrNotReady) || !strings.Contains(err.Error(), "config: mqtt.key_file") {
		t.Errorf("New with an encrypted mqtt.key_file = %v, want that configuration error", err)
	}
}

// A device with no CA bundle and no tunnel.ca_file fails every tunnel's check
// of the service's certificate: check-config and the start say so, from where
// crypto/x509 looks (SSL_CERT_FILE and SSL_CERT_DIR here, to leave this
// machine's out).
func TestNoSystemRootsWarned(t *testing.T) {
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t)
	empty := filepath.Join(dir, "empty.crt")
	os.WriteFile(empty, nil, 0o600)
	emptyDir, caDir := filepath.Join(dir, "none"), filepath.Join(dir, "certs")
	os.Mkdir(emptyDir, 0o700)
	os.Mkdir(caDir, 0o700)
	os.WriteFile(filepath.Join(caDir, "README"), []byte("not a certificate\n"), 0o600)
	b, _ := os.ReadFile(pki.CAFile)
	os.WriteFile(filepath.Join(caDir, "ca.pem"), b, 0o600)
	for _, tc := range []struct {
		name, file, dirs, tunnel string
		warn                     bool
	}{
		{"none", empty, emptyDir, "", true},
		{"no file, no directory", filepath.Join(dir, "nope.crt"), filepath.Join(dir, "nope"), "", true},
		{"bundle", pki.CAFile, emptyDir, "", false},
		{"directory", empty, emptyDir + ":" + caDir, "", false},
		{"tunnel.ca_file", empty, emptyDir, fmt.Sprintf("ca_file = %q", pki.CAFile), false},
		{"insecure_skip_verify", empty, emptyDir, "insecure_skip_verify = true", false},
	} {
		t.Setenv("SSL_CERT_FILE", tc.file)
		t.Setenv("SSL_CERT_DIR", tc.dirs)
		cfg := checkConfig(t, "[tunnel]\n"+tc.tunnel+"\n")
		w := strings.Join(Warnings(cfg), "\n")
		if got := strings.Contains(w, "tunnel.ca_file is not set and the system has no CA certificates"); got != tc.warn {
			t.Errorf("%s: warned %v, want %v; warnings:\n%s", tc.name, got, tc.warn, w)
		}
	}
}

func TestCertValidity(t *testing.T) {
	dir := t.TempDir()
	built := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	// The CA file: a CA valid until 2038 (as Amazon Root CA 1).
	ca, _ := writeCert(t, t.TempDir(), time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2038, 1, 17, 0, 0, 0, 0, time.UTC))
	ahead := time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name               string
		notBefore, notAfer time.Time
		now                time.Time
		expired, warn      string
	}{
		{"valid", now.AddDate(-1, 0, 0), now.AddDate(1, 0, 0), now, "", ""},
		{"expired", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2020, 2, 1, 0, 0, 0, 0, time.UTC), now, "expired on 2020-02-01T00:00:00Z", ""},
		{"expires soon", now.AddDate(-1, 0, 0), now.AddDate(0, 0, 10), now, "", "expires on 2026-06-11T00:00:00Z, less than 30 days from now"},
		{"not yet valid", now.AddDate(0, 0, 1), now.AddDate(1, 0, 0), now, "", "is not valid before 2026-06-02T00:00:00Z"},
		// A router without an RTC before NTP: the clock, not the certificate.
		{"clock in 1970", now.AddDate(-1, 0, 0), now.AddDate(1, 0, 0), time.Unix(0, 0), "", ""},
		{"clock in 1970, expired", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2020, 2, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, 0), "", ""},
		// A clock years ahead: the CA has expired too. The clock, said as a
		// warning, not the certificate.
		{"clock ahead", now.AddDate(-1, 0, 0), now.AddDate(1, 0, 0), ahead, "",
			"the clock says 2040-01-01T00:00:00Z, after mqtt.cert_file " + filepath.Join(dir, "dev.crt") + " expired (2027-06-01T00:00:00Z) and after every CA certificate in mqtt.ca_file " + ca + " expired (the last on 2038-01-17T00:00:00Z): the clock looks wrong (ahead)"},
	} {
		cert, _ := writeCert(t, dir, tc.notBefore, tc.notAfer)
		expired, warn := certValidity(cert, ca, tc.now, built)
		if tc.expired == "" && expired != nil || tc.expired != "" && (expired == nil || !strings.Contains(expired.Error(), tc.expired)) {
			t.Errorf("%s: expired = %v, want %q", tc.name, expired, tc.expired)
		}
		if tc.warn == "" && warn != "" || !strings.Contains(warn, tc.warn) {
			t.Errorf("%s: warn = %q, want %q", tc.name, warn, tc.warn)
		}
	}
}

// An expired device certificate fails check-config; the agent runs on (the file
// may be renewed on disk) and warns at start with the date.
func TestExpiredCertificate(t *testing.T) {
	cfg := checkConfig(t, "")
	cert, key := writeCert(t, t.TempDir(), time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2020, 2, 1, 0, 0, 0, 0, time.UTC))
	cfg.MQTT.CertFile, cfg.MQTT.KeyFile = cert, key
	if err := Check(cfg); err == nil || !strings.Contains(err.Error(), "config: mqtt.cert_file: "+cert+" expired on 2020-02-01") {
		t.Errorf("Check = %v, want an expired mqtt.cert_file", err)
	}
	if err := CheckStart(cfg); err != nil {
		t.Errorf("CheckStart = %v, want the agent to start", err)
	}
	if w := strings.Join(Warnings(cfg), "\n"); !strings.Contains(w, "mqtt.cert_file "+cert+" expired on 2020-02-01") {
		t.Errorf("Warnings = %q, want the expiry date", w)
	}
}

// TLS turned off toward a service beyond loopback is a warning of check-config
// and of the agent's start; toward a lab on this machine it is not.
func TestInsecureTunnelWarnings(t *testing.T) {
	for _, tc := range []struct {
		extra, warn string
	}{
		{"insecure_skip_verify = true", "tunnel.insecure_skip_verify is on"},
		{"insecure_skip_verify = true\nendpoint = \"tunnel.example.com:443\"", "tunnel.insecure_skip_verify is on"},
		{"allow_insecure_websocket = true\nendpoint = \"ws://tunnel.example.com:80\"", "unencrypted"},
		{"allow_insecure_websocket = true\nendpoint = \"http://tunnel.example.com:80\"", "unencrypted"},
		{"insecure_skip_verify = true\nendpoint = \"127.0.0.1:8443\"\nhttps_proxy = \"http://proxy.example.com:3128\"", "tunnel.insecure_skip_verify is on"},
		{"insecure_skip_verify = true\nendpoint = \"127.0.0.1:8443\"", ""},
		{"allow_insecure_websocket = true\nendpoint = \"ws://localhost:8080\"", ""},
		{"", ""},
	} {
		cfg := checkConfig(t, "[tunnel]\n"+tc.extra+"\n")
		var got []string
		for _, w := range Warnings(cfg) {
			if strings.HasPrefix(w, "tunnel.") {
				got = append(got, w)
			}
		}
		if tc.warn == "" && len(got) != 0 || tc.warn != "" && (len(got) != 1 || !strings.Contains(got[0], tc.warn)) {
			t.Errorf("%q: warnings %q, want %q", tc.extra, got, tc.warn)
		}
	}
}

// SSH login files that a login would ignore, or no login method at all, are
// warnings of check-config and of the agent's start, naming the config key.
func TestLoginWarnings(t *testing.T) {
	hostenv.NeedRoot(t, "the login users of a server that is not root depend on the passwd file")
	tmp := hostenv.FileInTmp(t, "porthole-test-authorized_keys-")
	safe := filepath.Join(safeTempDir(t), "authorized_keys")
	for _, p := range []string{tmp, safe} {
		os.WriteFile(p, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKhQb9QyJ0r1y0y5mR2hJ3fKpqkz6bq9Dq0Zt8ka5u1Y op\n"), 0o600)
	}
	group := filepath.Join(safeTempDir(t), "authorized_keys")
	os.WriteFile(group, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKhQb9QyJ0r1y0y5mR2hJ3fKpqkz6bq9Dq0Zt8ka5u1Y op\n"), 0o600)
	os.Chmod(group, 0o664)
	for _, tc := range []struct {
		name, ssh string
		want      []string
	}{
		{"below /tmp", fmt.Sprintf("[ssh]\nauthorized_keys = [%q]", tmp), []string{
			"ssh.authorized_keys: " + tmp + " is ignored at login (user root): bad modes of /tmp: 1777 is group or world writable",
			"ssh: no login method can work"}},
		{"group-writable", fmt.Sprintf("[ssh]\nauthorized_keys = [%q]", group), []string{
			"ssh.authorized_keys: " + group + " is ignored at login (user root): bad modes of " + group + ": 0664", "ssh: no login method can work"}},
		{"missing", "[ssh]\nauthorized_keys = [\"/nonexistent/authorized_keys\"]", []string{
			"ssh.authorized_keys: /nonexistent/authorized_keys does not exist (user root)", "ssh: no login method can work"}},
		{"none", "[ssh]\nauthorized_keys = []", []string{"ssh: no login method can work"}},
		{"good", fmt.Sprintf("[ssh]\nauthorized_keys = [%q]", safe), nil},
		{"missing, but a trusted CA", fmt.Sprintf("[ssh]\nauthorized_keys = [\"/nonexistent/authorized_keys\"]\ntrusted_user_ca_keys = [%q]", tmp), nil},
	} {
		cfg := checkConfig(t, tc.ssh)
		if err := Check(cfg); err != nil {
			t.Errorf("%s: Check = %v, want only warnings", tc.name, err)
		}
		var got []string
		for _, w := range Warnings(cfg) {
			if strings.HasPrefix(w, "ssh") {
				got = append(got, w)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: Warnings = %q, want %d about ssh: %q", tc.name, got, len(tc.want), tc.want)
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: warning %q, want %q", tc.name, got[i], w)
			}
		}
	}
}

// A data_dir that the agent cannot make or write is a warning of check-config
// (storage may be mounted later), not its silence; so is one in RAM (the
// example's /var/lib/porthole on OpenWrt), where the host key would change at
// every boot.
func TestDataDirWarning(t *testing.T) {
	onDisk := "" // what a temporary directory gets: none on disk, the RAM warning on a tmpfs /tmp
	var st syscall.Statfs_t
	if syscall.Statfs(t.TempDir(), &st) == nil && st.Type == 0x01021994 {
		onDisk = "is in RAM"
	}
	cases := []struct{ dir, want string }{
		{"/proc/porthole", "data_dir: /proc/porthole does not exist and cannot be made in /proc (it is on a kernel file system"},
		{"/sys/porthole", "cannot be made in /sys"},
		{t.TempDir(), onDisk},
		{filepath.Join(t.TempDir(), "data"), onDisk},
	}
	if syscall.Statfs("/dev/shm", &st) == nil && st.Type == 0x01021994 {
		cases = append(cases, struct{ dir, want string }{"/dev/shm/porthole-data", "data_dir: /dev/shm/porthole-data is in RAM (tmpfs, or an overlay on tmpfs): the SSH host key made there changes at every boot"})
	} else {
		t.Log("no tmpfs at /dev/shm: the RAM case is not checked")
	}
	for _, tc := range cases {
		if got := dataDirWarning(tc.dir); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("dataDirWarning(%s) = %q, want %q", tc.dir, got, tc.want)
		}
	}
}

// A root file system that is an overlay whose writable layer is tmpfs
// (Raspberry Pi OS's overlay file system, Ubuntu's overlayroot=tmpfs, OpenWrt's
// "using tmpfs overlay" fallback when rootfs_data is unusable) keeps nothing
// written across a reboot, as a plain tmpfs: the host key made in data_dir
// changes at every boot, and is warned about the same way.
func TestDataDirOnTmpfsOverlayWarned(t *testing.T) {
	hostenv.NeedRoot(t, "mounting a tmpfs and an overlay")
	root := filepath.Join(t.TempDir(), "a b") // /proc/self/mountinfo writes the space \040
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	merged := mountOverlay(t, root, true)
	lib := filepath.Join(merged, "var", "lib")
	if err := os.MkdirAll(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(lib, "porthole") /* to be made */, lib /* exists */} {
		if w := dataDirWarning(dir); !strings.Contains(w, "is in RAM") {
			t.Errorf("dataDirWarning(%s) = %q, want the in-RAM warning", dir, w)
		}
	}
}

// An overlay whose writable layer is on flash (OpenWrt's /overlay on
// rootfs_data, the usual case) keeps what is written: no RAM warning, even
// with another overlay on tmpfs mounted after it. Each data_dir is on the
// overlay its device number names, not on whichever /proc/self/mountinfo
// lists last.
func TestDataDirOnFlashOverlayNotWarned(t *testing.T) {
	hostenv.NeedRoot(t, "mounting a tmpfs and overlays")
	root := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	if inRAM(&st) {
		t.Skipf("%s is in RAM (file system type %#x): no storage here for an overlay's writable layer on flash", root, st.Type)
	}
	flash, ram := filepath.Join(root, "flash"), filepath.Join(root, "ram")
	for _, d := range []string{flash, ram} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	onFlash := mountOverlay(t, flash, false)
	inTmpfs := mountOverlay(t, ram, true) // listed after the one on flash
	for _, tc := range []struct{ dir, want string }{
		{filepath.Join(onFlash, "porthole"), ""},
		{onFlash, ""},
		{filepath.Join(inTmpfs, "porthole"), "is in RAM"},
	} {
		if got := dataDirWarning(tc.dir); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("dataDirWarning(%s) = %q, want %q", tc.dir, got, tc.want)
		}
	}
}

// ramfs, which initramfs boards and some vendor firmware use for /var and
// /tmp, is in RAM as tmpfs is.
func TestDataDirOnRamfsWarned(t *testing.T) {
	hostenv.NeedRoot(t, "mounting a ramfs")
	ram := filepath.Join(t.TempDir(), "ram")
	mountForTest(t, "ramfs", ram, "ramfs", 0, "mode=0755")
	for _, dir := range []string{filepath.Join(ram, "porthole") /* to be made */, ram /* exists */} {
		if w := dataDirWarning(dir); !strings.HasPrefix(w, "data_dir: "+dir+" is in RAM") {
			t.Errorf("dataDirWarning(%s) = %q, want the in-RAM warning", dir, w)
		}
	}
}

// mountForTest makes target, mounts there as mount(2) does, and unmounts at
// the test's end. A mount that fails skips the test, and fails it under
// CI=true: CI mounts them (tools/e2e's faults too).
func mountForTest(t *testing.T, source, target, fstype string, flags uintptr, data string) {
	t.Helper()
	if err := os.MkdirAll(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(source, target, fstype, flags, data); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot mount %s on %s: %v", fstype, target, err)
		}
		t.Skipf("cannot mount %s here: %v", fstype, err)
	}
	t.Cleanup(func() { syscall.Unmount(target, syscall.MNT_DETACH) })
}

// mountOverlay mounts an overlay in dir, with its writable layer on a tmpfs
// of its own (inRAM) or in dir, and returns where it is mounted.
func mountOverlay(t *testing.T, dir string, inRAM bool) (merged string) {
	t.Helper()
	lower, upperFS, merged := filepath.Join(dir, "rom"), filepath.Join(dir, "rw"), filepath.Join(dir, "merged")
	for _, d := range []string{lower, upperFS, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if inRAM {
		mountForTest(t, "tmpfs", upperFS, "tmpfs", 0, "size=1m,mode=0755")
	}
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(upperFS, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + lower + ",upperdir=" + filepath.Join(upperFS, "upper") + ",workdir=" + filepath.Join(upperFS, "work")
	if !inRAM {
		// The writable layer on the host's storage, which may not take one
		// (an overlay /tmp in a container): a fact of the host, skipped under
		// CI too; an overlay on tmpfs (inRAM) is what CI must mount.
		if err := syscall.Mount("overlay", merged, "overlay", 0, opts); err != nil {
			t.Skipf("cannot mount an overlay whose writable layer is in %s: %v", dir, err)
		}
		t.Cleanup(func() { syscall.Unmount(merged, syscall.MNT_DETACH) })
		return merged
	}
	mountForTest(t, "overlay", merged, "overlay", 0, opts)
	return merged
}

// AWS IoT's legacy endpoint, what aws iot describe-endpoint returns without
// --endpoint-type, passes every check, and then fails each TLS handshake
// against the Amazon Root CA 1 of mqtt.ca_file: check-config and the agent's
// start say so.
func TestLegacyEndpointWarned(t *testing.T) {
	cfg := checkConfig(t, "")
	for _, tc := range []struct {
		endpoint string
		warn     bool
	}{
		{"a1b2c3d4e5f6g7.iot.eu-west-1.amazonaws.com:8883", true},
		{"mqtts://a1b2c3d4e5f6g7.iot.eu-west-1.amazonaws.com:443", true},
		{"a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com:8883", false},
	} {
		cfg.MQTT.Endpoint = tc.endpoint
		if err := Check(cfg); err != nil {
			t.Fatalf("%s: Check = %v", tc.endpoint, err)
		}
		found := false
		for _, w := range Warnings(cfg) {
			found = found || strings.HasPrefix(w, "mqtt.endpoint: ") && strings.Contains(w, "legacy") && strings.Contains(w, "--endpoint-type iot:Data-ATS")
		}
		if found != tc.warn {
			t.Errorf("%s: Warnings = %q; a legacy-endpoint warning: %v, want %v", tc.endpoint, Warnings(cfg), found, tc.warn)
		}
	}
}

// An RSA host key under 1024 bits in ssh.host_keys, which the server leaves out
// (it cannot sign), is a warning of check-config naming the file, not an error:
// an older agent started with it, and data_dir's ed25519 key serves.
func TestSmallRSAHostKeyWarned(t *testing.T) {
	cfg := checkConfig(t, "")
	b, err := os.ReadFile("../sshd/testdata/rsa768_host_key")
	if err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(t.TempDir(), "rsa768")
	if err := os.WriteFile(small, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.SSH.HostKeys = []string{small}
	if err := Check(cfg); err != nil {
		t.Fatalf("Check = %v, want the agent to start", err)
	}
	if w := strings.Join(Warnings(cfg), "\n"); !strings.Contains(w, "ssh.host_keys "+small+": not served: an RSA key under 1024 bits") {
		t.Errorf("Warnings = %q, want the small RSA key named", w)
	}
}

// TestPathWithASpaceWarned: a path pasted with a space at its end (a no-break
// space from a web page too) is named: the agent uses that name, and a
// data_dir so written made a new host key in a new directory. A relative
// authorized_keys path is a home directory's, not warned of.
func TestPathWithASpaceWarned(t *testing.T) {
	cfg := checkConfig(t, "[ssh]\nauthorized_keys = [\".ssh/authorized_keys\", \"/etc/porthole/authorized_keys \"]\n")
	cfg.DataDir += "\u00a0"
	cfg.Tunnel.CAFile = " /etc/porthole/ca.pem"
	w := strings.Join(Warnings(cfg), "\n")
	for _, want := range []string{
		"data_dir " + strconv.Quote(cfg.DataDir) + " starts or ends with a space (pasted with it?): that name, space and all, is the one used",
		`ssh.authorized_keys "/etc/porthole/authorized_keys " starts or ends with a space`,
		`tunnel.ca_file " /etc/porthole/ca.pem" starts or ends with a space`,
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q, want %q", w, want)
		}
	}
	if strings.Contains(w, ".ssh/authorized_keys\" is a relative path") {
		t.Errorf("warnings %q name a home directory's authorized_keys", w)
	}
	if w := strings.Join(Warnings(checkConfig(t, "")), "\n"); strings.Contains(w, "space") {
		t.Errorf("warnings of a config without spaces: %q", w)
	}
}

// When no account may log in, that is what is said: not also that no key,
// CA or password hash can work, which sent readers to files that were fine.
func TestNoAccountIsTheLoginProblem(t *testing.T) {
	lines := strings.Join(loginLines([]*sshd.LoginProblem{{Field: "PasswdFile", Err: errors.New(`/etc/passwd has no account that may log in (sshd: user not allowed "root": shell /bin/sh does not exist)`)}}, false), "\n")
	if !strings.Contains(lines, "ssh: /etc/passwd has no account that may log in") || strings.Contains(lines, "no login method can work") {
		t.Errorf("warnings %q; want the passwd file's problem alone", lines)
	}
	if lines := strings.Join(loginLines(nil, false), "\n"); !strings.Contains(lines, "no login method can work") {
		t.Errorf("warnings without a usable key %q; want them to say no login method can work", lines)
	}
}

// A password hash of a bcrypt cost above 20 is left out with a warning, not
// refused: an older build started with it (late: it waited for a hash of that
// cost, days at 31) and served key logins. The other users' hashes stay.
func TestPasswordHashCostAbove20NotUsed(t *testing.T) {
	const rest = "$abcdefghijklmnopqrstuuJ4zbq3eTo8Vq3I2tgu0UI2t7PvIVuLm"
	cfg := checkConfig(t, "[ssh]\npassword_hashes = { root = \"$2a$21"+rest+"\", alice = \"$2a$20"+rest+"\" }\n")
	if _, ok := cfg.SSH.PasswordHashes["root"]; ok || len(cfg.SSH.PasswordHashes) != 1 {
		t.Errorf("password hashes %v; want alice's alone", cfg.SSH.PasswordHashes)
	}
	if err := Check(cfg); err != nil {
		t.Errorf("Check = %v, want nil", err)
	}
	w := strings.Join(Warnings(cfg), "\n")
	if !strings.Contains(w, "ssh.password_hashes.root: bcrypt cost 21 is not used (at most 20: the agent makes a hash of that cost before it starts") ||
		!strings.Contains(w, "root cannot log in by password") || strings.Contains(w, "password_hashes.alice") {
		t.Errorf("warnings %q; want root's hash, and it alone, said not used", w)
	}
}

// The overlay is found by its device number as /proc/self/mountinfo writes
// it, major:minor, and an overlay's minor passes 255 once that many file
// systems without a device are mounted (containers, many tmpfs): those bits of
// dev_t are apart from the low eight. Here enough small tmpfs are mounted first.
func TestDataDirOnTmpfsOverlayPastMinor255Warned(t *testing.T) {
	hostenv.NeedRoot(t, "mounting tmpfs and an overlay")
	if !inOwnMountNamespace(t) {
		return
	}
	root := t.TempDir()
	minor := func(p string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		dev := uint64(st.Dev)
		return dev&0xff | dev>>12&^0xff
	}
	for i := 0; ; i++ {
		filler := filepath.Join(root, "filler"+strconv.Itoa(i))
		mountForTest(t, "tmpfs", filler, "tmpfs", syscall.MS_RDONLY, "size=4k")
		if minor(filler) >= 256 {
			break
		}
		if i == 1000 {
			t.Fatalf("no minor past 255 after %d tmpfs mounts", i)
		}
	}
	overlay := filepath.Join(root, "overlay")
	if err := os.Mkdir(overlay, 0o755); err != nil {
		t.Fatal(err)
	}
	merged := mountOverlay(t, overlay, true)
	if m := minor(merged); m < 256 {
		t.Skipf("the overlay got minor %d: another file system let one below 256 go meanwhile", m)
	}
	if w := dataDirWarning(filepath.Join(merged, "porthole")); !strings.Contains(w, "is in RAM") {
		t.Errorf("dataDirWarning on an overlay of minor %d on tmpfs = %q, want the in-RAM warning", minor(merged), w)
	}
}

// inOwnMountNamespace reports whether the test runs in a child of the test
// binary with a mount namespace of its own; if not, it runs the test there and
// reports false. Mounts made there go with the child, should it be killed
// midway (a timeout), instead of staying in the machine's mount table. Where
// the binary cannot run itself (qemu-user), the test runs here (true).
func inOwnMountNamespace(t *testing.T) bool {
	t.Helper()
	const env = "PORTHOLE_AGENT_TEST_MOUNT_NS"
	if os.Getenv(env) != "" {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // and / made private
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	switch {
	case errors.Is(err, syscall.ENOEXEC):
		t.Logf("the test binary cannot re-exec itself here (qemu-user without binfmt_misc): %v; run in this mount namespace", err)
		return true
	case err != nil:
		t.Fatalf("child: %v", err)
	case bytes.Contains(out, []byte("--- SKIP: "+t.Name())):
		t.Skip("skipped in the child")
	case !bytes.Contains(out, []byte("--- PASS: "+t.Name())):
		t.Fatal("the child did not run the test to its end")
	}
	return false
}
