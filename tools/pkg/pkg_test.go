package pkg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// arMember is one file of an ar archive.
type arMember struct {
	name string
	data []byte
}

// readAr parses a System V / GNU ar archive (the .ipk outer format).
func readAr(t *testing.T, b []byte) []arMember {
	t.Helper()
	if !bytes.HasPrefix(b, []byte("!<arch>\n")) {
		t.Fatalf("not an ar archive: starts %q", b[:min(8, len(b))])
	}
	b = b[8:]
	var out []arMember
	for len(b) >= 60 {
		hdr := b[:60]
		if string(hdr[58:60]) != "`\n" {
			t.Fatalf("ar header %q: bad magic", hdr)
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[0:16])), "/")
		var size int
		fmt.Sscanf(strings.TrimSpace(string(hdr[48:58])), "%d", &size)
		b = b[60:]
		if size > len(b) {
			t.Fatalf("ar member %s: size %d beyond the archive", name, size)
		}
		out = append(out, arMember{name, b[:size]})
		b = b[size:]
		if size%2 == 1 && len(b) > 0 {
			b = b[1:]
		}
	}
	return out
}

type tarFile struct {
	mode os.FileMode
	data []byte
	dir  bool
}

func readTarGz(t *testing.T, name string, b []byte) map[string]tarFile {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	tr := tar.NewReader(zr)
	files := map[string]tarFile{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: %s owned by %d:%d, want 0:0", name, h.Name, h.Uid, h.Gid)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = tarFile{mode: os.FileMode(h.Mode).Perm(), data: data, dir: h.Typeflag == tar.TypeDir}
	}
	return files
}

// shSyntax runs sh -n on a script's text.
func shSyntax(t *testing.T, name string, script []byte) {
	t.Helper()
	cmd := exec.Command("sh", "-n")
	cmd.Stdin = bytes.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sh -n %s: %v\n%s", name, err, out)
	}
}

// tinyBinary cross-builds a small static program: ipk.sh checks the ELF header,
// and the porthole binary itself is not what these tests are about.
func tinyBinary(t *testing.T, goarch string, env ...string) string {
	t.Helper()
	return goProgram(t, "tiny", "package main\n\nfunc main() {}\n", goarch, env...)
}

// goProgram builds the one-file program src, named name, for goarch.
func goProgram(t *testing.T, name, src, goarch string, env ...string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+name+"\n\ngo 1.26\n"), 0o644)
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=", "GOWORK=off"), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s for %s: %v\n%s", name, goarch, err, out)
	}
	return bin
}

var ipkArchs = []struct {
	arch, goarch, env string
}{
	{"mipsel_24kc", "mipsle", "GOMIPS=softfloat"},
	{"mips_24kc", "mips", "GOMIPS=softfloat"},
	{"arm_cortex-a7_neon-vfpv4", "arm", "GOARM=7"},
	{"aarch64_cortex-a53", "arm64", ""},
}

func TestIPK(t *testing.T) {
	for _, a := range ipkArchs {
		t.Run(a.arch, func(t *testing.T) {
			var env []string
			if a.env != "" {
				env = append(env, a.env)
			}
			bin := tinyBinary(t, a.goarch, env...)
			out := t.TempDir()
			if b, err := exec.Command("./ipk.sh", a.arch, "v1.2.3-4-gabcdef", out, bin).CombinedOutput(); err != nil {
				t.Fatalf("ipk.sh %s: %v\n%s", a.arch, err, b)
			}
			raw, err := os.ReadFile(filepath.Join(out, "porthole_1.2.3-4-gabcdef_"+a.arch+".ipk"))
			if err != nil {
				t.Fatal(err)
			}
			checkIPK(t, a.arch, raw, bin)
		})
	}
}

