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

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
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
	// Type=exec let a reload right after the start reach the agent during Go's
	// start-up, where a SIGHUP kills it (and systemd does not restart a
	// service a SIGHUP ended): with Type=notify systemd holds the reload back
	// until the agent's READY=1, sent once it takes SIGHUP as a reload
	// (agent/cmd/porthole TestAgentNotifiesReadyAfterSignalHandlers).
	if !strings.Contains(string(b), "\nType=notify\n") {
		t.Errorf("porthole.service: want Type=notify, so that no reload reaches the agent before it has said READY=1")
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

// A refused reload, start or restart leaves the file procd's instance runs as
// it was: procd respawns the agent on that file whenever it exits (OOM, an
// exit 2), and on a refused one every respawn would exit 1, 15 s apart, for
// ever. The real porthole checks.
func TestUCIRefusedConfigNeverRun(t *testing.T) {
	prog := buildPorthole(t)
	dir := t.TempDir()
	pki := mqtttest.NewPKI(t)
	cert, key := pki.Client(t, "router-7")
	conf := filepath.Join(dir, "porthole.toml")
	base := uciStubs + `
procd_open_instance() { echo open; }
procd_set_param() { echo "param $*"; }
procd_close_instance() { echo close; }
procd_send_signal() { echo "signal $*"; }
procd_running() { true; }
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
` + uciMain(prog, dir, "enabled=1", "thing_name=router-7", "mqtt_endpoint=example-ats.iot.eu-west-1.amazonaws.com:8883",
		"ca_file="+pki.CAFile, "cert_file="+cert, "key_file="+key) + `
CONFIG_SECTIONS='main ssh web'
CONFIG_ssh_TYPE=service CONFIG_ssh_id=SSH CONFIG_ssh_target=builtin
CONFIG_web_TYPE=service CONFIG_web_id=HTTP
stop() { echo "procd_kill porthole"; }
start() { start_service "$@"; }
`
	out, err := exec.Command("sh", "-c", base+"start_service\n").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "param command "+prog+" agent -c "+conf+"\n") {
		t.Fatalf("start_service: %v\n%s", err, out)
	}
	good, _ := os.ReadFile(conf)
	// A typo in a service target (a port left out).
	const typo = "CONFIG_web_target=127.0.0.1\n"
	for _, action := range []string{"reload_service", "restart", "start_service"} {
		out, err := exec.Command("sh", "-c", base+typo+action+"\n").CombinedOutput()
		if now, _ := os.ReadFile(conf); string(now) != string(good) {
			t.Errorf("%s with a refused config: %s now holds it, which procd runs at the next respawn:\n%s", action, conf, now)
		}
		if _, err := os.Stat(conf + ".new"); err == nil {
			t.Errorf("%s with a refused config left %s.new", action, conf)
		}
		switch action {
		case "reload_service":
			if err == nil || strings.Contains(string(out), "signal") || !strings.Contains(string(out), "not reloaded") {
				t.Errorf("reload_service: %v\n%s\nwant it refused, no SIGHUP", err, out)
			}
		case "restart":
			// The agent is not stopped: a typo must not lose the device.
			if err == nil || strings.Contains(string(out), "procd_kill") || !strings.Contains(string(out), "not restarted, nothing was stopped") {
				t.Errorf("restart: %v\n%s\nwant it refused before the stop", err, out)
			}
		case "start_service":
			// Nothing is declared, and procd is told nothing: its
			// instance stays as it was (TestUCIRefusedStartLeavesInstance).
			if err == nil || strings.Contains(string(out), "param ") || !strings.Contains(string(out), "not started") {
				t.Errorf("start_service while the agent runs: %v\n%s\nwant it refused, no instance declared", err, out)
			}
		}
	}
	// Mended, the restart goes ahead.
	out, err = exec.Command("sh", "-c", base+"CONFIG_web_target=127.0.0.1:80\nrestart\n").CombinedOutput()
	if now, _ := os.ReadFile(conf); err != nil || !strings.Contains(string(out), "procd_kill") || !strings.Contains(string(now), `"HTTP" = "127.0.0.1:80"`) {
		t.Errorf("restart with the config mended: %v\n%s\n%s", err, out, now)
	}
}

