package pkg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

type tarFile struct {
	mode os.FileMode
	data []byte
	dir  bool
}

// checkModes fails unless the archive what holds each file of want with its mode.
func checkModes(t *testing.T, what string, files map[string]tarFile, want map[string]os.FileMode) {
	t.Helper()
	for name, mode := range want {
		f, ok := files[name]
		if !ok {
			t.Errorf("%s lacks %s", what, name)
			continue
		}
		if f.mode != mode {
			t.Errorf("%s: %s mode %o, want %o", what, name, f.mode, mode)
		}
	}
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

// uciStubs stands in for OpenWrt's /lib/functions.sh: config_get reads
// CONFIG_<section>_<option>, lists are CONFIG_<section>_<option>_LIST (split
// at spaces) or, as OpenWrt keeps them, CONFIG_<section>_<option>_LENGTH items
// CONFIG_<section>_<option>_ITEM<n>, and CONFIG_SECTIONS names the sections
// with CONFIG_<section>_TYPE.
const uciStubs = `
config_load() { :; }
config_get() { eval "_v=\${CONFIG_$2_$3-}"; [ -n "$_v" ] || _v=$4; eval "$1=\$_v"; }
config_get_bool() { config_get "$@"; eval "case \$$1 in 1|on|true|yes|enabled) $1=1;; *) $1=0;; esac"; }
config_list_foreach() {
	eval "_n=\${CONFIG_$1_$2_LENGTH-0} _l=\${CONFIG_$1_$2_LIST-}"
	_c=1; while [ $_c -le $_n ]; do eval "_i=\${CONFIG_$1_$2_ITEM$_c}"; $3 "$_i"; _c=$((_c + 1)); done
	for _i in $_l; do $3 "$_i"; done
}
config_foreach() { for _s in $CONFIG_SECTIONS; do eval "_t=\$CONFIG_${_s}_TYPE"; [ "$_t" = "$2" ] && $1 "$_s"; done; }
`

// TestUCIRender renders a UCI configuration with the init script's own render
// function and checks the result is the TOML the agent accepts, a service id
// with a colon (which AWS allows) included.
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
CONFIG_SECTIONS='main ssh web rdp'
CONFIG_main_TYPE=porthole
CONFIG_ssh_TYPE=service CONFIG_ssh_id=SSH CONFIG_ssh_target=builtin
CONFIG_web_TYPE=service CONFIG_web_id=HTTP CONFIG_web_target=127.0.0.1:80
CONFIG_rdp_TYPE=service CONFIG_rdp_id=RDP:win-1_a CONFIG_rdp_target=10.0.0.2:3389
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
		got.Services["SSH"] != "builtin" || got.Services["HTTP"] != "127.0.0.1:80" || got.Services["RDP:win-1_a"] != "10.0.0.2:3389" || len(got.Services) != 3 ||
		strings.Join(got.SSH.AuthorizedKeys, " ") != "/etc/porthole/authorized_keys /root/.ssh/authorized_keys" {
		t.Errorf("rendered config decodes to %+v\n%s", got, b)
	}
	if st, err := os.Stat(filepath.Join(dir, "state")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("data_dir not made 0700: %v", err)
	}
	// A data_dir that exists keeps its mode: a mistyped shared directory is
	// for the agent to refuse, not for the script to make root's alone.
	shared := filepath.Join(dir, "shared")
	os.Mkdir(shared, 0o755)
	os.Chmod(shared, os.ModeSticky|0o777)
	again := strings.Replace(script, "CONFIG_main_data_dir="+filepath.Join(dir, "state"), "CONFIG_main_data_dir="+shared, 1)
	if out, err := exec.Command("sh", "-c", again).CombinedOutput(); err != nil {
		t.Fatalf("render with an existing data_dir: %v\n%s", err, out)
	}
	if st, err := os.Stat(shared); err != nil || st.Mode()&(os.ModePerm|os.ModeSticky) != 0o777|os.ModeSticky {
		t.Errorf("render changed the mode of an existing data_dir to %v (%v), want drwxrwxrwt kept", st.Mode(), err)
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
	out, err := exec.Command(buildPorthole(t), "check-config", "-c", conf).CombinedOutput()
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
` + uciMain(fake, dir, "enabled=1", "thing_name=router-7", "cpus="+tc.cpus) + `
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

// With option config_file the agent runs on a copy of that TOML file, made
// once the file passed check-config, and nothing is rendered from the other
// options. (procd ran the file itself, and restarted the agent on it as soon as
// it changed, typo or not.)
func TestUCIStartServiceOwnConfig(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "porthole")
	ran := filepath.Join(dir, "ran")
	os.WriteFile(fake, []byte("#!/bin/sh\necho \"ran $*\" >>"+ran+"\n"), 0o755)
	own := filepath.Join(dir, "own.toml")
	os.WriteFile(own, []byte("thing_name = \"router-7\"\n"), 0o600)
	rendered := filepath.Join(dir, "porthole.toml")
	script := uciStubs + `
procd_open_instance() { echo open; }
procd_set_param() { echo "param $*"; }
procd_close_instance() { echo close; }
logger() { :; }
. ./openwrt/porthole.init
PROG=` + fake + `
CONF=` + rendered + `
CONFIG_main_enabled=1
CONFIG_main_config_file=` + own + `
CONFIG_main_data_dir=` + filepath.Join(dir, "state") + `
CONFIG_SECTIONS='main'
CONFIG_main_TYPE=porthole
start_service
`
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("start_service: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(ran)
	out = append(out, b...)
	for _, want := range []string{"ran check-config -start -c " + own + "\n", "param command " + fake + " agent -c " + rendered + "\n", "param file /etc/config/porthole " + rendered + "\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("start_service with config_file: output lacks %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(rendered); err != nil || string(b) != "thing_name = \"router-7\"\n" {
		t.Errorf("the config the agent runs on is %q (%v), want a copy of config_file's", b, err)
	}
	if fi, err := os.Stat(rendered); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("the copy has mode %04o, want 0600", fi.Mode().Perm())
	}
}

// TestUCIOwnConfigWarningsLogged: check-config's warnings on a config_file it
// passes are in the system log once each, and all on the init script's
// stderr. The agent runs on a 0600 copy, so the one about config_file's own
// mode, readable by others while it holds a proxy password
// (porthole.example.toml promises the warning), is the init script's to log.
// The others the agent logs itself at start, and the init script logged them
// too: logread had each twice.
func TestUCIOwnConfigWarningsLogged(t *testing.T) {
	prog := buildPorthole(t)
	openwrtShells(t, func(t *testing.T, shell []string) {
		dir := t.TempDir()
		own, key := ownConfigOpenKey(t, dir, `[tunnel]
https_proxy = "http://op:S3cret@127.0.0.1:3128"
`)
		os.Chmod(own, 0o644)
		script := uciStubs + `
procd_open_instance() { echo open; }
procd_set_param() { :; }
procd_close_instance() { :; }
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
` + uciMain(prog, dir, "enabled=1", "config_file="+own) + `
start_service
`
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(shell[0], append(shell[1:], "-c", script)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), "open") {
			t.Fatalf("start_service with a config_file check-config passes: %v\n%s%s", err, &stdout, &stderr)
		}
		modeWarning := own + " has mode 0644: other local users can read the password hashes or the proxy's password in it"
		keyWarning := "mqtt.key_file " + key + " has mode 0644"
		if want := "logger -t porthole -p daemon.warn " + own + ": warning: " + modeWarning; !strings.Contains(stdout.String(), want) {
			t.Errorf("start_service with config_file 0644 holding a proxy password: output lacks %q:\n%s", want, &stdout)
		}
		// The system log: what the init script logged, and the agent's
		// output at start on the copy (procd_set_param stderr 1).
		syslog := stdout.String() + agentStartLog(t, prog, filepath.Join(dir, "porthole.toml"), keyWarning)
		var warnings []string
		for _, l := range strings.Split(stderr.String(), "\n") {
			if w, ok := strings.CutPrefix(l, own+": warning: "); ok {
				warnings = append(warnings, w)
			}
		}
		for _, w := range []string{modeWarning, keyWarning} {
			if !slices.ContainsFunc(warnings, func(s string) bool { return strings.HasPrefix(s, w) }) {
				t.Errorf("start_service's stderr lacks %q:\n%s", w, &stderr)
			}
		}
		for _, w := range warnings {
			if n := strings.Count(syslog, w); n != 1 {
				t.Errorf("the system log has %q %d times, want once:\n%s", w, n, syslog)
			}
		}
		if strings.Contains(syslog+stderr.String(), "S3cret") {
			t.Errorf("the proxy's password is in the output:\n%s%s", syslog, &stderr)
		}
	})
}

// TestUCIReloadOwnConfigWarningsLogged: a reload (reload_config, LuCI's
// apply) with option config_file logs every check-config warning, as the
// agent logs only its login warnings on SIGHUP: logging only those about the
// file itself (for a start, where the agent logs the others) left a key
// file's mode and a certificate about to expire out of the system log.
func TestUCIReloadOwnConfigWarningsLogged(t *testing.T) {
	prog := buildPorthole(t)
	openwrtShells(t, func(t *testing.T, shell []string) {
		dir := t.TempDir()
		own, key := ownConfigOpenKey(t, dir, "")
		script := uciStubs + `
procd_running() { return 0; }
procd_send_signal() { echo "signal $*"; }
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
` + uciMain(prog, dir, "enabled=1", "config_file="+own) + `
reload_service
`
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(shell[0], append(shell[1:], "-c", script)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), "signal porthole") {
			t.Fatalf("reload_service: %v\n%s%s", err, &stdout, &stderr)
		}
		want := "logger -t porthole -p daemon.warn " + own + ": warning: mqtt.key_file " + key + " has mode 0644"
		if n := strings.Count(stdout.String(), want); n != 1 {
			t.Errorf("the system log has the key file's warning %d times at a reload, want once:\n%s", n, &stdout)
		}
	})
}