func checkIPK(t *testing.T, arch string, raw []byte, bin string) {
	members := readAr(t, raw)
	var names []string
	for _, m := range members {
		names = append(names, m.name)
	}
	if got := strings.Join(names, " "); got != "debian-binary control.tar.gz data.tar.gz" {
		t.Fatalf("ipk members = %q, want debian-binary control.tar.gz data.tar.gz (in that order)", got)
	}
	if string(members[0].data) != "2.0\n" {
		t.Errorf("debian-binary = %q, want 2.0", members[0].data)
	}
	ctrl := readTarGz(t, "control.tar.gz", members[1].data)
	data := readTarGz(t, "data.tar.gz", members[2].data)

	control := string(ctrl["./control"].data)
	for _, want := range []string{"Package: porthole\n", "Version: 1.2.3-4-gabcdef\n", "Architecture: " + arch + "\n", "Installed-Size: ", "Description: "} {
		if !strings.Contains(control, want) {
			t.Errorf("control lacks %q:\n%s", want, control)
		}
	}
	conffiles := strings.Fields(string(ctrl["./conffiles"].data))
	if len(conffiles) == 0 || conffiles[0] != "/etc/config/porthole" {
		t.Errorf("conffiles = %q, want /etc/config/porthole", conffiles)
	}
	for _, c := range conffiles {
		if _, ok := data["."+c]; !ok {
			t.Errorf("conffile %s is not in data.tar.gz", c)
		}
	}
	for _, s := range []string{"./postinst", "./prerm"} {
		f, ok := ctrl[s]
		if !ok {
			t.Errorf("control.tar.gz lacks %s", s)
			continue
		}
		if f.mode != 0o755 {
			t.Errorf("%s mode %o, want 755", s, f.mode)
		}
		shSyntax(t, s, f.data)
	}

	want := map[string]os.FileMode{
		"./usr/bin/porthole":            0o755,
		"./etc/init.d/porthole":         0o755,
		"./etc/config/porthole":         0o644,
		"./lib/upgrade/keep.d/porthole": 0o644,
		"./etc/porthole/":               0o755,
	}
	for name, mode := range want {
		f, ok := data[name]
		if !ok {
			t.Errorf("data.tar.gz lacks %s", name)
			continue
		}
		if f.mode != mode {
			t.Errorf("%s mode %o, want %o", name, f.mode, mode)
		}
	}
	if b, _ := os.ReadFile(bin); !bytes.Equal(data["./usr/bin/porthole"].data, b) {
		t.Error("/usr/bin/porthole is not the binary given")
	}
	initScript := data["./etc/init.d/porthole"].data
	shSyntax(t, "/etc/init.d/porthole", initScript)
	for _, want := range []string{"#!/bin/sh /etc/rc.common", "USE_PROCD=1", "procd_set_param respawn", "check-config", "procd_add_reload_trigger porthole"} {
		if !bytes.Contains(initScript, []byte(want)) {
			t.Errorf("/etc/init.d/porthole lacks %q", want)
		}
	}
	keep := string(data["./lib/upgrade/keep.d/porthole"].data)
	for _, want := range []string{"/etc/config/porthole", "/etc/porthole/"} {
		if !strings.Contains(keep, want) {
			t.Errorf("sysupgrade keep list lacks %s: %q", want, keep)
		}
	}
}

// TestIPKVersion: a release (a v tag as git describe gives it) is the package
// version without the v; anything else, a bare commit hash from git describe
// --always whatever its first character, or dev, is 0+ it, which opkg sorts
// below every release.
func TestIPKVersion(t *testing.T) {
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	for _, tc := range []struct{ version, want string }{
		{"v1.2.3", "1.2.3"},
		{"v1.2.3-4-gabcdef-dirty", "1.2.3-4-gabcdef-dirty"},
		{"v10.0.0-rc1", "10.0.0-rc1"},
		{"1.2.3", "1.2.3"},
		{"1a84f1f-dirty", "0+1a84f1f-dirty"},
		{"1a84f1f", "0+1a84f1f"},
		{"7821324", "0+7821324"},
		{"abcdef1-dirty", "0+abcdef1-dirty"},
		{"dev", "0+dev"},
	} {
		out := t.TempDir()
		if b, err := exec.Command("./ipk.sh", "mipsel_24kc", tc.version, out, bin).CombinedOutput(); err != nil {
			t.Fatalf("ipk.sh mipsel_24kc %s: %v\n%s", tc.version, err, b)
		}
		raw, err := os.ReadFile(filepath.Join(out, "porthole_"+tc.want+"_mipsel_24kc.ipk"))
		if err != nil {
			names, _ := filepath.Glob(filepath.Join(out, "*.ipk"))
			t.Errorf("ipk.sh with version %s: %v (made %v)", tc.version, err, names)
			continue
		}
		ctrl := readTarGz(t, "control.tar.gz", readAr(t, raw)[1].data)
		if control := string(ctrl["./control"].data); !strings.Contains(control, "\nVersion: "+tc.want+"\n") {
			t.Errorf("ipk.sh with version %s: control lacks Version: %s:\n%s", tc.version, tc.want, control)
		}
	}
}

