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
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
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
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte("package main\n\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module tiny\n\ngo 1.26\n"), 0o644)
	bin := filepath.Join(dir, "tiny")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=", "GOWORK=off"), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build for %s: %v\n%s", goarch, err, out)
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

	// The agent itself accepts it (the certificate files need not exist for
	// check-config to parse; if it wants them, say so).
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
