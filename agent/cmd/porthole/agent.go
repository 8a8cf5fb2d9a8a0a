//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/agent"
	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/sshd"
)

// usageNote ends `porthole -h`: the Linux build has every command.
const usageNote = ""

func loadConfig(path string) (*agent.Config, error) {
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		return nil, agent.Usagef("%s: %w", path, err)
	}
	return cfg, nil
}

// defaultMemoryLimit is the agent's soft memory limit when GOMEMLIMIT is not set.
// The agent's live heap is 1–5 MiB (10 SSH sessions and a transfer); with only
// GOGC=100 the heap grows to twice that and freed pages go back to the kernel
// slowly, so VmRSS reached 30–40 MiB under load. With this limit the collector
// and the scavenger keep the Go-managed memory near it (docs/benchmarks.md).
// With the packages' GOMAXPROCS=1, 13 MiB kept the peak of 10 sessions and an
// upload at 14.2–15.5 MiB VmRSS (14 MiB: up to 16.3) for the same 3.4–4.0 ms of
// agent CPU per MiB; with 2 Ps, 15.5–16.3 MiB for 4.6–5.4 ms/MiB (14 MiB: 16.6–17.6
// MiB, 4.3–5.2 ms/MiB). At 12 MiB with 2 Ps the SSH server's receive path, which
// allocates every packet, made that upload cost about twice the CPU. A busier agent
// goes past the limit at the price of more GC work, never an error. GOMEMLIMIT
// (e.g. "off" or "64MiB") overrides it.
const defaultMemoryLimit = 13 << 20

// smallMemoryLimit replaces defaultMemoryLimit on a device with less than
// smallDeviceRAM of RAM as the kernel counts it (MemTotal, below the chips'
// size): the 64 MB routers of DESIGN.md's budget, and most 128 MB ones. There the
// binary's pages take ~7.3 MiB of the agent's 16 MiB (docs/size.md). With 13 MiB
// the budget's load peaked at 15.9–16.2 MiB on the 64 MB mipsel board, over 16 MiB
// in two runs of six; 10 MiB held it at 14.3–14.7 MiB with no CPU cost that the
// board could measure. On a fast host the same limit costs 3–4x the agent's
// CPU per MiB of an upload (the collector runs through it: docs/benchmarks.md),
// which is why it is not the default everywhere.
const (
	smallMemoryLimit = 10 << 20
	smallDeviceRAM   = 128 << 20
)

// setMemoryLimit applies the default memory limit for a machine with ram bytes
// of RAM (0: unknown) unless GOMEMLIMIT is set. GOGC stays at Go's 100: GOGC=200
// took 15–25 % less CPU per MiB moved at the same peak with 10 sessions, but left
// VmRSS at 17.8 MiB instead of 14.0 MiB after 500 notifications in a burst
// (docs/benchmarks.md); set GOGC=200 where memory allows.
func setMemoryLimit(getenv func(string) string, ram uint64) {
	if getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := int64(defaultMemoryLimit)
	if ram > 0 && ram < smallDeviceRAM {
		limit = smallMemoryLimit
	}
	debug.SetMemoryLimit(limit)
}

// totalRAM is the machine's RAM in bytes as the kernel reports it (MemTotal),
// 0 if it cannot tell.
func totalRAM() uint64 {
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(max(si.Unit, 1))
}