func TestIPKRefusesAnotherArchitecture(t *testing.T) {
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	out, err := exec.Command("./ipk.sh", "mips_24kc", "v1", t.TempDir(), bin).CombinedOutput()
	if err == nil {
		t.Fatalf("ipk.sh mips_24kc with a little-endian binary succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "want '1 2 8'") {
		t.Errorf("ipk.sh error = %q, want it to name the expected ELF header", out)
	}
}

// uciStubs stands in for OpenWrt's /lib/functions.sh: config_get reads
// CONFIG_<section>_<option>, lists are CONFIG_<section>_<option>_LIST, and
// CONFIG_SECTIONS names the sections with CONFIG_<section>_TYPE.
const uciStubs = `
config_load() { :; }
config_get() { eval "_v=\${CONFIG_$2_$3-}"; [ -n "$_v" ] || _v=$4; eval "$1=\$_v"; }
config_get_bool() { config_get "$@"; eval "case \$$1 in 1|on|true|yes|enabled) $1=1;; *) $1=0;; esac"; }
config_list_foreach() { eval "_l=\${CONFIG_$1_$2_LIST-}"; for _i in $_l; do $3 "$_i"; done; }
config_foreach() { for _s in $CONFIG_SECTIONS; do eval "_t=\$CONFIG_${_s}_TYPE"; [ "$_t" = "$2" ] && $1 "$_s"; done; }
`

// TestUCIRender renders a UCI configuration with the init script's own render
// function and checks the result is the TOML the agent accepts.
func TestUCIRender(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "porthole.toml")
	script := uciStubs + `
. ./openwrt/porthole.init
CONF=` + conf + `
CONFIG_main_thing_name=router-7
CONFIG_main_mqtt_endpoint=example-ats.iot.eu-west-1.amazonaws.com:8883
CONFIG_main_data_dir=` + filepath.Join(dir, "state") + `
CONFIG_main_event_topic='porthole/events/"q"\x'
CONFIG_main_authorized_keys_LIST='/etc/porthole/authorized_keys /root/.ssh/authorized_keys'
CONFIG_SECTIONS='main ssh web'
CONFIG_main_TYPE=porthole
CONFIG_ssh_TYPE=service CONFIG_ssh_id=SSH CONFIG_ssh_target=builtin
CONFIG_web_TYPE=service CONFIG_web_id=HTTP CONFIG_web_target=127.0.0.1:80
render
`
	cmd := exec.Command("sh", "-c", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render: %v\n%s", err, out)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(conf)
	if st.Mode().Perm()&0o077 != 0 {
		t.Errorf("rendered config mode %o, want no group/other access", st.Mode().Perm())
	}
	var got struct {
		ThingName string `toml:"thing_name"`
		DataDir   string `toml:"data_dir"`
		MQTT      struct {
			Endpoint   string `toml:"endpoint"`
			EventTopic string `toml:"event_topic"`
			CAFile     string `toml:"ca_file"`
		} `toml:"mqtt"`
		Tunnel struct {
			MaxTunnels int `toml:"max_tunnels"`
		} `toml:"tunnel"`
		Services map[string]string `toml:"services"`
		SSH      struct {
			AuthorizedKeys []string `toml:"authorized_keys"`
		} `toml:"ssh"`
		Log struct {
			Level string `toml:"level"`
		} `toml:"log"`
	}
	if _, err := toml.Decode(string(b), &got); err != nil {
		t.Fatalf("rendered config is not TOML: %v\n%s", err, b)
	}
	if got.ThingName != "router-7" || got.MQTT.Endpoint != "example-ats.iot.eu-west-1.amazonaws.com:8883" ||
		got.MQTT.EventTopic != `porthole/events/"q"\x` || got.MQTT.CAFile != "/etc/porthole/AmazonRootCA1.pem" ||
		got.Tunnel.MaxTunnels != 4 || got.Log.Level != "info" ||
		got.Services["SSH"] != "builtin" || got.Services["HTTP"] != "127.0.0.1:80" || len(got.Services) != 2 ||
		strings.Join(got.SSH.AuthorizedKeys, " ") != "/etc/porthole/authorized_keys /root/.ssh/authorized_keys" {
		t.Errorf("rendered config decodes to %+v\n%s", got, b)
	}
	if st, err := os.Stat(filepath.Join(dir, "state")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("data_dir not made 0700: %v", err)
	}

	// The agent itself accepts it, with the certificate files in place (its
	// check-config reads them, as the agent does at start).
	pki := mqtttest.NewPKI(t)
	cert, key := pki.Client(t, "router-7")
	real := strings.NewReplacer("/etc/porthole/AmazonRootCA1.pem", pki.CAFile,
		"/etc/porthole/device.pem.crt", cert, "/etc/porthole/device.pem.key", key).Replace(string(b))
	if !strings.Contains(real, pki.CAFile) || !strings.Contains(real, cert) || !strings.Contains(real, key) {
		t.Fatalf("the rendered config names other certificate files than this test expects:\n%s", b)
	}
	if err := os.WriteFile(conf, []byte(real), 0o600); err != nil {
		t.Fatal(err)
	}
	porthole := filepath.Join(t.TempDir(), "porthole")
	build := exec.Command("go", "build", "-o", porthole, "github.com/porthole-iot/porthole/agent/cmd/porthole")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build porthole: %v\n%s", err, out)
	}
	out, err := exec.Command(porthole, "check-config", "-c", conf).CombinedOutput()
	if err != nil {
		t.Errorf("porthole check-config on the rendered UCI config: %v\n%s\n%s", err, out, b)
	}
}

