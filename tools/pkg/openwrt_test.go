package pkg

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// shq quotes s for a POSIX shell.
func shq(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// openwrtShells runs test with the host's sh and with BusyBox's sh, OpenWrt's.
func openwrtShells(t *testing.T, test func(t *testing.T, shell []string)) {
	t.Run("sh", func(t *testing.T) { test(t, []string{"sh"}) })
	t.Run("busybox", func(t *testing.T) {
		bb := testenv.NeedProgram(t, "busybox") // Debian: busybox-static
		test(t, []string{bb, "sh"})
	})
}

// renderUCI runs the init script's render (start_service with start, which
// renders, checks and opens the procd instance) on the options given, with
// logger and procd's calls recording themselves on stdout. It returns the
// rendered TOML ("" if none), the output and the error.
func renderUCI(t *testing.T, shell []string, action string, options map[string]string) (string, string, error) {
	t.Helper()
	dir := t.TempDir()
	fake := filepath.Join(dir, "porthole")
	os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	conf := filepath.Join(dir, "porthole.toml")
	var set strings.Builder
	keys := make([]string, 0, len(options))
	for k := range options {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		set.WriteString("CONFIG_" + k + "=" + shq(options[k]) + "\n")
	}
	script := uciStubs + `
procd_open_instance() { echo open; }
procd_set_param() { echo "param $*"; }
procd_close_instance() { echo close; }
logger() { echo "logger $*" >&2; }
. ./openwrt/porthole.init
PROG=` + fake + `
CONF=` + conf + `
CONFIG_main_enabled=1
CONFIG_main_thing_name=router-7
CONFIG_main_data_dir=` + filepath.Join(dir, "state") + `
CONFIG_main_TYPE=porthole
` + set.String() + action + "\n"
	cmd := exec.Command(shell[0], append(shell[1:], "-c", script)...)
	out, err := cmd.CombinedOutput()
	b, _ := os.ReadFile(conf)
	return string(b), string(out), err
}

// tomlKeys returns the keys of the rendered TOML, table.key, sorted.
func tomlKeys(t *testing.T, text string) []string {
	t.Helper()
	var m map[string]any
	if _, err := toml.Decode(text, &m); err != nil {
		t.Fatalf("rendered config is not TOML: %v\n%s", err, text)
	}
	var keys []string
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			for k2 := range sub {
				keys = append(keys, k+"."+k2)
			}
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// renderedKeys are the keys render writes, with [services] SSH.
var renderedKeys = []string{
	"data_dir", "log.level",
	"mqtt.ca_file", "mqtt.cert_file", "mqtt.endpoint", "mqtt.event_topic", "mqtt.key_file",
	"services.SSH", "ssh.authorized_keys", "ssh.listen", "thing_name",
	"tunnel.endpoint", "tunnel.https_proxy", "tunnel.max_tunnels",
}

// TestUCIRenderInjection: no UCI value adds keys to the rendered TOML. A
// max_tunnels or cpus that is not a number stops the start, logged; a service
// whose id AWS would not allow is skipped, logged, and the others are kept;
// every string value is quoted, so a newline in one makes the TOML invalid
// (check-config then refuses it) rather than add a key.
func TestUCIRenderInjection(t *testing.T) {
	inject := "\ninsecure_skip_verify = true\n[ssh.password_hashes]\nroot = \"$2a$10$abcdefghijklmnopqrstuuJ0m3Yp0cF9P9m5bWmN3xvQJv1d1V7xW\""
	openwrtShells(t, func(t *testing.T, shell []string) {
		for _, tc := range []struct {
			name, option, value, want string
		}{
			{"max_tunnels with keys after a newline", "main_max_tunnels", "4" + inject, "max_tunnels '4"},
			{"max_tunnels not a number", "main_max_tunnels", "4x", "max_tunnels '4x' is not a number"},
			{"max_tunnels negative", "main_max_tunnels", "-1", "max_tunnels '-1' is not a number"},
			{"max_tunnels with a leading zero", "main_max_tunnels", "08", "max_tunnels '08' is not a number"},
			{"cpus with a newline", "main_cpus", "1\nGODEBUG=x", "cpus '1"},
			{"cpus not a number", "main_cpus", "all", "cpus 'all' is not a number"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, out, err := renderUCI(t, shell, "start_service", map[string]string{
					"SECTIONS": "main ssh", "ssh_TYPE": "service", "ssh_id": "SSH", "ssh_target": "builtin", tc.option: tc.value,
				})
				if err == nil || !strings.Contains(out, "logger -t porthole -p daemon.err not started: "+tc.want) {
					t.Errorf("start_service with %s %q: %v\n%s\nwant a failure logged as not started: %s...", tc.option, tc.value, err, out, tc.want)
				}
				if strings.Contains(out, "open") {
					t.Errorf("start_service with %s %q opened a procd instance:\n%s", tc.option, tc.value, out)
				}
			})
		}

		long := strings.Repeat("a", 128)
		for _, tc := range []struct {
			name, id string
			keep     bool
		}{
			{"colon", "arn:aws:x_y-1", true},
			{"128 characters", long, true},
			{"129 characters", long + "b", false},
			{"a key and a comment", `HTTP = "127.0.0.1:22" #`, false},
			{"a newline", "HTTP\ninsecure_skip_verify = true", false},
			{"a quote", `HT"TP`, false},
			{"a dot", "a.b", false},
		} {
			t.Run("service id with "+tc.name, func(t *testing.T) {
				text, out, err := renderUCI(t, shell, "render", map[string]string{
					"SECTIONS": "main ssh x", "ssh_TYPE": "service", "ssh_id": "SSH", "ssh_target": "builtin",
					"x_TYPE": "service", "x_id": tc.id, "x_target": "127.0.0.1:80",
				})
				if err != nil {
					t.Fatalf("render: %v\n%s", err, out)
				}
				want := slices.Clone(renderedKeys)
				if tc.keep {
					want = append(want, "services."+tc.id)
					slices.Sort(want)
				} else if !strings.Contains(out, "logger -t porthole -p daemon.err service x skipped: id ") {
					t.Errorf("render with service id %q: output %q, want the skipped service logged", tc.id, out)
				}
				if got := tomlKeys(t, text); !slices.Equal(got, want) {
					t.Errorf("render with service id %q: keys %q, want %q\n%s", tc.id, got, want, text)
				}
			})
		}

		// String values are quoted: one with a newline is not TOML, and adds no key.
		for _, option := range []string{"main_thing_name", "main_mqtt_endpoint", "main_https_proxy", "main_log_level", "ssh_target", "main_authorized_keys_ITEM1"} {
			t.Run(option+" with a newline", func(t *testing.T) {
				text, out, err := renderUCI(t, shell, "render", map[string]string{
					"SECTIONS": "main ssh", "ssh_TYPE": "service", "ssh_id": "SSH", "ssh_target": "builtin",
					"main_authorized_keys_LENGTH": "1", "main_authorized_keys_ITEM1": "/etc/porthole/authorized_keys",
					option: "x" + inject,
				})
				if err != nil {
					t.Fatalf("render: %v\n%s", err, out)
				}
				var m map[string]any
				if _, err := toml.Decode(text, &m); err == nil {
					t.Errorf("render with %s holding a newline: the TOML decodes, keys %q, want it refused\n%s", option, tomlKeys(t, text), text)
				}
			})
		}
	})
}

// TestUCIStopTimeout: procd waits 10 s after SIGTERM before SIGKILL, as the
// SysV script's stop and the systemd unit do: the agent takes up to 5 s to end
// its sessions and save live tunnels, procd's default term_timeout.
func TestUCIStopTimeout(t *testing.T) {
	unit, err := os.ReadFile("systemd/porthole.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nTimeoutStopSec=10\n") {
		t.Fatalf("porthole.service lacks TimeoutStopSec=10, which this test compares procd's with")
	}
	_, out, err := renderUCI(t, []string{"sh"}, "start_service", map[string]string{
		"SECTIONS": "main ssh", "ssh_TYPE": "service", "ssh_id": "SSH", "ssh_target": "builtin",
	})
	if err != nil || !strings.Contains(out, "\nparam term_timeout 10\n") {
		t.Errorf("start_service: %v\n%s\nwant procd_set_param term_timeout 10", err, out)
	}
}

// fakeRCCommon stands in for OpenWrt's /etc/rc.common: it records how it was
// run, sources the init script and runs the action; enable makes the
// $IPKG_INSTROOT/etc/rc.d links from START and STOP, as OpenWrt's does.
const fakeRCCommon = `#!/bin/sh
initscript=$1 action=$2
echo "rc.common $* IPKG_INSTROOT=$IPKG_INSTROOT" >>"$IPKG_INSTROOT/calls"
. "$initscript"
enable() {
	name=${initscript##*/}
	[ -n "$START" ] && ln -sf "../init.d/$name" "$IPKG_INSTROOT/etc/rc.d/S$START$name"
	[ -n "$STOP" ] && ln -sf "../init.d/$name" "$IPKG_INSTROOT/etc/rc.d/K$STOP$name"
}
$action
`

// TestOpkgPostinstImageBuild: in an image build (IPKG_INSTROOT set, on the
// build machine) postinst enables the service in the image, as OpenWrt's
// default_postinst does, through the image's rc.common, and does nothing
// else: no restart, nothing outside the image.
func TestOpkgPostinstImageBuild(t *testing.T) {
	openwrtShells(t, func(t *testing.T, shell []string) {
		root := t.TempDir()
		for _, d := range []string{"etc/init.d", "etc/rc.d", "bin"} {
			os.MkdirAll(filepath.Join(root, d), 0o755)
		}
		initScript, _ := os.ReadFile("openwrt/porthole.init")
		os.WriteFile(filepath.Join(root, "etc/init.d/porthole"), initScript, 0o755)
		os.WriteFile(filepath.Join(root, "etc/rc.common"), []byte(fakeRCCommon), 0o755)
		// What a postinst on a device runs, recording that it ran.
		for _, name := range []string{"start-stop-daemon", "ubus", "mkdir"} {
			os.WriteFile(filepath.Join(root, "bin", name), []byte("#!/bin/sh\necho \"${0##*/} $*\" >>"+filepath.Join(root, "calls")+"\n"), 0o755)
		}
		cmd := exec.Command(shell[0], append(shell[1:], "openwrt/postinst", "configure")...)
		cmd.Env = append(os.Environ(), "IPKG_INSTROOT="+root, "PATH="+filepath.Join(root, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("postinst configure with IPKG_INSTROOT: %v\n%s", err, out)
		}
		calls, _ := os.ReadFile(filepath.Join(root, "calls"))
		if want := "rc.common " + root + "/etc/init.d/porthole enable IPKG_INSTROOT=" + root + "\n"; string(calls) != want {
			t.Errorf("postinst with IPKG_INSTROOT: calls %q, want only %q", calls, want)
		}
		for _, link := range []string{"S99porthole", "K10porthole"} {
			if target, err := os.Readlink(filepath.Join(root, "etc/rc.d", link)); err != nil || target != "../init.d/porthole" {
				t.Errorf("postinst with IPKG_INSTROOT: /etc/rc.d/%s: %q %v, want a link to ../init.d/porthole", link, target, err)
			}
		}
	})
}

// TestUCIAuthorizedKeysOption: `uci set porthole.main.authorized_keys=FILE`
// (set, where the default config has a list) turns the list into an option.
// OpenWrt's config_list_foreach sees lists only (it reads _LENGTH and _ITEMn),
// while an option is CONFIG_main_authorized_keys alone: the file named must
// still be the one rendered, not the default /etc/porthole/authorized_keys.
func TestUCIAuthorizedKeysOption(t *testing.T) {
	openwrtShells(t, func(t *testing.T, shell []string) {
		text, out, err := renderUCI(t, shell, "render", map[string]string{
			"SECTIONS": "main ssh", "ssh_TYPE": "service", "ssh_id": "SSH", "ssh_target": "builtin",
			"main_authorized_keys": "/root/operators.pub",
		})
		if err != nil {
			t.Fatalf("render: %v\n%s", err, out)
		}
		var got struct {
			SSH struct {
				AuthorizedKeys []string `toml:"authorized_keys"`
			} `toml:"ssh"`
		}
		if _, err := toml.Decode(text, &got); err != nil {
			t.Fatalf("rendered config is not TOML: %v\n%s", err, text)
		}
		if !slices.Equal(got.SSH.AuthorizedKeys, []string{"/root/operators.pub"}) {
			t.Errorf("option authorized_keys '/root/operators.pub' rendered as authorized_keys = %q, want [/root/operators.pub]\n%s", got.SSH.AuthorizedKeys, text)
		}
	})
}

// TestUCIRenderLeavesDataDirParentsToTheMount: a data_dir on storage that is
// mounted later in boot (USB, extroot: option data_dir /mnt/usb/porthole)
// must not be made on the root file system before the mount. The agent makes
// data_dir only, never the directories above it, and exits 2 until they
// exist (docs/devices.md), so that it never runs with a fresh host key under
// the mount point. The init script must not undo that with mkdir -p.
func TestUCIRenderLeavesDataDirParentsToTheMount(t *testing.T) {
	openwrtShells(t, func(t *testing.T, shell []string) {
		mnt := filepath.Join(t.TempDir(), "mnt", "usb") // not mounted yet
		data := filepath.Join(mnt, "porthole")
		_, out, err := renderUCI(t, shell, "start_service", map[string]string{"main_data_dir": data})
		t.Logf("start_service: %v\n%s", err, out)
		if _, err := os.Stat(mnt); err == nil {
			t.Errorf("start_service made %s, the mount point's directory above data_dir: the agent will make a new host key there on the root file system, under the storage mounted later", mnt)
		}
	})
}

// TestUCIConfigNamesFilesThatExist: the TOML files the UCI config's comments
// point at exist, as repository paths (agent/porthole.example.toml) or as the
// device's own (/var/etc/porthole.toml). They pointed at porthole.toml.example,
// a file of the tarball, which the .ipk does not ship.
func TestUCIConfigNamesFilesThatExist(t *testing.T) {
	b, err := os.ReadFile("openwrt/porthole.config")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`[\w./-]*\.toml[\w.]*`).FindAllString(string(b), -1)
	if !slices.Contains(names, "agent/porthole.example.toml") {
		t.Errorf("porthole.config names no agent/porthole.example.toml; it names %q", names)
	}
	for _, name := range names {
		if strings.HasPrefix(name, "/var/etc/") || strings.HasPrefix(name, "/etc/porthole/") {
			continue // on the device
		}
		if _, err := os.Stat(filepath.Join("../..", name)); err != nil {
			t.Errorf("porthole.config names %s, which is not a path in porthole's repository (%v)", name, err)
		}
	}
}