// ownConfigOpenKey writes dir/own.toml (0600), a config for option config_file
// whose MQTT key file has mode 0644, which check-config and the agent warn
// about, with more TOML after; it returns the config's and the key's paths.
func ownConfigOpenKey(t *testing.T, dir, more string) (own, key string) {
	pki := mqtttest.NewPKI(t)
	cert, key := pki.Client(t, "router-7")
	os.Chmod(key, 0o644)
	own = filepath.Join(dir, "own.toml")
	os.WriteFile(own, []byte(fmt.Sprintf(`thing_name = "router-7"
data_dir = %q
[mqtt]
endpoint = "127.0.0.1:8883"
ca_file = %q
cert_file = %q
key_file = %q
`, filepath.Join(dir, "state"), pki.CAFile, cert, key)+more), 0o600)
	return own, key
}

// agentStartLog runs porthole agent on conf as procd does (in /, with PATH
// only) until its output holds until, or 20 s have passed, and returns that
// output.
func agentStartLog(t *testing.T, prog, conf, until string) string {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "agent.log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(prog, "agent", "-c", conf)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if out, _ = os.ReadFile(logFile); bytes.Contains(out, []byte(until)) {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	out, _ = os.ReadFile(logFile)
	if !bytes.Contains(out, []byte("porthole agent started")) {
		t.Errorf("porthole agent -c %s did not start:\n%s", conf, out)
	}
	t.Logf("porthole agent -c %s:\n%s", conf, out)
	return string(out)
}

// TestUCIReadableProxyPassword: a password in option https_proxy is in
// /etc/config/porthole; one others may read (0644, as packages before the
// 0600 one installed it, and opkg keeps) is warned about, and the agent
// starts all the same. Only the mode is said, never the password.
func TestUCIReadableProxyPassword(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  os.FileMode
		proxy string
		warn  bool
	}{
		{"0644 with a password", 0o644, "http://op:S3cret@127.0.0.1:3128", true},
		{"0640 with a password", 0o640, "http://op:S3cret@127.0.0.1:3128", true},
		{"0600 with a password", 0o600, "http://op:S3cret@127.0.0.1:3128", false},
		{"0644 without a password", 0o644, "http://127.0.0.1:3128", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			openwrtShells(t, func(t *testing.T, shell []string) {
				uci := filepath.Join(t.TempDir(), "porthole")
				os.WriteFile(uci, []byte("config porthole 'main'\n"), 0o600)
				os.Chmod(uci, tc.mode)
				_, out, err := renderUCI(t, shell, "UCI_CONF="+uci+"\nstart_service", map[string]string{
					"SECTIONS": "main ssh", "ssh_TYPE": "service", "ssh_id": "SSH", "ssh_target": "builtin", "main_https_proxy": tc.proxy,
				})
				if err != nil || !strings.Contains(out, "open") {
					t.Fatalf("start_service: %v\n%s", err, out)
				}
				want := "logger -t porthole -p daemon.warn " + uci + " is readable by other local users, and option https_proxy holds a password (chmod 600 " + uci + ")"
				if got := strings.Contains(out, want); got != tc.warn {
					t.Errorf("start_service with %s %04o, https_proxy %q: warned %v, want %v:\n%s", uci, tc.mode, tc.proxy, got, tc.warn, out)
				}
				if strings.Contains(out, "S3cret") {
					t.Errorf("the proxy's password is in the output:\n%s", out)
				}
			})
		})
	}
	// restart checks the config before it stops the agent, and its start
	// checks it again (rc.common's stop and start, stubbed): one warning.
	uci := filepath.Join(t.TempDir(), "porthole")
	os.WriteFile(uci, []byte("config porthole 'main'\n"), 0o644)
	_, out, err := renderUCI(t, []string{"sh"}, "UCI_CONF="+uci+"\nstop() { :; }\nstart() { start_service; }\nrestart", map[string]string{
		"SECTIONS": "main ssh", "ssh_TYPE": "service", "ssh_id": "SSH", "ssh_target": "builtin", "main_https_proxy": "http://op:S3cret@127.0.0.1:3128",
	})
	if n := strings.Count(out, "daemon.warn "+uci+" is readable"); err != nil || n != 1 {
		t.Errorf("restart: %v, the warning logged %d times, want once:\n%s", err, n, out)
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
` + uciMain(fake, dir, "enabled=1") + `
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

// TestUCIStartsWithCertificatesNotThereYet: MQTT certificate files on storage
// mounted later in boot pass the init script's check-config -start (a
// warning), and procd runs the agent, which exits 2, saying why in the system
// log, and is respawned 15 s later until they are there. check-config refused
// them (exit 1): the script started no agent, and nothing started one later.
func TestUCIStartsWithCertificatesNotThereYet(t *testing.T) {
	dir := t.TempDir()
	persist := filepath.Join(dir, "persist") // not mounted
	script := uciStubs + `
procd_open_instance() { echo open; }
procd_set_param() { echo "param $*"; }
procd_close_instance() { echo close; }
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
` + uciMain(buildPorthole(t), dir, "enabled=1", "thing_name=router-7", "mqtt_endpoint=example-ats.iot.eu-west-1.amazonaws.com:8883",
		"ca_file="+filepath.Join(persist, "AmazonRootCA1.pem"), "cert_file="+filepath.Join(persist, "device.pem.crt"),
		"key_file="+filepath.Join(persist, "device.pem.key")) + `
CONFIG_SECTIONS='main ssh'
CONFIG_ssh_TYPE=service CONFIG_ssh_id=SSH CONFIG_ssh_target=builtin
start_service
`
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "open\n") || !strings.Contains(string(out), "param respawn 3600 15 0\n") {
		t.Errorf("start_service with the certificate files on storage not mounted yet: %v\n%s\nwant the agent started, and respawned", err, out)
	}
	if strings.Contains(string(out), "not started") {
		t.Errorf("start_service logged a refusal:\n%s", out)
	}
}