// The SysV script's restart (Buildroot's S50porthole too) checks the config
// before it stops the agent: stop && start left none with a typo.
func TestSysVRestartKeepsAgentOnConfigError(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	r := newSysVRig(t, fake, "sh", "")
	if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("start: %v %q, want OK", err, out)
	}
	pid := r.pidFile()
	r.env = append(r.env, "FAKE_BAD_CONFIG=1")
	out, err := r.run("restart")
	if err == nil || !strings.Contains(out, "FAIL (configuration") || !testenv.ProcessRunning(pid) {
		t.Errorf("restart with a config check-config refuses: %v %q; want a failure, and the agent (pid %d) left running", err, out, pid)
	}
	r.run("stop")
}

// TestUCIStartOwnConfigKeepsRunningAgent: a refused configuration never takes
// the running agent away (docs/firmware.md), with option config_file too.
// rc.common runs start_service between procd_open_service and
// procd_close_service, and procd ends every running instance the set does not
// declare: with config_file refused, start_service declared none, so a start
// typed while the agent ran stopped it, and a typo in the TOML cut the device
// off. procd's instance is left as it was, on the last copy that passed.
func TestUCIStartOwnConfigKeepsRunningAgent(t *testing.T) {
	openwrtShells(t, func(t *testing.T, shell []string) {
		dir := t.TempDir()
		fake := filepath.Join(dir, "porthole")
		own := filepath.Join(dir, "own.toml")
		state := filepath.Join(dir, "state-procd")
		os.WriteFile(state, []byte("stopped\n"), 0o644)
		// check-config refuses the file once it says "typo", as it would a typo.
		os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = check-config ] && grep -q typo \"$4\" && { echo 'config: line 2: unknown key typo' >&2; exit 1; }\nexit 0\n"), 0o755)
		os.WriteFile(own, []byte("thing_name = \"router-7\"\n"), 0o600)
		start := func() (string, error) {
			script := uciStubs + procdModel(state) + uciMain(fake, dir, "enabled=1", "config_file="+own) + "start\n"
			out, err := exec.Command(shell[0], append(shell[1:], "-c", script)...).CombinedOutput()
			return string(out), err
		}
		if out, err := start(); err != nil || !strings.Contains(out, "param command "+fake+" agent -c "+filepath.Join(dir, "porthole.toml")+"\n") {
			t.Fatalf("start with a good config_file: %v, want the agent declared on the copy:\n%s", err, out)
		}
		declared, _ := os.ReadFile(state + ".declared")
		os.WriteFile(own, []byte("thing_name = \"router-7\"\ntypo = 1\n"), 0o600)
		out, err := start()
		if b, _ := os.ReadFile(state); err == nil || string(b) != "running\n" || !strings.Contains(out, "not started: ") {
			t.Errorf("start with config_file refused while the agent runs: %v, the agent is %s, want a failure and the agent left running:\n%s", err, b, out)
		}
		if now, _ := os.ReadFile(state + ".declared"); string(now) != string(declared) {
			t.Errorf("start with config_file refused: procd's instance is now\n%s\nwant it as it was\n%s", now, declared)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "porthole.toml")); strings.Contains(string(b), "typo") {
			t.Errorf("the refused config_file was copied where the agent runs from: %q", b)
		}
	})
}