// TestUCIStartService runs the init script's start_service with procd's calls
// stubbed: the instance runs the agent on the rendered config, with GOMAXPROCS
// from the cpus option (1 unless set).
func TestUCIStartService(t *testing.T) {
	for _, tc := range []struct{ cpus, want string }{{"", "1"}, {"0", "0"}, {"2", "2"}} {
		dir := t.TempDir()
		fake := filepath.Join(dir, "porthole")
		os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755)
		script := uciStubs + `
procd_open_instance() { echo open; }
procd_set_param() { echo "param $*"; }
procd_close_instance() { echo close; }
logger() { :; }
. ./openwrt/porthole.init
PROG=` + fake + `
CONF=` + filepath.Join(dir, "porthole.toml") + `
CONFIG_main_enabled=1
CONFIG_main_thing_name=router-7
CONFIG_main_data_dir=` + filepath.Join(dir, "state") + `
CONFIG_main_cpus=` + tc.cpus + `
CONFIG_SECTIONS='main'
CONFIG_main_TYPE=porthole
start_service
`
		out, err := exec.Command("sh", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("start_service (cpus %q): %v\n%s", tc.cpus, err, out)
		}
		for _, want := range []string{"param command " + fake + " agent -c " + filepath.Join(dir, "porthole.toml"), "param env GOMAXPROCS=" + tc.want + "\n"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("start_service with cpus %q: output lacks %q:\n%s", tc.cpus, want, out)
			}
		}
	}
}