// TestSystemdUnit: the agent checks its configuration itself (exit 1, not
// restarted), not an ExecStartPre (which Restart= would retry forever),
// systemctl stop and restart signal the agent only (KillMode=process), and
// every sandboxing line says what it costs a session.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("systemd/porthole.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStart=/usr/bin/porthole agent -c /etc/porthole/porthole.toml",
		"Restart=on-failure", "RestartSec=5", "RestartPreventExitStatus=1",
		"KillMode=process",
		"StateDirectory=porthole", "StateDirectoryMode=0700",
		"NoNewPrivileges=yes", "ProtectSystem=",
		"Environment=GOMAXPROCS=1",
		"WantedBy=multi-user.target",
	} {
		if !bytes.Contains(b, []byte("\n"+want)) {
			t.Errorf("porthole.service lacks a line %q", want)
		}
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "ExecStartPre="):
			t.Errorf("porthole.service has %q: Restart= applies to it and RestartPreventExitStatus= does not, so a configuration error is retried forever", l)
		case l == "ProtectKernelLogs=yes":
			t.Errorf("porthole.service has %q: dmesg fails in every session", l)
		case strings.HasPrefix(l, "Wants=") && strings.Contains(l, "time-sync.target"):
			t.Errorf("porthole.service has %q: only clock-sync services pull time-sync.target in (systemd.special(7)); the unit orders itself after it", l)
		}
		for _, p := range []string{"NoNewPrivileges=", "Protect", "Restrict", "Private", "LockPersonality=", "SystemCall", "Memory", "KillMode="} {
			if strings.HasPrefix(l, p) && (i == 0 || !strings.HasPrefix(lines[i-1], "#")) {
				t.Errorf("porthole.service: %q has no comment above it saying what it costs a session", l)
			}
		}
	}
	sa := testenv.NeedProgram(t, "systemd-analyze") // Debian: systemd
	// verify wants the ExecStart binary to exist.
	unit := filepath.Join(t.TempDir(), "porthole.service")
	os.WriteFile(unit, bytes.ReplaceAll(b, []byte("/usr/bin/porthole"), []byte(tinyBinary(t, runtime.GOARCH))), 0o644)
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
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
	checkModes(t, "tarball", files, map[string]os.FileMode{
		p + "porthole": 0o755, p + "porthole.toml.example": 0o644, p + "init/porthole.service": 0o644,
		p + "init/porthole.sysv": 0o755, p + "INSTALL": 0o644, p + "LICENSE": 0o644, p + "THIRD_PARTY_NOTICES": 0o644,
	})
	shSyntax(t, "init/porthole.sysv", files[p+"init/porthole.sysv"].data)

	if license, _ := os.ReadFile("../../LICENSE"); len(license) == 0 || !bytes.Equal(files[p+"LICENSE"].data, license) {
		t.Errorf("the tarball's LICENSE is not the repository's (%d bytes)", len(license))
	}
	// The notices hold the license text of Go and of each module linked into
	// the agent, under a header naming it.
	notices := string(files[p+"THIRD_PARTY_NOTICES"].data)
	for _, want := range []struct{ module, text string }{
		{"Go standard library", "Copyright 2009 The Go Authors."},
		{"golang.org/x/crypto v", "Copyright 2009 The Go Authors."},
		{"github.com/pkg/sftp v", "Copyright (c) 2013, Dave Cheney"},
		{"github.com/eclipse/paho.golang v", "Eclipse Distribution License - v 1.0"},
	} {
		i := strings.Index(notices, "\n"+want.module)
		if i < 0 {
			t.Errorf("THIRD_PARTY_NOTICES has no section for %s", want.module)
			continue
		}
		section, _, _ := strings.Cut(notices[i+1:], "\n=====")
		if !strings.Contains(section, want.text) {
			t.Errorf("THIRD_PARTY_NOTICES: the section of %s lacks %q", want.module, want.text)
		}
	}
	install := string(files[p+"INSTALL"].data)
	for _, want := range []string{"update-rc.d porthole defaults", "ln -s porthole /etc/init.d/S50porthole", "LOG_MAX"} {
		if !strings.Contains(install, want) {
			t.Errorf("INSTALL lacks %q:\n%s", want, install)
		}
	}
	installsFiles(t, install, files[p+"porthole.toml.example"].data)
}

// installsFiles fails unless INSTALL's steps put each file the example config
// names into place before check-config, the keys 0600, and say that
// check-config's warnings (exit 0) about them mean the agent cannot connect
// yet. They said to edit the config and run check-config only: it passed, and
// the agent started without a certificate.
func installsFiles(t *testing.T, install string, example []byte) {
	t.Helper()
	var cfg struct {
		MQTT struct {
			CAFile   string `toml:"ca_file"`
			CertFile string `toml:"cert_file"`
			KeyFile  string `toml:"key_file"`
		} `toml:"mqtt"`
		SSH struct {
			AuthorizedKeys []string `toml:"authorized_keys"`
		} `toml:"ssh"`
	}
	if _, err := toml.Decode(string(example), &cfg); err != nil {
		t.Fatalf("porthole.toml.example: %v", err)
	}
	if cfg.MQTT.CAFile == "" || cfg.MQTT.CertFile == "" || cfg.MQTT.KeyFile == "" || len(cfg.SSH.AuthorizedKeys) != 1 {
		t.Fatalf("porthole.toml.example names other files than this test expects: %+v", cfg)
	}
	check := strings.Index(install, "porthole check-config")
	if check < 0 {
		t.Fatalf("INSTALL has no check-config step:\n%s", install)
	}
	for _, f := range []struct {
		path, mode string
	}{{cfg.MQTT.CertFile, ""}, {cfg.MQTT.KeyFile, "0600"}, {cfg.MQTT.CAFile, ""}, {cfg.SSH.AuthorizedKeys[0], "0600"}} {
		i := strings.Index(install, " "+f.path+" ")
		if i < 0 || i > check {
			t.Errorf("INSTALL puts no %s in place before check-config:\n%s", f.path, install)
			continue
		}
		line := install[strings.LastIndex(install[:i], "\n")+1 : i]
		if f.mode != "" && !strings.Contains(line, "install -m "+f.mode+" ") {
			t.Errorf("INSTALL: %q: want %s installed with mode %s", line, f.path, f.mode)
		}
	}
	if flat := strings.ReplaceAll(install, "\n", " "); !strings.Contains(flat, "check-config exits 0 with warnings") || !strings.Contains(flat, "cannot connect") {
		t.Errorf("INSTALL does not say that check-config's warnings (exit 0) about those files mean the agent cannot connect yet:\n%s", install)
	}
}

