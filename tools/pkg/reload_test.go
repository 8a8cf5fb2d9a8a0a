package pkg

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The agent refuses a reload with a config it would not start with and keeps
// the one it runs, saying so in its log only. Each init system's reload said
// it went well all the same (SysV: OK, systemctl reload: success, procd: no
// word): the operator who edited the config believed it applied. They check
// it first, as their start does, and fail the reload without signalling.
func TestSysVReloadChecksConfig(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	r := newSysVRig(t, fake, "sh", "")
	if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("start: %v %q, want OK", err, out)
	}
	r.env = append(r.env, "FAKE_BAD_CONFIG=1")
	out, err := r.run("reload")
	if err == nil || !strings.Contains(out, "FAIL (configuration") || !strings.Contains(out, "bad config (fake)") {
		t.Errorf("reload with a config check-config refuses: %v %q, want a failure naming the configuration", err, out)
	}
	if got := r.eventPidsWait("reloaded", 1, time.Second); len(got) != 0 {
		t.Errorf("reload with a bad config sent SIGHUP to %v", got)
	}
	r.run("stop")
}

func TestUCIReloadChecksConfig(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "porthole")
	os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = check-config ] || exit 0\necho 'config: services.WEB: bad target' >&2\nexit 1\n"), 0o755)
	script := uciStubs + `
procd_send_signal() { echo "signal $*"; }
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
` + uciMain(fake, dir, "enabled=1", "thing_name=router-7") + `
reload_service
`
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("sh", "-c", script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil || strings.Contains(stdout.String(), "signal") {
		t.Errorf("reload_service with a config check-config refuses: %v, output %q; want a failure and no SIGHUP", err, &stdout)
	}
	if !strings.Contains(stdout.String(), "logger -t porthole -p daemon.err") || !strings.Contains(stdout.String(), "services.WEB: bad target") {
		t.Errorf("reload_service logged %q, want check-config's error in the system log", &stdout)
	}
}

func TestSystemdReloadChecksConfig(t *testing.T) {
	b, err := os.ReadFile("systemd/porthole.service")
	if err != nil {
		t.Fatal(err)
	}
	check := strings.Index(string(b), "\nExecReload=/usr/bin/porthole check-config -start -c /etc/porthole/porthole.toml\n")
	hup := strings.Index(string(b), "\nExecReload=/bin/kill -HUP $MAINPID\n")
	if check < 0 || hup < 0 || check > hup {
		t.Errorf("porthole.service: want ExecReload= running check-config -start before the one sending SIGHUP")
	}
}

// TestUCIReloadAppliesEnabled: OpenWrt runs /etc/init.d/porthole reload after
// `uci commit porthole; reload_config` and after LuCI's Save & Apply (procd's
// config.change trigger, procd_add_reload_trigger), and rc.common's reload
// then calls reload_service instead of start. So reload must do what start
// would where a SIGHUP cannot: start an agent procd does not run (enabled
// just set to 1, or a start that failed on a config since mended) and stop
// one that porthole.main.enabled=0 turned off. A SIGHUP to no instance did
// nothing and the reload still succeeded.
func TestUCIReloadAppliesEnabled(t *testing.T) {
	for _, tc := range []struct {
		name, enabled, running, want string
	}{
		{"enabled, not running", "1", "", "start"},
		{"disabled, running", "0", "1", "start"},
		{"enabled, running", "1", "1", "signal porthole * HUP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fake := filepath.Join(dir, "porthole")
			os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755)
			script := uciStubs + `
procd_send_signal() { echo "signal $*"; }
procd_running() { [ -n "` + tc.running + `" ]; }
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
# rc.common's, for a procd script (USE_PROCD), as it stands after the init script is sourced.
start() { echo start; }
reload() { if eval "type reload_service" 2>/dev/null >/dev/null; then reload_service "$@"; else start; fi; }
` + uciMain(fake, dir, "enabled="+tc.enabled, "thing_name=router-7") + `
reload
`
			out, err := exec.Command("sh", "-c", script).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != tc.want {
				t.Errorf("reload (enabled %s, running %q): %v, output %q; want %q only", tc.enabled, tc.running, err, out, tc.want)
			}
		})
	}
}