// configFlag parses the -c flag of a subcommand, and the flags more defines,
// and loads that config file.
func configFlag(name string, args []string, stdout, stderr io.Writer, more func(*flag.FlagSet)) (*agent.Config, string, error) {
	fs := flag.NewFlagSet("porthole "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", defaultConfig, "config file")
	if more != nil {
		more(fs)
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return nil, "", err
	}
	if *path == "" { // not "open : no such file or directory"
		return nil, "", agent.Usagef("-c: empty")
	}
	cfg, err := loadConfig(*path)
	return cfg, *path, err
}

func runAgent(args []string, stdout, stderr io.Writer) error {
	// The signals are caught before anything else, each kind on a channel of
	// its own. Until Notify, Go's default for SIGHUP is to exit, and an init
	// system's reload right after a start (reload_config after the first uci
	// commit) killed the agent while it read its config; systemd takes a
	// SIGHUP as a clean end and does not restart it. From Notify on, a SIGHUP
	// is a reload once the agent runs. A window remains that no code here can
	// close: the Go runtime's start and package initialisation before main
	// (tens of ms on amd64, more on a MIPS router), where a SIGHUP still
	// kills. The packaging closes it: the systemd unit is Type=notify, and
	// systemd holds a reload back until notifyReady, below, has said READY=1;
	// OpenWrt's procd script and the SysV script run check-config before
	// their reload sends the signal, a whole start of this binary, longer
	// than that window. On one channel with SIGTERM, a burst of SIGHUPs, each
	// a reload of some milliseconds, filled it, and package signal drops what
	// does not fit: the SIGTERM was lost. SIGHUPs that come during a reload
	// are one more reload, which reads the file as it is then.
	stop := make(chan os.Signal, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	signal.Notify(hup, syscall.SIGHUP)
	// A log output that goes away (the reader of a stderr pipe: logger in a
	// pipeline, a supervisor's log service restarted) must not end the agent:
	// Go kills a program whose write to fd 1 or 2 gets EPIPE unless SIGPIPE is
	// handled. Handled, not ignored: an ignored signal stays ignored across
	// exec, and the programs of SSH sessions need SIGPIPE at its default.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(stop)
	defer signal.Stop(hup)
	defer signal.Stop(pipe)
	if os.Getpid() == 1 {
		asInit(stop, hup, stderr)
	}
	notifyErr := notifyReady()
	cfg, path, err := configFlag("agent", args, stdout, stderr, nil)
	if err != nil {
		return err
	}
	sshd.CloseInheritedOnExec()
	setMemoryLimit(os.Getenv, totalRAM())
	var level slog.LevelVar
	out := newLogWriter(os.Stderr)
	defer out.close(2 * time.Second)
	log := cfg.Log.NewLogger(out, &level)
	out.onDropped(func(n int) {
		log.Warn("log lines dropped: the log output did not take them in time", "dropped", n)
	})
	if notifyErr != nil {
		log.Warn("cannot tell systemd the agent has started: a Type=notify unit will time out its start", "error", notifyErr)
	}
	a, err := agent.New(cfg, log)
	if err != nil {
		if errors.Is(err, notify.ErrNotReady) {
			// The MQTT identity files or tunnel.ca_file are on
			// storage not mounted yet, or half written: a runtime
			// failure (exit 2), which the init system restarts until
			// they load. (ssh.host_keys: Run says so the same way.)
			return err
		}
		return agent.Usagef("%w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for {
		select {
		case err := <-done:
			return err
		case <-hup:
			// What the agent would refuse at its next start is refused
			// now, while the running config still serves: taken, its
			// "needs a restart" would lead to a restart that fails (exit 1).
			// The MQTT files it runs with are the exception: a reload does
			// not read them (CheckReload warns).
			ncfg, err := agent.LoadConfig(path)
			if err == nil {
				err = a.CheckReload(ncfg)
			}
			if err != nil {
				log.Error("reload refused: config invalid, keeping the running one", "error", err)
				continue
			}
			ncfg.Log.SetLevel(&level)
			if restart := a.Reload(ncfg); len(restart) > 0 {
				log.Warn("reloaded the service map, SSH logins and log level; these changes need a restart", "keys", strings.Join(restart, ", "))
			} else {
				log.Info("reloaded the service map, SSH logins and log level")
			}
		case sig := <-stop:
			log.Info("stopping", "signal", sig.String())
			cancel()
			select {
			case err := <-done:
				return err
			case <-time.After(5 * time.Second): // Run's own stop ends within 4 s (agent's stopBudget)
				log.Warn("the agent did not stop within 5s; exiting anyway")
				return nil
			}
		}
	}
}

func runCheckConfig(args []string, stdout, stderr io.Writer) error {
	var start bool
	cfg, path, err := configFlag("check-config", args, stdout, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&start, "start", false, "check only what stops the agent from starting, as init scripts do: the device certificate's dates are warnings")
	})
	if err != nil {
		return err
	}
	check := agent.Check
	if start {
		check = agent.CheckStart
	}
	if err := check(cfg); err != nil {
		return agent.Usagef("%s: %w", path, err)
	}
	for _, w := range agent.Warnings(cfg) {
		fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
	}
	fmt.Fprintf(stdout, "%s: ok (thing %s; services: %d; data in %s)\n", path, cfg.ThingName, len(cfg.Services), cfg.DataDir)
	return nil
}

// defaultConfig is the config file the agent reads without -c.
const defaultConfig = "/etc/porthole/porthole.toml"

// runKeygen prints the fingerprint of the host key the agent uses: the one in the
// data_dir of its config (-c, default defaultConfig) or in -data-dir. Without
// either and without the default config it refuses rather than guess: a wrong
// guess prints a key the agent never presents, which operators would then pin.
func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("porthole keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", defaultConfig, "config file (its data_dir holds the key)")
	dir := fs.String("data-dir", "", "data directory, instead of a config's data_dir")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	given := flagsGiven(fs)
	dataDir := *dir
	var extra []string // the config's ssh.host_keys, presented too
	switch {
	case given["c"] && given["data-dir"]:
		return agent.Usagef("give -c or -data-dir, not both")
	case *path == "":
		return agent.Usagef("-c: empty")
	case given["data-dir"]:
		if dataDir == "" {
			return agent.Usagef("-data-dir: empty")
		}
		// As data_dir in the config: a relative one would name another
		// directory for every working directory keygen runs in.
		if !filepath.IsAbs(dataDir) {
			return agent.Usagef("-data-dir %q must be an absolute path, as data_dir in the config", dataDir)
		}
	default:
		if _, err := os.Stat(*path); !given["c"] && errors.Is(err, os.ErrNotExist) {
			return agent.Usagef("no config at %s: give the agent's config with -c (on OpenWrt: -c /var/etc/porthole.toml) or its data directory with -data-dir", *path)
		}
		cfg, err := loadConfig(*path)
		if err != nil {
			// Before the config is complete (a first boot, an image being
			// built), the key is still there to print: say how.
			return agent.Usagef("%w (the key needs only the data directory: -data-dir)", err)
		}
		dataDir, extra = cfg.DataDir, cfg.SSH.HostKeys
	}
	keys, err := agent.HostPublicKeys(dataDir, extra)
	if err != nil {
		return agent.Usagef("%w", err)
	}
	for _, k := range keys {
		fmt.Fprintf(stdout, "%s %s\n", k.Type(), gossh.FingerprintSHA256(k))
	}
	return nil
}