// TestLicense: LICENSE is the Apache License 2.0 as Debian ships it.
func TestLicense(t *testing.T) {
	license, err := os.ReadFile("../../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	debian, err := os.ReadFile("/usr/share/common-licenses/Apache-2.0")
	if err != nil {
		t.Skipf("no Debian copy of the license to compare with: %v", err)
	}
	if !bytes.Equal(license, debian) {
		t.Error("LICENSE differs from /usr/share/common-licenses/Apache-2.0")
	}
}

// TestNoticesWantALicense: notices.sh fails, naming the module, when a module
// linked into the program has no license file, and finds it in a vendored tree.
func TestNoticesWantALicense(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b/go.mod", "module example.com/b\n\ngo 1.26\n")
	write("b/b.go", "package b\n\nfunc B() {}\n")
	write("a/go.mod", "module example.com/a\n\ngo 1.26\n\nrequire example.com/b v0.0.0\n\nreplace example.com/b => ../b\n")
	write("a/main.go", "package main\n\nimport \"example.com/b\"\n\nfunc main() { b.B() }\n")
	notices, _ := filepath.Abs("notices.sh")
	run := func() (string, error) {
		cmd := exec.Command(notices, ".")
		cmd.Dir = filepath.Join(dir, "a")
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(); err == nil || !strings.Contains(out, "example.com/b") {
		t.Errorf("notices.sh with a module without a license: %v %q, want a failure naming example.com/b", err, out)
	}
	write("b/COPYING", "the license of b\n")
	if out, err := run(); err != nil || !strings.Contains(out, "\nexample.com/b v0.0.0\n") || !strings.Contains(out, "the license of b") {
		t.Errorf("notices.sh with a module with a COPYING file: %v\n%s", err, out)
	}
	// Notice files whose names fill a pipe after the license: a check that
	// stopped reading at the license (grep -q under pipefail) failed when its
	// writer got SIGPIPE, about 1 run in 400 with a module's usual few files.
	long := strings.Repeat("n", 200)
	for i := range 400 {
		write(fmt.Sprintf("b/NOTICE-%s-%03d", long, i), "a notice\n")
	}
	if out, err := run(); err != nil || !strings.Contains(out, "-399 ---") {
		t.Errorf("notices.sh with a module with 400 notice files: %v\n…%s", err, out[max(0, len(out)-500):])
	}
	for i := range 400 {
		os.Remove(filepath.Join(dir, fmt.Sprintf("b/NOTICE-%s-%03d", long, i)))
	}
	// A tree with a vendor/ folder (buildroot/README.md has one made for an
	// offline build) gets the same, from the module cache (here the
	// replacement folder): go list in vendor mode knows no module's folder.
	vendor := exec.Command("go", "mod", "vendor")
	vendor.Dir = filepath.Join(dir, "a")
	vendor.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := vendor.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	if out, err := run(); err != nil || !strings.Contains(out, "\nexample.com/b v0.0.0\n") || !strings.Contains(out, "the license of b") {
		t.Errorf("notices.sh in a tree with vendor/: %v\n%s", err, out)
	}
}

// TestSums: sums.sh lists every artifact of make cross, make dist and make ipk
// in SHA256SUMS, and nothing else.
func TestSums(t *testing.T) {
	dist := t.TempDir()
	artifacts := []string{"porthole-linux-mipsle", "porthole-v1.2.3-linux-mipsle.tar.gz", "porthole_1.2.3_mipsel_24kc.ipk"}
	for i, name := range append(artifacts, "notes.txt") {
		os.WriteFile(filepath.Join(dist, name), []byte(strings.Repeat("x", i+1)), 0o644)
	}
	if out, err := exec.Command("./sums.sh", dist).CombinedOutput(); err != nil {
		t.Fatalf("sums.sh: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			names = append(names, f[1])
		}
	}
	if got, want := strings.Join(names, " "), strings.Join(artifacts, " "); got != want {
		t.Errorf("SHA256SUMS names %q, want %q", got, want)
	}
	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	}
}

// TestMakefileSums: make cross, make ipk and make dist each end by writing
// SHA256SUMS over all of dist/, so that it covers every artifact whichever ran
// last (make -n: nothing is built).
func TestMakefileSums(t *testing.T) {
	for _, target := range [][]string{{"cross"}, {"-o", "cross", "ipk"}, {"-o", "cross", "dist"}} {
		// VERSION and BUILD_TIME given: make runs no git.
		args := append([]string{"-n", "--no-print-directory", "-C", "../..", "VERSION=test", "BUILD_TIME="}, target...)
		out, err := exec.Command("make", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if last := lines[len(lines)-1]; last != "tools/pkg/sums.sh dist" {
			t.Errorf("make %s ends with %q, want tools/pkg/sums.sh dist", target[len(target)-1], last)
		}
	}
}

// TestMakefileIPKArch: make ipk builds the packages IPK_ARCH names, all four
// by default; an ARCH in the environment (a cross-compiling one exports the
// kernel's, such as mips) is not an OpenWrt architecture and changes nothing.
func TestMakefileIPKArch(t *testing.T) {
	all := "mipsel_24kc mips_24kc arm_cortex-a7_neon-vfpv4 aarch64_cortex-a53"
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, nil, all},
		{[]string{"ARCH=mips"}, nil, all},
		{[]string{"ARCH=mips"}, []string{"IPK_ARCH=x86_64"}, "x86_64"},
		{[]string{"IPK_ARCH=mips_24kc"}, nil, "mips_24kc"},
	} {
		args := append([]string{"-n", "--no-print-directory", "-C", "../..", "VERSION=test", "BUILD_TIME=", "-o", "cross"}, tc.args...)
		cmd := exec.Command("make", append(args, "ipk")...)
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "ARCH=") || strings.HasPrefix(kv, "IPK_ARCH=")
		}), tc.env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if want := "for a in " + tc.want + "; do tools/pkg/ipk.sh"; !strings.Contains(string(out), want) {
			t.Errorf("make ipk %v with %v in the environment: %q, want %q", tc.args, tc.env, out, want)
		}
	}
}

// TestFirmwareDocBuildTable: docs/firmware.md's table of make cross's binaries
// has a row for each target make cross builds, with its GOARCH and the CPU level
// it fixes, and none besides. The table named no level for arm64, riscv64 and
// amd64, whose base levels make cross sets so that a GOAMD64=v3 in go env does
// not leave x86 routers without AVX2 a binary they refuse.
func TestFirmwareDocBuildTable(t *testing.T) {
	args := []string{"-n", "--no-print-directory", "-C", "../..", "VERSION=test", "BUILD_TIME=", "cross"}
	out, err := exec.Command("make", args...).Output()
	if err != nil {
		t.Fatalf("make %s: %v", strings.Join(args, " "), err)
	}
	m := regexp.MustCompile(`for t in ([^;]+);`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("make -n cross: no loop over its targets in %q", out)
	}
	want := map[string]string{}
	for _, target := range strings.Fields(string(m[1])) {
		name, rest, _ := strings.Cut(target, ":")
		arch, level, _ := strings.Cut(rest, ":")
		want["porthole-"+name] = arch + " | " + level
	}
	doc, err := os.ReadFile("../../docs/firmware.md")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, row := range regexp.MustCompile(`(?m)^\| (porthole-linux-[^ |]+) \| *([^|]*?) *\| *([^|]*?) *\|`).FindAllSubmatch(doc, -1) {
		got[string(row[1])] = string(row[2]) + " | " + string(row[3])
	}
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("docs/firmware.md: no row for %s, which make cross builds (GOARCH | CPU level: %s)", name, w)
		} else if g != w {
			t.Errorf("docs/firmware.md: %s is %q, want %q, as make cross builds it", name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("docs/firmware.md: a row for %s, which make cross does not build", name)
		}
	}
}

// TestUCIRestart runs restart the way rc.common does for a procd init script:
// rc.common defines its generic restart, sources the init script, then
// replaces start and stop with procd's. Stopping the agent ends a login it
// serves, so stop here sends the script what such a login's end sends it
// (SIGHUP, SIGPIPE), and TERM too, which rc.common's restart ignores while
// stopping: start must still run, with TERM no longer ignored.
func TestUCIRestart(t *testing.T) {
	script := `
restart() { trap '' TERM; stop "$@"; trap - TERM; start "$@"; }
. ./openwrt/porthole.init
stop() { echo "stop $*"; kill -TERM $$; kill -HUP $$; kill -PIPE $$; }
start() { echo "start $*"; trap; }
restart x
`
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "stop x\nstart x\n") {
		t.Fatalf("restart with a stop that ends the login: %v %q, want stop and start, each given the arguments", err, out)
	}
	traps := string(out[strings.Index(string(out), "start x\n"):])
	if strings.Contains(traps, "TERM") || !strings.Contains(traps, "HUP") || !strings.Contains(traps, "PIPE") {
		t.Errorf("restart: traps during start %q, want HUP and PIPE ignored, TERM not", traps)
	}
}

// opkgRig runs the package's maintainer scripts as opkg does, with their paths
// moved into a directory of the test's: a fake /etc/init.d/porthole and ubus
// record their calls, and whether opkg had exited by then, in calls; the fake
// opkg (a program named opkg, in a session of its own) runs the script, then
// takes half a second more before it exits.
type opkgRig struct {
	t                          *testing.T
	dir, calls, initScript, sh string
	env                        []string
}

