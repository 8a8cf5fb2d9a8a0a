package lab

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/board"
	"github.com/porthole-iot/porthole/tools/internal/atomicfile"
)

// ErrPrerequisite matches (errors.Is) the errors that stop the lab before it
// starts anything: a program --board needs is not installed, no such board, no
// porthole binary, a state directory the agent's SSH server would not trust, or
// one another user could change, or a user /etc/passwd does not list.
var ErrPrerequisite = errors.New("missing prerequisite")

// prereqError is one of those: its text is the whole message.
type prereqError struct{ error }

func (prereqError) Is(target error) bool { return target == ErrPrerequisite }

// findBoardDir returns the source tree's board/ folder (the one with build.sh),
// looking in the working directory and its parents.
func findBoardDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "board", "build.sh")); err == nil {
			return filepath.Join(d, "board"), nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("--board needs the porthole source tree (board/build.sh): run the lab from it (%s is not inside one)", wd)
		}
	}
}

// loadBoard reads the board's board.conf and checks the programs building and
// booting it need (tools/deps.sh board installs them).
func loadBoard(dir, name string) (board.Conf, error) {
	var err error
	if dir == "" {
		if dir, err = findBoardDir(); err != nil {
			return board.Conf{}, prereqError{err}
		}
	}
	c, err := board.Load(dir, name)
	if err != nil {
		return c, prereqError{err}
	}
	for _, p := range []struct{ prog, pkg string }{{c.Emulator(), c.QEMUPackage}, {"go", "golang (or Go from go.dev)"},
		{"cpio", "cpio"}, {"readelf", "binutils"}, {"apt-get", "apt"}, {"dpkg-deb", "dpkg"}, {"gzip", "gzip"}} {
		if _, err := exec.LookPath(p.prog); err != nil {
			return c, prereqError{fmt.Errorf("--board %s needs %s: install the Debian package %s (tools/deps.sh board installs what the boards need)",
				name, p.prog, p.pkg)}
		}
	}
	return c, nil
}

// boardFiles are the board's build outputs under the state directory.
type boardFiles struct {
	dir      string // STATE/board/NAME
	porthole string
	overlay  string
	out      string
	hostKey  string // the guest's SSH host key, kept between runs (known_hosts pins it)
}

func newBoardFiles(state, name string) boardFiles {
	d := filepath.Join(state, "board", name)
	return boardFiles{dir: d, porthole: filepath.Join(d, "porthole"), overlay: filepath.Join(d, "overlay"),
		out: filepath.Join(d, "out"), hostKey: filepath.Join(d, "ssh_host_ed25519_key")}
}

// crossBuild builds porthole for the board, as make cross does.
func crossBuild(ctx context.Context, c board.Conf, f boardFiles) error {
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	build, err := c.GoBuild(ctx, f.porthole, "lab")
	if err != nil {
		return err
	}
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for %s %s: %v\n%s", c.GOARCH, c.GOENV, err, out)
	}
	return nil
}

// buildImage writes the overlay (/etc/porthole and the host key in
// /var/lib/porthole) and runs board/build.sh. The guest reaches the host's broker,
// tunneld and status page at 10.0.2.2 (QEMU's user network).
func buildImage(ctx context.Context, c board.Conf, f boardFiles, info Info, brokerPort, tdPort, statusPort string) error {
	if err := os.RemoveAll(f.overlay); err != nil {
		return err
	}
	etc := filepath.Join(f.overlay, "etc", "porthole")
	data := filepath.Join(f.overlay, "var", "lib", "porthole")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	if err := hostKey(f.hostKey); err != nil {
		return err
	}
	g := guestHost.String()
	cfg := fmt.Sprintf(`# Written by porthole-lab --board %s on every start; /etc/porthole/porthole.toml in the board.
thing_name = %q
data_dir = "/var/lib/porthole"

[mqtt]
endpoint = "%s:%s"
ca_file = "/etc/porthole/ca.pem"
cert_file = "/etc/porthole/device.pem.crt"
key_file = "/etc/porthole/device.pem.key"
event_topic = "porthole/events/%s"

[tunnel]
endpoint = "%s:%s"
ca_file = "/etc/porthole/ca.pem"

[services]
SSH = "builtin"
HTTP = "%s:%s"

[ssh]
authorized_keys = ["/etc/porthole/authorized_keys"]

[log]
level = "info"
`, c.Name, Thing, g, brokerPort, Thing, g, tdPort, g, statusPort)
	for _, cp := range []struct {
		from, to string
		mode     os.FileMode
	}{
		{info.CAFile, filepath.Join(etc, "ca.pem"), 0o644},
		{info.DeviceCert, filepath.Join(etc, "device.pem.crt"), 0o644},
		{info.DeviceKey, filepath.Join(etc, "device.pem.key"), 0o600},
		{filepath.Join(info.StateDir, "device", "authorized_keys"), filepath.Join(etc, "authorized_keys"), 0o600},
		{f.hostKey, filepath.Join(data, "ssh_host_ed25519_key"), 0o600},
	} {
		b, err := os.ReadFile(cp.from)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(cp.to, b, cp.mode); err != nil {
			return err
		}
	}
	if err := atomicfile.Write(filepath.Join(etc, "porthole.toml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.Dir, "build.sh"), c.Name, f.porthole, f.overlay, f.out)
	cmd.Dir = c.Dir
	// A stopped lab kills build.sh's process group, not build.sh alone: its
	// children (fetch.sh's apt-get) kept running and held the output pipe,
	// and the lab waited for them before it stopped.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("board/build.sh %s: %v\n%s", c.Name, err, out)
	}
	return nil
}

// hostKey makes the guest's ed25519 SSH host key (OpenSSH format) if missing.
func hostKey(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := gossh.MarshalPrivateKey(priv, "porthole lab board host key")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, pem.EncodeToMemory(block), 0o600)
}

// bootBoard starts board/boot.sh (which execs QEMU) with the serial console in
// logPath. stop powers the board off (SIGTERM to QEMU's process group, SIGKILL
// after 5 s) and returns once QEMU is gone; exited is closed when QEMU exits.
func bootBoard(c board.Conf, f boardFiles, logPath string) (exited <-chan struct{}, stop func(), err error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, err
	}
	defer lf.Close()
	cmd := exec.Command(filepath.Join(c.Dir, "boot.sh"), c.Name, f.out)
	cmd.Dir = c.Dir
	cmd.Stdout, cmd.Stderr = lf, lf
	// Its own process group (startGroup: a terminal's Ctrl-C reaches the lab,
	// which powers the board off), and killed with the lab if the lab dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	qemu, err := startGroup(cmd)
	if err != nil {
		return nil, nil, fmt.Errorf("board/boot.sh %s: %w", c.Name, err)
	}
	stop = func() {
		qemu.signal(syscall.SIGTERM)
		select {
		case <-qemu.exited:
		case <-time.After(5 * time.Second):
			qemu.signal(syscall.SIGKILL)
			<-qemu.exited
		}
	}
	return qemu.exited, stop, nil
}

// port is the port of a host:port address.
func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