// procdModel stands in for rc.common and procd.sh around the init script,
// with the agent's state (running or stopped) in the file state: start runs
// start_service between procd_open_service and procd_close_service, and procd
// then runs the instances it declared and ends the others (none declared stops
// a running agent); stop is stop_service and procd_kill; restart is
// rc.common's. postinst's restart after an upgrade is this restart. As procd
// does, it keeps the instance declared (its parameters, and the checksums of
// the files of procd_set_param file) in state.declared, and starts the agent
// again, a line in state.starts, when a declaration differs from the one it
// runs.
func procdModel(state string) string {
	return `
restart() { trap '' TERM; stop "$@"; trap - TERM; start "$@"; }
procd_open_service() { INST=0; DECL=; }
procd_open_instance() { INST=1; }
procd_set_param() {
	echo "param $*"
	DECL="$DECL$*
"
	if [ "$1" = file ]; then
		shift
		for f; do DECL="$DECL$(md5sum "$f" 2>&1)
"; done
	fi
}
procd_close_instance() { :; }
procd_close_service() {
	if [ "$INST" != 1 ]; then
		echo stopped >` + state + `
		rm -f ` + state + `.declared
		return
	fi
	DECL=$(printf '%s' "$DECL")
	if [ "$(cat ` + state + `)" != running ] || [ "$DECL" != "$(cat ` + state + `.declared 2>/dev/null)" ]; then
		echo start >>` + state + `.starts
	fi
	printf '%s\n' "$DECL" >` + state + `.declared
	echo running >` + state + `
}
procd_kill() { echo stopped >` + state + `; rm -f ` + state + `.declared; }
procd_running() { [ "$(cat ` + state + `)" = running ]; }
procd_send_signal() { echo "signal $*"; }
logger() { echo "logger $*"; }
. ./openwrt/porthole.init
start() { procd_open_service porthole; start_service "$@"; r=$?; procd_close_service; return $r; }
stop() { procd_kill porthole; }
`
}

// TestUCIBadCPUsKeepsRunningAgent: a cpus that is not a number is refused
// before anything is stopped, as a config check-config refuses is. It was
// checked in start_service only, after restart's stop: restart (and
// postinst's after every upgrade) stopped the agent, declared none, and
// said nothing failed; start while the agent ran stopped it too.
func TestUCIBadCPUsKeepsRunningAgent(t *testing.T) {
	openwrtShells(t, func(t *testing.T, shell []string) {
		for _, cpus := range []string{"all", "01", "-1"} {
			for _, action := range []string{"restart", "start", "reload_service"} {
				t.Run(cpus+"/"+action, func(t *testing.T) {
					dir := t.TempDir()
					fake := filepath.Join(dir, "porthole")
					os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755)
					state := filepath.Join(dir, "state-procd")
					os.WriteFile(state, []byte("running\n"), 0o644)
					conf := filepath.Join(dir, "porthole.toml")
					good := "# the config the agent runs on\n"
					os.WriteFile(conf, []byte(good), 0o600)
					script := uciStubs + procdModel(state) + uciMain(fake, dir, "enabled=1", "thing_name=router-7", "cpus="+shq(cpus)) + action + "\n"
					out, err := exec.Command(shell[0], append(shell[1:], "-c", script)...).CombinedOutput()
					if b, _ := os.ReadFile(state); string(b) != "running\n" {
						t.Errorf("%s with cpus %q: %v, the agent is %s, want it left running:\n%s", action, cpus, err, b, out)
					}
					if want := "cpus '" + cpus + "' is not a number"; !strings.Contains(string(out), "logger -t porthole -p daemon.err") || !strings.Contains(string(out), want) {
						t.Errorf("%s with cpus %q: output lacks %q in the system log:\n%s", action, cpus, want, out)
					}
					if b, _ := os.ReadFile(conf); string(b) != good {
						t.Errorf("%s with cpus %q: %s now holds %q, want the config that passed", action, cpus, conf, b)
					}
					switch action {
					case "restart", "reload_service":
						if err == nil || strings.Contains(string(out), "signal") {
							t.Errorf("%s with cpus %q: %v, want a failure and no SIGHUP:\n%s", action, cpus, err, out)
						}
					case "start":
						// procd is told nothing (TestUCIRefusedStartLeavesInstance).
						if err == nil || strings.Contains(string(out), "param ") {
							t.Errorf("start with cpus %q: %v, want a failure and no instance declared:\n%s", cpus, err, out)
						}
					}
				})
			}
		}
		// A start with no agent running starts none, and fails.
		dir := t.TempDir()
		fake := filepath.Join(dir, "porthole")
		os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755)
		state := filepath.Join(dir, "state-procd")
		os.WriteFile(state, []byte("stopped\n"), 0o644)
		script := uciStubs + procdModel(state) + uciMain(fake, dir, "enabled=1", "thing_name=router-7", "cpus=all") + "start\n"
		out, err := exec.Command(shell[0], append(shell[1:], "-c", script)...).CombinedOutput()
		if b, _ := os.ReadFile(state); err == nil || string(b) != "stopped\n" {
			t.Errorf("start with cpus all and no agent running: %v, the agent is %s, want a failure and none started:\n%s", err, b, out)
		}
	})
}