func newOpkgRig(t *testing.T, shell, binDir string) *opkgRig {
	dir := t.TempDir()
	r := &opkgRig{t: t, dir: dir, calls: filepath.Join(dir, "calls"), initScript: filepath.Join(dir, "init.d", "porthole"), sh: shell}
	os.MkdirAll(filepath.Join(dir, "init.d"), 0o755)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.MkdirAll(filepath.Join(dir, "run"), 0o755)
	os.MkdirAll(filepath.Join(dir, "info"), 0o755)
	recorder := "#!/bin/sh\n" +
		"read -r _ _ _ _ _ sid _ </proc/$$/stat\n" +
		"if [ -e " + filepath.Join(dir, "opkg-done") + " ]; then done=yes; else done=no; fi\n" +
		"echo \"${0##*/} $* opkg-done=$done sid=$sid\" >>" + r.calls + "\n" +
		"f=" + filepath.Join(dir, "on") + ".$1; if [ -f \"$f\" ]; then . \"$f\"; fi\n"
	os.WriteFile(r.initScript, []byte(recorder), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "ubus"), []byte(recorder), 0o755)
	path := filepath.Join(dir, "bin") + string(os.PathListSeparator) + os.Getenv("PATH")
	if binDir != "" {
		path = binDir + string(os.PathListSeparator) + path
	}
	r.env = append(os.Environ(), "PATH="+path)
	return r
}

// on makes the fake init script run sh (shell code: exit 1, say) when called
// with action; it exits 0 otherwise.
func (r *opkgRig) on(action, sh string) {
	os.WriteFile(filepath.Join(r.dir, "on."+action), []byte(sh+"\n"), 0o644)
}

// opkg runs the maintainer script name with args as opkg would, after which
// opkg does what then is (a shell command); it returns opkg's pid, which is
// its session's id.
func (r *opkgRig) opkg(name string, args, then string) int {
	src, err := os.ReadFile(filepath.Join("openwrt", name))
	if err != nil {
		r.t.Fatal(err)
	}
	return r.opkgScript(name, string(src), args, then)
}

// opkgScript is opkg with the script's text given: that of an older package.
func (r *opkgRig) opkgScript(name, src string, args, then string) int {
	pid, out, err := r.opkgRun(name, src, args, then)
	if err != nil {
		r.t.Fatalf("%s %s failed: %v\n%s", name, args, err, out)
	}
	return pid
}

// opkgRun is opkgScript that returns the script's failure (opkg's exit
// status) and opkg's output.
func (r *opkgRig) opkgRun(name, src string, args, then string) (int, []byte, error) {
	var err error
	text := strings.NewReplacer("/etc/init.d/porthole", r.initScript, "/etc/porthole/state", filepath.Join(r.dir, "state"),
		"/var/run/", filepath.Join(r.dir, "run")+"/", "/usr/lib/opkg/info/", filepath.Join(r.dir, "info")+"/").Replace(src)
	os.WriteFile(filepath.Join(r.dir, name), []byte(text), 0o755)
	opkg := filepath.Join(r.dir, "opkg")
	os.WriteFile(opkg, []byte("#!/bin/sh\n"+r.sh+" "+filepath.Join(r.dir, name)+" "+args+" || exit 1\n"+then+"\nsleep 0.5\ntouch "+filepath.Join(r.dir, "opkg-done")+"\n"), 0o755)
	// The scripts look for a process named opkg, so it is exec'd itself. A file
	// just written can still be open for writing in a child that another test
	// forked meanwhile (until that child's exec), and exec then fails with
	// ETXTBSY ("text file busy"; seen in CI): try again.
	var cmd *exec.Cmd
	var out []byte
	for try := 0; ; try++ {
		cmd = exec.Command(opkg)
		cmd.Env = r.env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		out, err = cmd.CombinedOutput()
		if !errors.Is(err, syscall.ETXTBSY) || try == 20 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.t.Logf("opkg running %s %s: %v %s", name, args, err, out)
	return cmd.Process.Pid, out, err
}

// waitCalls waits up to wait for a call starting with prefix, and returns the calls.
func (r *opkgRig) waitCalls(prefix string, wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		b, _ := os.ReadFile(r.calls)
		if strings.Contains("\n"+string(b), "\n"+prefix) || time.Now().After(deadline) {
			return string(b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOpkgScriptsWaitForOpkg: postinst enables the service at once and
// restarts the agent only once opkg has exited, in a session of its own, and
// prerm disables it at once and has procd stop it once opkg has exited and
// removed the init script: opkg may run in a login the agent serves, which
// stopping the agent ends, opkg with it, before it records what it did.
func TestOpkgScriptsWaitForOpkg(t *testing.T) {
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newOpkgRig(t, shell, binDir)
		sid := r.opkg("postinst", "configure", "")
		calls := r.waitCalls("porthole restart", 5*time.Second)
		if !strings.HasPrefix(calls, "porthole enable opkg-done=no ") {
			t.Errorf("postinst: calls %q, want enable first, while opkg runs", calls)
		}
		if !strings.Contains(calls, "\nporthole restart opkg-done=yes ") || strings.Contains(calls, fmt.Sprintf("restart opkg-done=yes sid=%d\n", sid)) {
			t.Errorf("postinst: calls %q, want a restart after opkg exited, in another session than opkg's (%d)", calls, sid)
		}
		if st, err := os.Stat(filepath.Join(r.dir, "state")); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("postinst: state directory: %v, want it made 0700", err)
		}

		// On an upgrade (PKG_UPGRADE=1 from OpenWrt's opkg) the administrator's
		// enable or disable stays: no enable, only the restart.
		r = newOpkgRig(t, shell, binDir)
		r.env = append(r.env, "PKG_UPGRADE=1")
		r.opkg("postinst", "configure", "")
		if calls := r.waitCalls("porthole restart", 5*time.Second); strings.Contains(calls, "porthole enable ") || !strings.Contains(calls, "porthole restart") {
			t.Errorf("postinst on an upgrade: calls %q, want a restart and no enable", calls)
		}

		r = newOpkgRig(t, shell, binDir)
		r.opkg("prerm", "remove", "rm "+r.initScript)
		calls = r.waitCalls("ubus", 5*time.Second)
		if !strings.HasPrefix(calls, "porthole disable opkg-done=no ") || !strings.Contains(calls, "\nubus call service delete {\"name\":\"porthole\"} opkg-done=yes ") {
			t.Errorf("prerm remove: calls %q, want disable at once, then ubus call service delete once opkg exited", calls)
		}

		// opkg install --force-reinstall runs prerm remove, then postinst: the
		// agent is not stopped, postinst restarts it.
		r = newOpkgRig(t, shell, binDir)
		r.opkg("prerm", "remove", "")
		if calls := r.waitCalls("ubus", 2500*time.Millisecond); strings.Contains(calls, "ubus") {
			t.Errorf("prerm remove with the package reinstalled: calls %q, want no ubus call", calls)
		}
		r = newOpkgRig(t, shell, binDir)
		r.opkg("prerm", "upgrade 1.2.3", "")
		if calls := r.waitCalls("ubus", 1500*time.Millisecond); calls != "" {
			t.Errorf("prerm upgrade: calls %q, want none (postinst restarts the agent)", calls)
		}
	})
}

// TestOpkgUpgradeKeepsStoppedAgentStopped: an upgrade restarts the agent
// only if the service is enabled or running. One the administrator disabled
// and stopped (LuCI's Startup page) stays stopped: the restart started it.
// A first install restarts (starts) it as before, whatever it finds.
func TestOpkgUpgradeKeepsStoppedAgentStopped(t *testing.T) {
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, c := range []struct {
			upgrade, enabled, running, restart bool
		}{
			{upgrade: true, enabled: false, running: false, restart: false},
			{upgrade: true, enabled: true, running: false, restart: true},
			{upgrade: true, enabled: false, running: true, restart: true},
			{upgrade: false, enabled: false, running: false, restart: true},
		} {
			r := newOpkgRig(t, shell, binDir)
			if c.upgrade {
				r.env = append(r.env, "PKG_UPGRADE=1")
			}
			if !c.enabled {
				r.on("enabled", "exit 1")
			}
			if !c.running {
				r.on("running", "exit 1")
			}
			r.opkg("postinst", "configure", "")
			calls := r.waitCalls("porthole restart", 2500*time.Millisecond)
			if got := strings.Contains(calls, "porthole restart"); got != c.restart {
				t.Errorf("postinst (upgrade %v, enabled %v, running %v): calls %q, want a restart: %v", c.upgrade, c.enabled, c.running, calls, c.restart)
			}
		}
	})
}

