package brcheck

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// installedConfig is what the checks below read of /etc/porthole/porthole.toml.
type installedConfig struct {
	ThingName string `toml:"thing_name"`
	MQTT      struct {
		Endpoint string `toml:"endpoint"`
		CAFile   string `toml:"ca_file"`
	} `toml:"mqtt"`
	Tunnel struct {
		Endpoint string `toml:"endpoint"`
		CAFile   string `toml:"ca_file"`
	} `toml:"tunnel"`
}

// TestInstallConfig: the target install writes BR2_PACKAGE_PORTHOLE_THING_NAME
// and BR2_PACKAGE_PORTHOLE_MQTT_ENDPOINT into /etc/porthole/porthole.toml
// (0600), and a rebuild after either changed writes the new value over the
// old one, not only over the placeholder; the endpoint is [mqtt]'s, never
// [tunnel]'s.
func TestInstallConfig(t *testing.T) {
	gobin, _ := fakeGo(t, "go1.26.0")
	arch := []string{"BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R2=y", "BR2_MIPS_SOFT_FLOAT=y"}
	options := func(thing, endpoint string) []string {
		return append(hostGo(gobin, arch...),
			`BR2_PACKAGE_PORTHOLE_THING_NAME="`+thing+`"`, `BR2_PACKAGE_PORTHOLE_MQTT_ENDPOINT="`+endpoint+`"`)
	}
	p := newPkg(t, options("one", "one-ats.iot.eu-west-1.amazonaws.com:8883")...)
	p.copyGoMod()
	conf := filepath.Join(p.target, "etc/porthole/porthole.toml")
	install := func(targets ...string) installedConfig {
		t.Helper()
		if out, err := p.make(targets...); err != nil {
			t.Fatalf("make %v: %v\n%s", targets, err, out)
		}
		var c installedConfig
		if _, err := toml.DecodeFile(conf, &c); err != nil {
			t.Fatalf("installed porthole.toml: %v", err)
		}
		return c
	}

	c := install("built", "target_installed")
	if c.ThingName != "one" || c.MQTT.Endpoint != "one-ats.iot.eu-west-1.amazonaws.com:8883" {
		t.Errorf("first install: thing_name %q, mqtt.endpoint %q; want the options'", c.ThingName, c.MQTT.Endpoint)
	}
	if st, err := os.Stat(conf); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("porthole.toml: %v, want mode 600", err)
	}

	// The options changed; the rebuild keeps the file and rewrites both.
	p.config = strings.Join(options("two", "two-ats.iot.eu-west-1.amazonaws.com"), "\n") + "\n"
	c = install("target_installed")
	if c.ThingName != "two" || c.MQTT.Endpoint != "two-ats.iot.eu-west-1.amazonaws.com" {
		t.Errorf("rebuild with new options: thing_name %q, mqtt.endpoint %q; want the new ones", c.ThingName, c.MQTT.Endpoint)
	}

	// A config of the user's own (kept: the package installs none over it)
	// with a [tunnel] endpoint, after [mqtt] or before it.
	for _, text := range []string{
		"thing_name = \"x\"\n[mqtt]\nendpoint = \"old.example.com\"\n[tunnel]\nendpoint = \"tunnel.example.com\"\n",
		"thing_name = \"x\"\n[tunnel]\nendpoint = \"tunnel.example.com\"\n[mqtt]\nendpoint = \"old.example.com\"\n",
	} {
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c = install("target_installed")
		if c.MQTT.Endpoint != "two-ats.iot.eu-west-1.amazonaws.com" || c.Tunnel.Endpoint != "tunnel.example.com" {
			b, _ := os.ReadFile(conf)
			t.Errorf("install over\n%s: mqtt.endpoint %q, tunnel.endpoint %q; want the option's and tunnel.example.com kept\n%s", text, c.MQTT.Endpoint, c.Tunnel.Endpoint, b)
		}
	}
}