// TestUCIRefusedStartLeavesInstance: a start refused while the agent runs
// leaves procd's instance exactly as it was, so procd does not restart the
// agent. It declared the agent again, and procd restarts an instance whose
// declaration changed: with GOMAXPROCS=1 for a cpus refused (the agent ran
// with 2), with a valid cpus changed next to a refused config, or with the
// new checksums of a UCI file edited or of CONF rewritten by a reload.
func TestUCIRefusedStartLeavesInstance(t *testing.T) {
	openwrtShells(t, func(t *testing.T, shell []string) {
		for _, tc := range []struct {
			name   string
			before string // run, and must succeed, before the refused start
			change string // what the refused start sees, as shell assignments
		}{
			{"cpus refused", "", "CONFIG_main_cpus=all"},
			{"cpus changed, config refused", "", "CONFIG_main_cpus=3; touch $DIR/refuse"},
			{"UCI file edited, config refused", "", "echo '# edited' >>$UCI_CONF; touch $DIR/refuse"},
			{"reloaded, then config refused", "CONFIG_main_log_level=debug; reload_service", "CONFIG_main_log_level=debug; touch $DIR/refuse"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				fake := filepath.Join(dir, "porthole")
				// check-config refuses every config once the file refuse exists.
				os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = check-config ] && [ -e "+dir+"/refuse ] && { echo 'config: refused (fake)' >&2; exit 1; }\nexit 0\n"), 0o755)
				uci := filepath.Join(dir, "uci-porthole")
				os.WriteFile(uci, []byte("config porthole 'main'\n"), 0o600)
				state := filepath.Join(dir, "state-procd")
				os.WriteFile(state, []byte("stopped\n"), 0o644)
				run := func(action string) (string, error) {
					script := uciStubs + procdModel(state) + uciMain(fake, dir, "enabled=1", "thing_name=router-7", "cpus=2") +
						"UCI_CONF=" + uci + "\nDIR=" + dir + "\n" + action + "\n"
					out, err := exec.Command(shell[0], append(shell[1:], "-c", script)...).CombinedOutput()
					return string(out), err
				}
				if out, err := run("start"); err != nil || !strings.Contains(out, "param env GOMAXPROCS=2\n") {
					t.Fatalf("start with cpus 2: %v\n%s", err, out)
				}
				if tc.before != "" {
					if out, err := run(tc.before); err != nil {
						t.Fatalf("%s: %v\n%s", tc.before, err, out)
					}
				}
				declared, _ := os.ReadFile(state + ".declared")
				out, err := run(tc.change + "\nstart")
				if err == nil || !strings.Contains(out, "logger -t porthole -p daemon.err not started: ") || !strings.Contains(out, "the running agent keeps its last config") {
					t.Errorf("start (%s): %v, want it refused, logged, the agent kept:\n%s", tc.change, err, out)
				}
				if b, _ := os.ReadFile(state); string(b) != "running\n" {
					t.Errorf("start (%s): the agent is %s, want it running", tc.change, b)
				}
				if now, _ := os.ReadFile(state + ".declared"); string(now) != string(declared) {
					t.Errorf("start (%s): procd's instance is now\n%s\nwant it as it was\n%s", tc.change, now, declared)
				}
				if b, _ := os.ReadFile(state + ".starts"); string(b) != "start\n" {
					t.Errorf("start (%s): procd started the agent %d times, want once, at the first start:\n%s", tc.change, strings.Count(string(b), "start"), out)
				}
			})
		}
	})
}