// TestUCIStartServiceConfigError: a configuration that check-config rejects is
// logged (logread) and on stderr, and nothing is started. check-config's stderr
// goes to a pipe or to a file of the script's own under $TMPDIR (mktemp), never
// to a fixed name in a world-writable directory that another user could have
// made a symlink.
func TestUCIStartServiceConfigError(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o700)
	seen := filepath.Join(dir, "stderr-target")
	fake := filepath.Join(dir, "porthole")
	os.WriteFile(fake, []byte(`#!/bin/sh
[ "$1" = check-config ] || exit 0
readlink /proc/$$/fd/2 >`+seen+`
echo 'config: thing_name: missing' >&2
exit 1
`), 0o755)
	script := uciStubs + `
procd_open_instance() { echo open; }
procd_set_param() { echo "param $*"; }
procd_close_instance() { echo close; }
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
PROG=` + fake + `
CONF=` + filepath.Join(dir, "porthole.toml") + `
CONFIG_main_enabled=1
CONFIG_main_data_dir=` + filepath.Join(dir, "state") + `
CONFIG_SECTIONS='main'
CONFIG_main_TYPE=porthole
start_service
`
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		t.Errorf("start_service with a bad config succeeded:\n%s%s", &stdout, &stderr)
	}
	if want := "logger -t porthole -p daemon.err not started: config: thing_name: missing\n"; !strings.Contains(stdout.String(), want) {
		t.Errorf("start_service logged %q, want %q", &stdout, want)
	}
	if strings.Contains(stdout.String(), "open") {
		t.Errorf("start_service opened a procd instance for a bad config:\n%s", &stdout)
	}
	if !strings.Contains(stderr.String(), "config: thing_name: missing") {
		t.Errorf("start_service stderr = %q, want check-config's error", &stderr)
	}
	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatalf("check-config did not run: %v", err)
	}
	if target := strings.TrimSpace(string(b)); !strings.HasPrefix(target, "pipe:") && !strings.HasPrefix(target, tmp+"/") {
		t.Errorf("check-config's stderr went to %s, want a pipe or a file under $TMPDIR", target)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("start_service left %v in $TMPDIR", left)
	}
}