// TestInstallConfigDataPlaneCA: the config the package installs gives the
// tunnels' TLS a CA of its own, the one the board's readme.txt puts in the
// overlay for MQTT (Amazon Root CA 1, which signs AWS IoT Secure Tunneling's
// certificates too). The package selects no CA bundle (ca-certificates, some
// 200 KB of flash), so on a board that enables porthole and nothing else the
// agent found no system roots, and every tunnel failed its TLS check
// ("certificate signed by unknown authority") while MQTT, whose CA the config
// names, worked.
func TestInstallConfigDataPlaneCA(t *testing.T) {
	gobin, _ := fakeGo(t, "go1.26.0")
	p := newPkg(t, append(hostGo(gobin, "BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R2=y", "BR2_MIPS_SOFT_FLOAT=y"),
		`BR2_PACKAGE_PORTHOLE_THING_NAME="gw-17"`, "# BR2_PACKAGE_CA_CERTIFICATES is not set")...)
	p.copyGoMod()
	if out, err := p.make("built", "target_installed"); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	var c installedConfig
	if _, err := toml.DecodeFile(filepath.Join(p.target, "etc/porthole/porthole.toml"), &c); err != nil {
		t.Fatalf("installed porthole.toml: %v", err)
	}
	if c.Tunnel.CAFile == "" || c.Tunnel.CAFile != c.MQTT.CAFile {
		t.Errorf("installed porthole.toml: tunnel.ca_file %q, mqtt.ca_file %q; want tunnel.ca_file set to mqtt.ca_file (Amazon Root CA 1): the image may have no CA bundle", c.Tunnel.CAFile, c.MQTT.CAFile)
	}
	readme := read(t, filepath.Join(tree, "board/qemu-mipsel/readme.txt"))
	if !strings.Contains(readme, filepath.Base(c.Tunnel.CAFile)) {
		t.Errorf("the board's readme.txt does not ask for %s, the CA the installed config names:\n%s", filepath.Base(c.Tunnel.CAFile), readme)
	}
}

// TestPermissions: Buildroot copies a rootfs overlay with go=rX, so the
// secrets the board's readme.txt asks for in its overlay would be
// world-readable in the image; PORTHOLE_PERMISSIONS, a makedevs table applied
// when the images are made, makes each root's and 0600, with type F (skipped
// when the file is missing: an image without a key yet still builds; f would
// fail it).
func TestPermissions(t *testing.T) {
	p := newPkg(t, "BR2_PACKAGE_PORTHOLE=y")
	table := p.expandVar("PORTHOLE_PERMISSIONS")
	got := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		// name type mode uid gid major minor start inc count (Buildroot
		// manual, "Makedev syntax documentation").
		if len(f) != 10 || f[1] != "F" || f[2] != "600" || f[3] != "0" || f[4] != "0" || strings.Join(f[5:], " ") != "- - - - -" {
			t.Errorf("PORTHOLE_PERMISSIONS line %q, want NAME F 600 0 0 - - - - -", line)
			continue
		}
		got[f[0]] = true
	}
	for _, secret := range []string{"device.pem.key", "authorized_keys", "porthole.toml"} {
		if !got["/etc/porthole/"+secret] {
			t.Errorf("PORTHOLE_PERMISSIONS lacks /etc/porthole/%s:\n%s", secret, table)
		}
	}
	readme := read(t, filepath.Join(tree, "board/qemu-mipsel/readme.txt"))
	if !strings.Contains(readme, "PORTHOLE_PERMISSIONS") {
		t.Errorf("the board's readme.txt does not say what makes its secrets 0600 (PORTHOLE_PERMISSIONS):\n%s", readme)
	}
}

// TestInstallConfigEmptyOptions: options left empty are `=""` in Buildroot's
// .config (strings keep their quotes), which make sees as a value of two
// characters. Config.in says an empty option leaves the config alone: a
// porthole.toml already in the target (another package's, a previous
// install's) keeps its thing_name and endpoint, and the package's own keeps
// its placeholders.
func TestInstallConfigEmptyOptions(t *testing.T) {
	gobin, _ := fakeGo(t, "go1.26.0")
	p := newPkg(t, append(hostGo(gobin, "BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R2=y", "BR2_MIPS_SOFT_FLOAT=y"),
		`BR2_PACKAGE_PORTHOLE_THING_NAME=""`, `BR2_PACKAGE_PORTHOLE_MQTT_ENDPOINT=""`)...)
	p.copyGoMod()
	conf := filepath.Join(p.target, "etc/porthole/porthole.toml")
	if out, err := p.make("built", "target_installed"); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	var c installedConfig
	if _, err := toml.DecodeFile(conf, &c); err != nil {
		t.Fatalf("installed porthole.toml: %v", err)
	}
	if c.ThingName != "CHANGE-ME" || !strings.HasPrefix(c.MQTT.Endpoint, "CHANGE-ME") {
		t.Errorf("empty options: thing_name %q, mqtt.endpoint %q; want the placeholders kept", c.ThingName, c.MQTT.Endpoint)
	}

	own := "thing_name = \"gw-17\"\n[mqtt]\nendpoint = \"abc-ats.iot.eu-west-1.amazonaws.com\"\n"
	if err := os.WriteFile(conf, []byte(own), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(p.dir, ".stamp_target_installed"))
	if out, err := p.make("target_installed"); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(conf); string(b) != own {
		t.Errorf("install with empty options over a porthole.toml already in the target rewrote it:\n%s\nwant it kept:\n%s", b, own)
	}
}

