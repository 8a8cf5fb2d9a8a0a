package board

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Conf is a board's board.conf, as sh reads it.
type Conf struct {
	Dir         string // the board/ folder (build.sh, boot.sh and one folder per board)
	Name        string
	GOARCH      string
	GOENV       string // VAR=value or empty
	UnameM      string // UNAME_M: what uname -m says in the guest
	QEMU        string // the emulator program is the first word
	QEMUPackage string // QEMU_PKG: the Debian package with the emulator
	BootTimeout time.Duration
	KernelArgs  string // TEST_KERNEL_ARGS
}

// Load reads dir/name/board.conf with sh, where dir is the board/ folder.
func Load(dir, name string) (Conf, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || name[0] == '.' {
		return Conf{}, fmt.Errorf("board %q: want a folder name under %s (%s)", name, dir, strings.Join(Names(dir), ", "))
	}
	path := filepath.Join(dir, name, "board.conf")
	if _, err := os.Stat(path); err != nil {
		return Conf{}, fmt.Errorf("no board %q in %s (want one of: %s)", name, dir, strings.Join(Names(dir), ", "))
	}
	out, err := exec.Command("sh", "-c", `. "$1"; printf '%s\n' "$GOARCH" "$GOENV" "$UNAME_M" "$QEMU" "$QEMU_PKG" "$BOOT_TIMEOUT" "${TEST_KERNEL_ARGS:-}"`,
		"sh", path).Output()
	if err != nil {
		return Conf{}, fmt.Errorf("reading %s: %v", path, err)
	}
	f := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(f) != 7 {
		return Conf{}, fmt.Errorf("%s: got %d values, want 7: %q", path, len(f), f)
	}
	secs, err := strconv.Atoi(f[5])
	if err != nil {
		return Conf{}, fmt.Errorf("%s: BOOT_TIMEOUT %q: %v", path, f[5], err)
	}
	return Conf{Dir: dir, Name: name, GOARCH: f[0], GOENV: f[1], UnameM: f[2], QEMU: f[3], QEMUPackage: f[4],
		BootTimeout: time.Duration(secs) * time.Second, KernelArgs: f[6]}, nil
}

// Names lists the board folders in dir (those with a board.conf).
func Names(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "*", "board.conf"))
	var names []string
	for _, f := range m {
		names = append(names, filepath.Base(filepath.Dir(f)))
	}
	return names
}

// Emulator is the QEMU program the board boots with.
func (c Conf) Emulator() string { return strings.Fields(c.QEMU)[0] }

// GoBuild is the command that cross-builds the porthole binary for the board into
// out, as make cross builds it (static, trimmed, stripped, with the device's
// compiler flags and GOEXPERIMENT), with version as agent.Version. It runs in the
// board folder, inside the module.
func (c Conf) GoBuild(ctx context.Context, out, version string) (*exec.Cmd, error) {
	device := filepath.Join(c.Dir, "..", "agent", "cmd", "porthole")
	gcflags, err := DeviceGCFlags(filepath.Join(device, "device.gcflags"))
	if err != nil {
		return nil, err
	}
	experiment, err := DeviceGOEXPERIMENT(ctx, filepath.Join(device, "device.goexperiment"))
	if err != nil {
		return nil, err
	}
	args := append([]string{"build", "-trimpath", "-tags", "netgo,osusergo"}, gcflags...)
	args = append(args, "-ldflags", "-s -w -X github.com/porthole-iot/porthole/agent.Version="+version, "-o", out,
		"github.com/porthole-iot/porthole/agent/cmd/porthole")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+c.GOARCH, "GOEXPERIMENT="+experiment)
	if c.GOENV != "" {
		cmd.Env = append(cmd.Env, c.GOENV)
	}
	return cmd, nil
}

// DeviceGOEXPERIMENT reads agent/cmd/porthole/device.goexperiment, the device
// build's GOEXPERIMENT, which the Makefile and the Buildroot package read too:
// the experiments of its one value line that the go command on PATH knows,
// joined by commas, or "" if it has none. One it does not know (Go drops
// experiments in time) is left out, as they leave it out: the build then has the
// toolchain's default there.
func DeviceGOEXPERIMENT(ctx context.Context, path string) (string, error) {
	values, err := deviceValues(path, "GOEXPERIMENT")
	switch {
	case err != nil:
		return "", err
	case len(values) > 1:
		return "", fmt.Errorf("%s: %d values: want one GOEXPERIMENT line (experiments joined by commas)", path, len(values))
	case len(values) == 0:
		return "", nil
	}
	var known []string
	for _, e := range strings.Split(values[0], ",") {
		if e == "" {
			continue
		}
		check := exec.CommandContext(ctx, "go", "env", "GOEXPERIMENT")
		check.Env = append(os.Environ(), "GOEXPERIMENT="+e)
		if check.Run() == nil {
			known = append(known, e)
		}
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return strings.Join(known, ","), nil
}

// DeviceGCFlags reads agent/cmd/porthole/device.gcflags, the file the Makefile and
// the Buildroot package read too, as go build arguments: -gcflags=LINE for each
// value line.
func DeviceGCFlags(path string) ([]string, error) {
	values, err := deviceValues(path, "-gcflags")
	if err != nil {
		return nil, err
	}
	if len(values) == 0 {
		return nil, fmt.Errorf("%s: no flags", path)
	}
	flags := make([]string, len(values))
	for i, v := range values {
		flags[i] = "-gcflags=" + v
	}
	return flags, nil
}

// deviceValues reads one of the device build's settings files: its lines that
// are neither empty nor a # comment, each one what value of the build, without
// white space (make reads these files with grep and sed, line by line).
func deviceValues(path, what string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("the device's %s: %w", what, err)
	}
	var values []string
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t\r") {
			return nil, fmt.Errorf("%s: %q: want one %s value per line, without spaces", path, line, what)
		}
		values = append(values, line)
	}
	return values, nil
}
