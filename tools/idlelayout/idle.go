package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/porthole-iot/porthole/board"
	"github.com/porthole-iot/porthole/tools/internal/atomicfile"
	"github.com/porthole-iot/porthole/tools/lab"
)

// subscribed is the agent's log message once it listens for tunnels: idle from then.
const subscribed = "notify subscription granted"

// buildDevice builds the mipsle device binary into out as make size does:
// the device's compiler flags and GOEXPERIMENT, unstripped.
func buildDevice(ctx context.Context, out string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	device := filepath.Join(root, "agent", "cmd", "porthole")
	gcflags, err := board.DeviceGCFlags(filepath.Join(device, "device.gcflags"))
	if err != nil {
		return fmt.Errorf("%w (run it in the porthole module, or give -bin)", err)
	}
	experiment, err := board.DeviceGOEXPERIMENT(ctx, filepath.Join(device, "device.goexperiment"))
	if err != nil {
		return err
	}
	args := append([]string{"build", "-trimpath", "-tags", "netgo,osusergo"}, gcflags...)
	cmd := exec.CommandContext(ctx, "go", append(args, "-o", out, "./agent/cmd/porthole")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat", "GOEXPERIMENT="+experiment)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %w", cmd.Args, err)
	}
	return nil
}

// privateDir makes dir (0700) and returns it absolute. It refuses one below a
// directory that group or others can write, such as /tmp, as given or with
// symlinks resolved: the agent's SSH server would ignore its authorized_keys
// there, as OpenSSH's StrictModes does, and the idle agent would run other code.
func privateDir(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := checkParents(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	return dir, checkParents(real)
}

func checkParents(dir string) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("%s is below %s, which others can write: the agent would ignore its authorized_keys there; choose another -state", dir, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// An idleRun is one traced run of the idle agent.
type idleRun struct {
	bin, qemu string
	dir       string // private: the lab, the agent's configuration, log and data
	trace     string // the qemu log to write
	wait      time.Duration
}

// traceIdle starts the lab's broker, runs the agent under qemu with an in_asm
// trace until it has been subscribed for r.wait, and kills it: SIGKILL, so that
// its shutdown is not in the trace.
func traceIdle(ctx context.Context, r idleRun) error {
	qemu, err := exec.LookPath(r.qemu)
	if err != nil {
		return fmt.Errorf("%w: install qemu-user-static (tools/deps.sh qemu)", err)
	}
	labDir := filepath.Join(r.dir, "lab")
	os.Remove(filepath.Join(labDir, "lab.json")) // one left by a killed run
	ctx, cancel := context.WithCancel(ctx)
	var labErr error
	labDone := make(chan struct{})
	go func() { labErr = lab.Run(ctx, lab.Options{StateDir: labDir, NoAgent: true}); close(labDone) }()
	defer func() { cancel(); <-labDone }()
	var info lab.Info
	if err := poll(ctx, labDone, func() error { return labErr }, 30*time.Second, "the lab's broker", func() bool {
		b, err := os.ReadFile(filepath.Join(labDir, "lab.json"))
		return err == nil && json.Unmarshal(b, &info) == nil
	}); err != nil {
		return err
	}

	data := filepath.Join(r.dir, "data")
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	if err := os.Mkdir(data, 0o700); err != nil {
		return err
	}
	config := filepath.Join(r.dir, "porthole.toml")
	if err := atomicfile.Write(config, []byte(agentConfig(info, data)), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(r.dir, "agent.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	os.Remove(r.trace)
	cmd := exec.Command(qemu, "-d", "in_asm", "-D", r.trace, r.bin, "agent", "-c", config)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	logFile.Close()
	if err != nil {
		return err
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() { cmd.Process.Kill(); <-exited }()
	if err := poll(ctx, exited, func() error { return waitErr }, 2*time.Minute, "the agent ("+logPath+")", func() bool {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, []byte(subscribed))
	}); err != nil {
		return err
	}
	select {
	case <-time.After(r.wait):
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil // killed by the deferred Kill
}

// poll calls done every 200 ms until it is true; it fails if what ends first
// (closing ended; why says how), or after limit.
func poll(ctx context.Context, ended <-chan struct{}, why func() error, limit time.Duration, what string, done func() bool) error {
	deadline := time.After(limit)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-ended:
			return fmt.Errorf("%s ended before it was ready: %v", what, why())
		case <-deadline:
			return fmt.Errorf("%s: not ready after %v", what, limit)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// agentConfig is the boards' configuration (board/board_test.go's writeOverlay)
// with the lab's broker and files: builtin SSH, a ws:// tunnel endpoint it never
// dials, no [ssh] listen.
func agentConfig(info lab.Info, data string) string {
	return fmt.Sprintf(`# written by tools/idlelayout
thing_name = %q
data_dir = %q

[mqtt]
endpoint = %q
ca_file = %q
cert_file = %q
key_file = %q

[tunnel]
endpoint = "ws://10.0.2.2:1"
allow_insecure_websocket = true

[services]
SSH = "builtin"

[ssh]
authorized_keys = [%q]

[log]
level = "info"
`, info.Thing, data, info.Broker, info.CAFile, info.DeviceCert, info.DeviceKey,
		filepath.Join(info.StateDir, "device", "authorized_keys"))
}