// TestOpkgUpgradeConfigRefused: a new release that refuses the config fails
// postinst, and so opkg, with the refusal on its output, while opkg runs, and
// nothing is restarted: the old agent keeps running. The restart, after opkg
// had exited, said so in the system log only, opkg reported success, and the
// agent did not start at the next boot.
func TestOpkgUpgradeConfigRefused(t *testing.T) {
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newOpkgRig(t, shell, binDir)
		r.env = append(r.env, "PKG_UPGRADE=1")
		refusal := "porthole: /usr/bin/porthole refuses the config: config: unknown key ssh.foo"
		r.on("check", "echo '"+refusal+"' >&2; exit 1")
		src, _ := os.ReadFile(filepath.Join("openwrt", "postinst"))
		_, out, err := r.opkgRun("postinst", string(src), "configure", "")
		if err == nil || !strings.Contains(string(out), refusal) || !strings.Contains(string(out), "not restarted") {
			t.Errorf("postinst with a config the new binary refuses: %v %q, want a failure with the refusal and not restarted", err, out)
		}
		calls := r.waitCalls("porthole restart", 2500*time.Millisecond)
		if !strings.Contains(calls, "porthole check opkg-done=no ") || strings.Contains(calls, "restart") {
			t.Errorf("postinst with a config refused: calls %q, want check while opkg runs and no restart", calls)
		}
		// The package stays unpacked; the administrator disables and stops
		// the service, and the next opkg run configures it again, without
		// PKG_UPGRADE, perhaps after a reboot (/var/run emptied): still the
		// upgrade, so the service stays disabled.
		os.RemoveAll(filepath.Join(r.dir, "run"))
		os.Mkdir(filepath.Join(r.dir, "run"), 0o755)
		os.Remove(r.calls)
		r.on("check", "exit 0")
		r.on("enabled", "exit 1")
		r.on("running", "exit 1")
		r.env = slices.DeleteFunc(r.env, func(kv string) bool { return kv == "PKG_UPGRADE=1" })
		r.opkgScript("postinst", string(src), "configure", "")
		calls = r.waitCalls("porthole restart", 2500*time.Millisecond)
		if strings.Contains(calls, "porthole enable ") || strings.Contains(calls, "restart") {
			t.Errorf("postinst configuring again after a refused upgrade, the service disabled: calls %q, want no enable and no restart", calls)
		}
	})
}

// TestOpkgInstallAfterRefusedUpgradeRemoved: a package removed after its
// upgrade was refused (postinst's mark left) is new when installed again:
// postinst enables the service, as at a first install.
func TestOpkgInstallAfterRefusedUpgradeRemoved(t *testing.T) {
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newOpkgRig(t, shell, binDir)
		r.on("check", "exit 1")
		src, _ := os.ReadFile(filepath.Join("openwrt", "postinst"))
		r.env = append(r.env, "PKG_UPGRADE=1")
		if _, out, err := r.opkgRun("postinst", string(src), "configure", ""); err == nil {
			t.Fatalf("postinst with a config refused: %q, want a failure", out)
		}
		r.env = slices.DeleteFunc(r.env, func(kv string) bool { return kv == "PKG_UPGRADE=1" })
		r.opkg("prerm", "remove", "")
		os.Remove(r.calls)
		r.on("check", "exit 0")
		r.opkg("postinst", "configure", "")
		if calls := r.waitCalls("porthole enable", 2500*time.Millisecond); !strings.Contains(calls, "porthole enable ") {
			t.Errorf("postinst installing again after a refused upgrade was removed: calls %q, want the service enabled", calls)
		}
	})
}

// TestUCICheck: the init script's check (postinst's, before the restart)
// runs check-config -start with the installed binary on the rendered config
// and fails with its error; a service not enabled in UCI (the package's own
// config, not filled in yet, on a first install) passes without a check.
func TestUCICheck(t *testing.T) {
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	refuse := filepath.Join(dir, "refuse")
	fake := filepath.Join(dir, "porthole")
	os.WriteFile(fake, []byte(`#!/bin/sh
[ "$1" = check-config ] || exit 0
echo "$*" >>`+ran+`
echo 'config: unknown key ssh.foo' >&2
[ ! -e `+refuse+` ]
`), 0o755)
	check := func(enabled string, refused bool) (string, error) {
		os.Remove(refuse)
		if refused {
			os.WriteFile(refuse, nil, 0o644)
		}
		script := uciStubs + `
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
` + uciMain(fake, dir, "enabled="+enabled, "thing_name=router-7") + `
check
`
		out, err := exec.Command("sh", "-c", script).CombinedOutput()
		return string(out), err
	}
	out, err := check("0", true)
	if b, _ := os.ReadFile(ran); err != nil || len(b) != 0 {
		t.Errorf("check with enabled=0: %v %q, check-config ran %q: want success, no check", err, out, b)
	}
	out, err = check("1", true)
	if err == nil || !strings.Contains(out, "logger -t porthole -p daemon.err "+fake+" refuses the config: config: unknown key ssh.foo") {
		t.Errorf("check with a refused config: %v %q, want a failure with check-config's error, logged", err, out)
	}
	if b, _ := os.ReadFile(ran); !strings.Contains(string(b), "check-config -start -c ") {
		t.Errorf("check ran check-config %q, want -start -c", b)
	}
	out, err = check("1", false)
	if err != nil || strings.Contains(out, "logger") {
		t.Errorf("check with a config that passes: %v %q, want success, nothing logged", err, out)
	}
	// The package's config is not enabled: a first install does not fail on it.
	if shipped, _ := os.ReadFile("openwrt/porthole.config"); !strings.Contains(string(shipped), "\n\toption enabled '0'\n") {
		t.Error("openwrt/porthole.config: want option enabled '0' (a first install's check passes on it)")
	}
}

// TestUCICheckLeavesTheAgentsConfig: check (postinst's before its restart, or
// an operator's) renders and checks the config as restart does, but leaves
// CONF, /var/etc/porthole.toml, as it is: procd runs the agent on that file
// and respawns it on whatever the file then holds, so after a check an agent
// that crashed came back on the config the check had rendered (the UCI file
// edited since its start, not applied yet) rather than the one it was
// started with. The check works on a file of its own and removes it.
func TestUCICheckLeavesTheAgentsConfig(t *testing.T) {
	openwrtShells(t, func(t *testing.T, shell []string) {
		for _, tc := range []struct {
			name, own string // own: option config_file's text, "": rendered
			want      string // in the config check-config checked
		}{
			{"rendered", "", `thing_name = "router-8"`},
			{"config_file", "thing_name = \"router-9\"\n", `thing_name = "router-9"`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				tmp := filepath.Join(dir, "tmp")
				os.Mkdir(tmp, 0o700)
				checked := filepath.Join(dir, "checked")
				fake := filepath.Join(dir, "porthole")
				os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = check-config ] || exit 0\n{ echo \"== $4\"; cat \"$4\"; } >>"+shq(checked)+"\n"), 0o755)
				conf := filepath.Join(dir, "porthole.toml")
				running := "# the config the agent runs on\n"
				os.WriteFile(conf, []byte(running), 0o600)
				options := []string{"enabled=1", "thing_name=router-8"}
				own := filepath.Join(dir, "own.toml")
				if tc.own != "" {
					os.WriteFile(own, []byte(tc.own), 0o600)
					options = append(options, "config_file="+shq(own))
				}
				script := uciStubs + `
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
` + uciMain(fake, dir, options...) + "check\n"
				cmd := exec.Command(shell[0], append(shell[1:], "-c", script)...)
				cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("check: %v\n%s", err, out)
				}
				if b, _ := os.ReadFile(conf); string(b) != running {
					t.Errorf("check wrote CONF, which procd respawns the agent on: %q, want it left %q", b, running)
				}
				b, _ := os.ReadFile(checked)
				if !strings.Contains(string(b), tc.want) {
					t.Errorf("check-config checked %q, want the config with %s", b, tc.want)
				}
				for _, l := range strings.Split(string(b), "\n") {
					if path, ok := strings.CutPrefix(l, "== "); ok && path != own {
						if _, err := os.Stat(path); err == nil {
							t.Errorf("check left the config it checked, %s", path)
						}
					}
				}
				if names, _ := os.ReadDir(tmp); len(names) > 0 {
					t.Errorf("check left %v in TMPDIR", names)
				}
				if _, err := os.Stat(conf + ".new"); err == nil {
					t.Errorf("check left %s.new", conf)
				}
			})
		}
	})
}