func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("systemd/porthole.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStartPre=/usr/bin/porthole check-config -c /etc/porthole/porthole.toml",
		"ExecStart=/usr/bin/porthole agent -c /etc/porthole/porthole.toml",
		"Restart=on-failure", "RestartPreventExitStatus=1",
		"StateDirectory=porthole", "StateDirectoryMode=0700",
		"NoNewPrivileges=yes", "ProtectSystem=",
		"Environment=GOMAXPROCS=1",
		"WantedBy=multi-user.target",
	} {
		if !bytes.Contains(b, []byte("\n"+want)) {
			t.Errorf("porthole.service lacks a line %q", want)
		}
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		out, err := exec.Command(sa, "verify", "systemd/porthole.service").CombinedOutput()
		t.Logf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestSysVScript(t *testing.T) {
	st, err := os.Stat("sysv/porthole")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o111 == 0 {
		t.Errorf("sysv/porthole is not executable (mode %o)", st.Mode().Perm())
	}
	b, _ := os.ReadFile("sysv/porthole")
	shSyntax(t, "sysv/porthole", b)
	for _, want := range []string{"### BEGIN INIT INFO", "check-config", "start-stop-daemon", "start)", "stop)", "reload)"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("sysv/porthole lacks %q", want)
		}
	}
	// A config error is reported and start fails, without starting anything.
	fake := filepath.Join(t.TempDir(), "porthole")
	os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = check-config ] && { echo 'bad config' >&2; exit 1; }\necho started >&2\nexit 0\n"), 0o755)
	cmd := exec.Command("sh", "sysv/porthole", "start")
	cmd.Env = append(os.Environ(), "DAEMON="+fake, "PIDFILE="+filepath.Join(t.TempDir(), "pid"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL (configuration") {
		t.Errorf("start with a bad config: err %v, output %q; want a failure naming the configuration", err, out)
	}

	// The agent gets GOMAXPROCS=1 unless the environment (/etc/default/porthole)
	// sets it.
	for _, tc := range []struct{ env, want string }{{"", "1"}, {"GOMAXPROCS=0", "0"}, {"GOMAXPROCS=3", "3"}} {
		dir := t.TempDir()
		seen := filepath.Join(dir, "seen")
		os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = check-config ] && exit 0\necho \"GOMAXPROCS=$GOMAXPROCS\" >"+seen+".tmp && mv "+seen+".tmp "+seen+"\n"), 0o755)
		cmd := exec.Command("sh", "sysv/porthole", "start")
		// Not the GOMAXPROCS of whoever runs the test.
		env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") })
		cmd.Env = append(env, "DAEMON="+fake, "PIDFILE="+filepath.Join(dir, "pid"), "LOG="+filepath.Join(dir, "log"))
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "OK") {
			t.Fatalf("start (%s): %v %s", tc.env, err, out)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, err := os.ReadFile(seen)
			if err == nil {
				if got := strings.TrimSpace(string(b)); got != "GOMAXPROCS="+tc.want {
					t.Errorf("start with %q in the environment: the agent saw %s, want GOMAXPROCS=%s", tc.env, got, tc.want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("start (%s): the agent did not run", tc.env)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestTarball(t *testing.T) {
	dist := t.TempDir()
	bin := tinyBinary(t, "arm", "GOARM=7")
	b, _ := os.ReadFile(bin)
	os.WriteFile(filepath.Join(dist, "porthole-linux-armv7"), b, 0o755)
	if out, err := exec.Command("./tarball.sh", "v9.9.9", dist).CombinedOutput(); err != nil {
		t.Fatalf("tarball.sh: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dist, "porthole-v9.9.9-linux-armv7.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	files := readTarGz(t, "tarball", raw)
	p := "porthole-v9.9.9-linux-armv7/"
	for name, mode := range map[string]os.FileMode{
		p + "porthole": 0o755, p + "porthole.toml.example": 0o644, p + "init/porthole.service": 0o644,
		p + "init/porthole.sysv": 0o755, p + "INSTALL": 0o644,
	} {
		f, ok := files[name]
		if !ok {
			t.Errorf("tarball lacks %s", name)
			continue
		}
		if f.mode != mode {
			t.Errorf("%s mode %o, want %o", name, f.mode, mode)
		}
	}
	shSyntax(t, "init/porthole.sysv", files[p+"init/porthole.sysv"].data)
}

// fakeAgent is a porthole that records what it was told in $FAKE_EVENTS:
// "started PID" once it handles signals, "reloaded PID" on SIGHUP, "stopped PID"
// on SIGTERM. A real program, not a script: the kernel names a script's process
// after the script but its /proc/PID/exe is the shell, which hides what an init
// script's start-stop-daemon -x /bin/sh would match.
const fakeAgent = `package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "check-config" {
		return
	}
	f, err := os.OpenFile(os.Getenv("FAKE_EVENTS"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM)
	fmt.Fprintf(f, "started %d\n", os.Getpid())
	for s := range sig {
		if s == syscall.SIGHUP {
			fmt.Fprintf(f, "reloaded %d\n", os.Getpid())
			continue
		}
		fmt.Fprintf(f, "stopped %d\n", os.Getpid())
		return
	}
}
`

// TestSysVScriptOneAgent runs start, start, reload and stop with a fake agent: the
// second start finds the first agent (the pid file names it) and starts no other,
// and stop and reload act on exactly the process the pid file names when that is
// the agent, never on another one that has its pid now. It runs with the
// start-stop-daemon on PATH (Debian's, from dpkg) and with BusyBox's
// (busybox-static) under BusyBox's own sh, as on a Buildroot target.
func TestSysVScriptOneAgent(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	t.Run("start-stop-daemon", func(t *testing.T) {
		if _, err := exec.LookPath("start-stop-daemon"); err != nil {
			t.Fatalf("start-stop-daemon (Debian: dpkg) not on PATH: %v", err)
		}
		testSysVOneAgent(t, fake, "sh", "")
	})
	t.Run("busybox", func(t *testing.T) {
		bb, err := exec.LookPath("busybox")
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("busybox (Debian: busybox-static, installed by tools/deps.sh test) not on PATH: %v", err)
			}
			t.Skipf("busybox not on PATH (Debian: busybox-static): %v", err)
		}
		// BusyBox's applets before the host's: start-stop-daemon and the tools
		// the script calls are BusyBox's.
		dir := t.TempDir()
		for _, applet := range []string{"start-stop-daemon", "cat", "dirname", "mkdir", "rm", "sleep"} {
			if err := os.Symlink(bb, filepath.Join(dir, applet)); err != nil {
				t.Fatal(err)
			}
		}
		testSysVOneAgent(t, fake, bb+" sh", dir)
	})
}

// procAlive reports whether pid is a live process, not a zombie: the test's
// machine may have no init that reaps what start-stop-daemon detached.
func procAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	state := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(state) > 0 && state[0] != "Z" && state[0] != "X"
}

func testSysVOneAgent(t *testing.T, fake, shell, binDir string) {
	dir := t.TempDir()
	events := filepath.Join(dir, "events")
	pidfile := filepath.Join(dir, "run", "porthole.pid")
	// eventPidsWait returns the pids of the events of one kind, waiting up to
	// wait for n of them; eventPids waits up to 5 s.
	eventPidsWait := func(kind string, n int, wait time.Duration) []int {
		deadline := time.Now().Add(wait)
		for {
			b, _ := os.ReadFile(events)
			var pids []int
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) == 2 && f[0] == kind {
					pid, err := strconv.Atoi(f[1])
					if err != nil {
						t.Fatalf("events: %q: %v", l, err)
					}
					pids = append(pids, pid)
				}
			}
			if len(pids) >= n || time.Now().After(deadline) {
				return pids
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	eventPids := func(kind string, n int) []int { return eventPidsWait(kind, n, 5*time.Second) }
	// Whatever the script did, end the agents it started, by their pids.
	t.Cleanup(func() {
		for _, pid := range eventPids("started", 0) {
			if procAlive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") })
	if binDir != "" {
		env = append(env, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	env = append(env, "FAKE_EVENTS="+events, "DAEMON="+fake, "CONF="+filepath.Join(dir, "porthole.toml"),
		"PIDFILE="+pidfile, "LOG="+filepath.Join(dir, "log", "porthole.log"))
	run := func(action string) (string, error) {
		args := append(strings.Fields(shell), "sysv/porthole", action)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		t.Logf("%s sysv/porthole %s: %v: %s", shell, action, err, bytes.TrimSpace(out))
		return string(out), err
	}

	if out, err := run("start"); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("start: %v %q, want OK", err, out)
	}
	started := eventPids("started", 1)
	if len(started) != 1 {
		t.Fatalf("after start: agents started %v, want one", started)
	}
	first := started[0]
	if b, _ := os.ReadFile(pidfile); strings.TrimSpace(string(b)) != strconv.Itoa(first) {
		t.Errorf("pid file holds %q, want the agent's pid %d", b, first)
	}

	// LSB: start of a running service succeeds and starts nothing.
	if out, err := run("start"); err != nil || !strings.Contains(out, "already running") {
		t.Errorf("second start: %v %q, want exit 0 and already running", err, out)
	}
	// A second agent would have said so within a second.
	if started := eventPidsWait("started", 2, time.Second); len(started) != 1 {
		t.Errorf("after a second start: agents started %v, want only the first one", started)
	}

	if out, err := run("reload"); err != nil || !strings.Contains(out, "OK") {
		t.Errorf("reload: %v %q, want OK", err, out)
	}
	if got := eventPids("reloaded", 1); !slices.Equal(got, []int{first}) {
		t.Errorf("after reload: agents reloaded %v, want [%d]", got, first)
	}

	if out, err := run("stop"); err != nil || !strings.Contains(out, "OK") {
		t.Errorf("stop: %v %q, want OK", err, out)
	}
	for _, pid := range eventPids("started", 0) {
		if procAlive(pid) {
			t.Errorf("after stop: agent %d still running (agents started: %v)", pid, eventPids("started", 0))
		}
	}
	if _, err := os.Stat(pidfile); err == nil {
		t.Error("after stop: the pid file is still there")
	}

	// A pid file left by an agent that died names a pid some other process has
	// now: stop and reload leave that process alone, start starts the agent.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	stale := func() { os.WriteFile(pidfile, []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o644) }
	for _, action := range []string{"stop", "reload"} {
		stale()
		run(action)
		time.Sleep(100 * time.Millisecond)
		if !procAlive(other.Process.Pid) {
			t.Fatalf("%s with a stale pid file: it signalled pid %d, which is not the agent", action, other.Process.Pid)
		}
	}
	stale()
	if out, err := run("start"); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("start with a stale pid file: %v %q, want OK", err, out)
	}
	started = eventPids("started", 2)
	if len(started) != 2 {
		t.Fatalf("start with a stale pid file: agents started %v, want a second one", started)
	}
	if out, err := run("stop"); err != nil || !strings.Contains(out, "OK") {
		t.Errorf("stop: %v %q, want OK", err, out)
	}
	if procAlive(started[1]) {
		t.Errorf("stop: agent %d still running", started[1])
	}
	if got := eventPids("stopped", 2); !slices.Equal(got, started) {
		t.Errorf("agents stopped %v, want %v (each by SIGTERM)", got, started)
	}
	// LSB: stop of a stopped service succeeds.
	if out, err := run("stop"); err != nil {
		t.Errorf("stop when not running: %v %q, want exit 0", err, out)
	}
}