// TestInstallInitSysV: the target install puts tools/pkg's SysV script in
// /etc/init.d/S50porthole (0755) with BR2_PACKAGE_PORTHOLE_SYSV_INIT, under
// each init system Buildroot installs SysV scripts for, and none without it:
// an agent that /etc/inittab starts too looped on the script's agent's lock.
func TestInstallInitSysV(t *testing.T) {
	gobin, _ := fakeGo(t, "go1.26.0")
	for _, tc := range []struct {
		name   string
		config []string
		want   bool
	}{
		{"BusyBox init", []string{"BR2_INIT_BUSYBOX=y", "BR2_PACKAGE_PORTHOLE_SYSV_INIT=y"}, true},
		{"OpenRC", []string{"BR2_INIT_OPENRC=y", "BR2_PACKAGE_PORTHOLE_SYSV_INIT=y"}, true},
		{"BusyBox init, inittab starts the agent", []string{"BR2_INIT_BUSYBOX=y", "# BR2_PACKAGE_PORTHOLE_SYSV_INIT is not set"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPkg(t, append(hostGo(gobin, "BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R2=y", "BR2_MIPS_SOFT_FLOAT=y"), tc.config...)...)
			p.copyGoMod()
			if out, err := p.make("built", "target_installed"); err != nil {
				t.Fatalf("make: %v\n%s", err, out)
			}
			if _, err := os.Stat(filepath.Join(p.target, "usr/bin/porthole")); err != nil {
				t.Error(err)
			}
			script := filepath.Join(p.target, "etc/init.d/S50porthole")
			st, err := os.Stat(script)
			if !tc.want {
				if err == nil {
					t.Errorf("%s installed without BR2_PACKAGE_PORTHOLE_SYSV_INIT", script)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o755 {
				t.Errorf("%s: mode %o, want 755", script, st.Mode().Perm())
			}
			if read(t, script) != read(t, "../pkg/sysv/porthole") {
				t.Errorf("%s is not tools/pkg/sysv/porthole", script)
			}
		})
	}
}

// overlayExclusions are what Buildroot leaves out when it copies a
// BR2_ROOTFS_OVERLAY into the target (target-finalize in its Makefile: rsync
// -a $(RSYNC_VCS_EXCLUSIONS) --exclude .empty --exclude '*~').
var overlayExclusions = []string{".svn", ".git", ".hg", ".bzr", "CVS", ".empty", "*~"}

// TestOverlayShipsNoFilesOfItsOwn: a defconfig's rootfs overlay of this tree
// holds the folders the device's own files go in (the certificate, its key,
// authorized_keys) and no file of the tree's: Buildroot copies whatever it
// holds into the image, and the README that says which files to put there
// was installed as the device's /etc/porthole/README.
func TestOverlayShipsNoFilesOfItsOwn(t *testing.T) {
	overlay := regexp.MustCompile(`(?m)^BR2_ROOTFS_OVERLAY="([^"]*)"`)
	for _, def := range files(t, "configs/*_defconfig") {
		m := overlay.FindStringSubmatch(read(t, def))
		if m == nil {
			continue
		}
		for _, dir := range strings.Fields(m[1]) {
			rel, ok := strings.CutPrefix(dir, "$(BR2_EXTERNAL_PORTHOLE_PATH)/")
			if !ok {
				continue // Buildroot's own
			}
			target := t.TempDir()
			if err := rsync(filepath.Join(tree, rel), target, overlayExclusions); err != nil {
				t.Fatal(err)
			}
			devices := devicesFiles(t, filepath.Join(tree, rel))
			err := filepath.WalkDir(target, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				inImage, _ := filepath.Rel(target, path)
				if devices[inImage] {
					return nil
				}
				t.Errorf("%s: the overlay %s puts /%s, a file of this tree, in the image", filepath.Base(def), rel, inImage)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if st, err := os.Stat(filepath.Join(target, "etc/porthole")); err != nil || !st.IsDir() {
				t.Errorf("%s: the overlay %s has no etc/porthole/ for the device's files: %v", filepath.Base(def), rel, err)
			}
		}
	}
}

// devicesFiles are the files in the overlay dir that git ignores, by path
// relative to dir: the device's own, which its readme.txt asks for there and
// .gitignore keeps out of git, not files of this tree. None where git cannot
// tell (no git, no checkout): every file then counts as the tree's.
func devicesFiles(t *testing.T, dir string) map[string]bool {
	out, err := exec.Command("git", "-C", dir, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", ".").Output()
	if err != nil {
		t.Logf("git cannot tell the device's files in %s from the tree's (%v): every file there counts as the tree's", dir, err)
		return nil
	}
	files := map[string]bool{}
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files[filepath.Clean(f)] = true
		}
	}
	return files
}