// TestTarballUmask: the tarball's directories are 0755, and its bytes the
// same, whatever the umask of whoever runs make dist.
func TestTarballUmask(t *testing.T) {
	bin, _ := os.ReadFile(tinyBinary(t, "arm", "GOARM=7"))
	build := func(umask string) []byte {
		dist := t.TempDir()
		os.WriteFile(filepath.Join(dist, "porthole-linux-armv7"), bin, 0o755)
		cmd := exec.Command("sh", "-c", `umask "$0"; exec ./tarball.sh "$@"`, umask, "v9.9.9", dist)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("umask %s; tarball.sh: %v\n%s", umask, err, out)
		}
		raw, err := os.ReadFile(filepath.Join(dist, "porthole-v9.9.9-linux-armv7.tar.gz"))
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	want := build("022")
	for _, umask := range []string{"002", "077"} {
		raw := build(umask)
		for name, f := range readTarGz(t, "tarball", raw) {
			if f.dir && f.mode != 0o755 {
				t.Errorf("umask %s: directory %s mode %o, want 755", umask, name, f.mode)
			}
		}
		if !bytes.Equal(raw, want) {
			t.Errorf("umask %s: the tarball differs from the one built under umask 022", umask)
		}
	}
}

// buildPorthole builds the porthole binary for the host and returns its path.
func buildPorthole(t *testing.T) string {
	t.Helper()
	porthole := filepath.Join(t.TempDir(), "porthole")
	build := exec.Command("go", "build", "-o", porthole, "github.com/porthole-iot/porthole/agent/cmd/porthole")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build porthole: %v\n%s", err, out)
	}
	return porthole
}

// TestUCICheckConfigCleanEnvironment: the same for the procd script, whose
// agent procd starts with procd's environment: check-config must not see
// the https_proxy of whoever ran /etc/init.d/porthole start or restart (or
// of the opkg that ran postinst's restart).
func TestUCICheckConfigCleanEnvironment(t *testing.T) {
	dir := t.TempDir()
	seen := filepath.Join(dir, "seen")
	fake := filepath.Join(dir, "porthole")
	os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = check-config ] && echo \"https_proxy=$https_proxy\" >"+seen+"\nexit 0\n"), 0o755)
	script := uciStubs + `
procd_open_instance() { :; }
procd_set_param() { :; }
procd_close_instance() { :; }
logger() { :; }
. ./openwrt/porthole.init
` + uciMain(fake, dir, "enabled=1", "thing_name=router-7") + `
start_service
`
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "https_proxy=socks5://operator:1080")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start_service: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(seen); string(b) != "https_proxy=\n" {
		t.Errorf("check-config ran with %q, want no https_proxy of the caller's", b)
	}
}

// uciMain sets, for a test of the procd script's functions, PROG to prog,
// CONF and data_dir under dir, and the porthole section main with options
// ("KEY=VALUE", values as the shell reads them).
func uciMain(prog, dir string, options ...string) string {
	s := "PROG=" + prog + "\nCONF=" + filepath.Join(dir, "porthole.toml") +
		"\nCONFIG_SECTIONS='main'\nCONFIG_main_TYPE=porthole\nCONFIG_main_data_dir=" + filepath.Join(dir, "state") + "\n"
	for _, o := range options {
		s += "CONFIG_main_" + o + "\n"
	}
	return s
}

// noticeSections returns the module paths of THIRD_PARTY_NOTICES's sections,
// the Go section left out.
func noticeSections(notices string) []string {
	var mods []string
	for _, m := range regexp.MustCompile(`(?m)^=+\n(\S+) (v\S+)(?: \(.*\))?\n`).FindAllStringSubmatch(notices, -1) {
		mods = append(mods, m[1]+" "+m[2])
	}
	return mods
}

// TestThirdPartyNotices: the committed THIRD_PARTY_NOTICES (which the .ipk
// installs and Buildroot's legal-info collects, neither of which can run
// notices.sh) is notices.sh's output, and its sections are exactly the modules,
// at their versions, that the device binary links, as go version -m reads them.
func TestThirdPartyNotices(t *testing.T) {
	committed, err := os.ReadFile("THIRD_PARTY_NOTICES")
	if err != nil {
		t.Fatalf("%v: run tools/pkg/notices.sh >tools/pkg/THIRD_PARTY_NOTICES", err)
	}
	cmd := exec.Command("tools/pkg/notices.sh")
	cmd.Dir = "../.."
	var stderr strings.Builder
	cmd.Stderr = &stderr
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("notices.sh: %v\n%s", err, stderr.String())
	}
	if string(committed) != string(want) {
		t.Errorf("THIRD_PARTY_NOTICES is not notices.sh's output (%d bytes, want %d): run tools/pkg/notices.sh >tools/pkg/THIRD_PARTY_NOTICES", len(committed), len(want))
	}

	bin := filepath.Join(t.TempDir(), "porthole")
	build := exec.Command("go", "build", "-trimpath", "-tags", "netgo,osusergo", "-o", bin, "./agent/cmd/porthole")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat", "GOFLAGS=", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var linked []string
	for _, d := range info.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		linked = append(linked, d.Path+" "+d.Version)
	}
	slices.Sort(linked)
	got := noticeSections(string(committed))
	if !slices.Equal(got, linked) {
		t.Errorf("THIRD_PARTY_NOTICES lists\n  %s\nthe mipsle device binary links\n  %s", strings.Join(got, "\n  "), strings.Join(linked, "\n  "))
	}
	if !strings.Contains(string(committed), "Go standard library") {
		t.Error("THIRD_PARTY_NOTICES has no section for Go")
	}
}

// firstPrerm is the prerm of the packages built before 8de03f8 (2026-11-30
// 14:15): it stopped and disabled the service whatever opkg's arguments,
// "upgrade VERSION" included. Their postinst enabled it at every install.
const firstPrerm = `#!/bin/sh
# opkg prerm: stop the agent. /etc/porthole (host key, certificates, client tokens)
# and /etc/config/porthole are never removed by the package.
[ -n "$IPKG_INSTROOT" ] && exit 0
/etc/init.d/porthole stop
/etc/init.d/porthole disable
exit 0
`

// TestOpkgUpgradeFromFirstPackages: opkg upgrades a device that runs one of
// the first packages (service enabled, as their postinst left it). opkg runs
// the old package's prerm ("upgrade VERSION"), which disables the service,
// then the new package's preinst and postinst (PKG_UPGRADE=1). The service
// must be enabled afterwards: otherwise the agent runs until the next reboot,
// then never starts again, and the device is out of reach.
func TestOpkgUpgradeFromFirstPackages(t *testing.T) {
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newOpkgRig(t, shell, binDir)
		r.env = append(r.env, "PKG_UPGRADE=1")
		info := filepath.Join(r.dir, "info")
		os.MkdirAll(info, 0o755)
		os.WriteFile(filepath.Join(info, "porthole.prerm"), []byte(firstPrerm), 0o755)
		r.opkgScript("prerm", firstPrerm, "upgrade 1.2.3", "")
		r.opkg("preinst", "upgrade 0+7821324", "")
		// opkg installs the new package's control files, then runs postinst.
		src, _ := os.ReadFile(filepath.Join("openwrt", "prerm"))
		os.WriteFile(filepath.Join(info, "porthole.prerm"), src, 0o755)
		r.opkg("postinst", "configure", "")
		calls := r.waitCalls("porthole restart", 5*time.Second)
		enabled := true
		for _, l := range strings.Split(calls, "\n") {
			switch {
			case strings.HasPrefix(l, "porthole enable "):
				enabled = true
			case strings.HasPrefix(l, "porthole disable "):
				enabled = false
			}
		}
		if !enabled || !strings.Contains(calls, "porthole restart") {
			t.Errorf("upgrade from a first package: calls %q, want the service enabled again and restarted", calls)
		}

		// A device whose administrator disabled the service, upgraded from a
		// package whose prerm leaves it alone: it stays disabled.
		r = newOpkgRig(t, shell, binDir)
		r.env = append(r.env, "PKG_UPGRADE=1")
		os.MkdirAll(filepath.Join(r.dir, "info"), 0o755)
		os.WriteFile(filepath.Join(r.dir, "info", "porthole.prerm"), src, 0o755)
		r.opkg("prerm", "upgrade 1.2.3", "")
		r.opkg("preinst", "upgrade 1.2.2", "")
		r.opkg("postinst", "configure", "")
		if calls := r.waitCalls("porthole restart", 5*time.Second); strings.Contains(calls, "porthole enable ") {
			t.Errorf("upgrade from a current package: calls %q, want no enable", calls)
		}
	})
}

// Every session's program inherits the agent's RLIMIT_NOFILE. Under OpenSSH's
// ssh.service (no LimitNOFILE=) a session gets systemd's default, soft 1024
// (select(2) cannot take descriptors above 1023, systemd.exec(5)) and hard
// 524288, which `ulimit -n 65536` may raise the soft limit to. The Go runtime
// raises the agent's own soft limit to the hard one at start and gives the
// programs it starts the soft limit it was started with, so the agent needs no
// LimitNOFILE= for itself; LimitNOFILE=4096 gives every session soft and hard
// 4096: select-based programs get descriptors past 1023, and no session can
// raise its limit past 4096 ("ulimit: error setting limit (Operation not
// permitted)"), nor can a daemon started from one.
func TestSystemdUnitSessionNofile(t *testing.T) {
	b, err := os.ReadFile("systemd/porthole.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "LimitNOFILE=")
		if !ok {
			continue
		}
		soft, hard, found := strings.Cut(v, ":")
		if !found {
			hard = soft
		}
		s, err1 := strconv.ParseUint(soft, 10, 64)
		h, err2 := strconv.ParseUint(hard, 10, 64)
		if err1 != nil || err2 != nil || s > 1024 || h < 524288 {
			t.Errorf("porthole.service has %q: sessions get soft %s (more than 1024) and hard %s (less than systemd's 524288) open files, where OpenSSH's get 1024:524288", l, soft, hard)
		}
	}
}

// TestUCICheckConfigRunsInRoot: check-config runs in /, where procd runs the
// agent, not in the caller's directory: a config_file with relative paths
// (ca_file = "ca.pem") passed from /etc/porthole, and the agent then exited 1
// at every respawn. A relative config_file is the one under /, as at boot,
// whatever the caller's directory.
func TestUCICheckConfigRunsInRoot(t *testing.T) {
	openwrtShells(t, func(t *testing.T, shell []string) {
		dir := t.TempDir()
		seen := filepath.Join(dir, "seen")
		fake := filepath.Join(dir, "porthole")
		os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = check-config ] && echo \"$PWD $4\" >"+seen+"\nexit 0\n"), 0o755)
		own := filepath.Join(dir, "own.toml")
		os.WriteFile(own, []byte("thing_name = \"checked\"\n"), 0o600)
		// The caller's directory holds a file by the same relative name.
		caller := t.TempDir()
		os.MkdirAll(filepath.Join(caller, dir), 0o755)
		os.WriteFile(filepath.Join(caller, own), []byte("thing_name = \"not checked\"\n"), 0o600)
		initScript, err := filepath.Abs("openwrt/porthole.init")
		if err != nil {
			t.Fatal(err)
		}
		for _, option := range []string{"thing_name=router-7", "config_file=" + strings.TrimPrefix(own, "/")} {
			script := uciStubs + `
	procd_open_instance() { :; }
	procd_set_param() { :; }
	procd_close_instance() { :; }
	logger() { :; }
	. ` + initScript + `
	` + uciMain(fake, dir, "enabled=1", option) + `
	start_service
	`
			cmd := exec.Command(shell[0], append(shell[1:], "-c", script)...)
			cmd.Dir = caller
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("start_service with %s: %v\n%s", option, err, out)
			}
			b, _ := os.ReadFile(seen)
			if cwd, _, _ := strings.Cut(string(b), " "); cwd != "/" {
				t.Errorf("start_service with %s run from %s: check-config ran in %q, want / (procd runs the agent there)", option, caller, cwd)
			}
			if strings.HasPrefix(option, "config_file=") {
				if checked := strings.TrimSpace(string(b)); !strings.HasSuffix(checked, " "+own) {
					t.Errorf("start_service with %s run from %s: check-config ran %q, want on %s", option, caller, checked, own)
				}
				if b, _ := os.ReadFile(filepath.Join(dir, "porthole.toml")); string(b) != "thing_name = \"checked\"\n" {
					t.Errorf("start_service with %s run from %s: the agent runs on %q, want a copy of %s", option, caller, b, own)
				}
			}
		}
	})
}

// TestSystemdUnitUpdateOutsideSandbox: with ProtectSystem= on, what a session
// starts (nohup, setsid) stays in the unit's sandbox, /usr read-only, so an
// update that replaces /usr/bin/porthole cannot run so. The unit's comments
// and docs/firmware.md said to run one with setsid (EROFS); both name the
// same systemd-run command, which systemd runs as a unit of its own.
func TestSystemdUnitUpdateOutsideSandbox(t *testing.T) {
	unit, err := os.ReadFile("systemd/porthole.service")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/firmware.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ProtectSystem=(\S+)$`).FindSubmatch(unit)
	if m == nil || string(m[1]) == "no" || string(m[1]) == "false" {
		t.Skipf("porthole.service has no ProtectSystem= that makes /usr read-only (%q)", m)
	}
	const run = "systemd-run --unit=porthole-update --collect /bin/sh /root/update.sh"
	if !bytes.Contains(unit, []byte("\n#   "+run+"\n")) {
		t.Errorf("porthole.service with ProtectSystem=%s: its comments lack the update command %q", m[1], run)
	}
	if !bytes.Contains(bytes.ReplaceAll(doc, []byte("\n"), []byte(" ")), []byte("`"+run+"`")) {
		t.Errorf("docs/firmware.md lacks the update command %q the unit's ProtectSystem=%s asks for", run, m[1])
	}
	for _, l := range strings.Split(string(unit), "\n") {
		if strings.HasPrefix(l, "#") && strings.Contains(l, "setsid") && strings.Contains(l, "replaces it") {
			t.Errorf("porthole.service: %q: a script under setsid cannot replace /usr/bin/porthole with ProtectSystem=%s", l, m[1])
		}
	}
}

// TestDocsUpgradeNotes: the Buildroot config's data_dir warns that an image
// update replacing the rootfs (A/B) changes the host key unless data_dir is
// persistent, and docs/firmware.md gives an OpenWrt downgrade as the one
// opkg install --force-downgrade: a remove first, from a login through the
// tunnel, stops the agent and ends the login before the install.
func TestDocsUpgradeNotes(t *testing.T) {
	br, _ := os.ReadFile("../../buildroot/package/porthole/porthole.toml")
	head, _, _ := strings.Cut(string(br), "\ndata_dir = ")
	if !strings.Contains(head, "A/B") || !strings.Contains(head, "host key") || !strings.Contains(head, "docs/firmware.md") {
		t.Errorf("buildroot/package/porthole/porthole.toml: the comment before data_dir %q, want the A/B host key note pointing to docs/firmware.md", head)
	}
	fw, _ := os.ReadFile("../../docs/firmware.md")
	if !strings.Contains(string(fw), "`opkg install --force-downgrade porthole_") {
		t.Error("docs/firmware.md: want a downgrade as opkg install --force-downgrade")
	}
}
