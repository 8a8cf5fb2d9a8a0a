package brcheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// kconfig runs Linux's kconfig (kconfig-conf, Debian's kconfig-frontends-nox;
// Buildroot's own kconfig is a copy of it) on this tree's Config.in under
// testdata/buildroot.Kconfig, Buildroot's symbols it reads. mode is
// "--olddefconfig" (complete a .config) or "--defconfig=FILE"; input is the
// .config given to it. It returns the resulting symbols, BR2_* without the
// unset ones.
func kconfig(t *testing.T, mode, input string) map[string]string {
	t.Helper()
	conf := testenv.NeedProgram(t, "kconfig-conf") // Debian kconfig-frontends-nox
	ext, err := filepath.Abs(tree)
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(t.TempDir(), ".config")
	if err := os.WriteFile(config, []byte(input), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(conf, mode, "testdata/buildroot.Kconfig")
	// CONFIG_ empty: symbols keep their names (BR2_...), as in Buildroot.
	cmd.Env = append(os.Environ(), "CONFIG_=", "KCONFIG_CONFIG="+config, "BR2_EXTERNAL_PORTHOLE_PATH="+ext)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kconfig-conf %s: %v\n%s", mode, err, out)
	}
	// A defconfig names symbols of Buildroot the stub lacks ("unexpected
	// data"); any other warning is about the Kconfig files.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "warning") && !strings.Contains(line, "unexpected data") {
			t.Errorf("kconfig-conf %s: %s", mode, line)
		}
	}
	b, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "BR2_") {
			got[k] = v
		}
	}
	return got
}

// porthole picks out of a .config the symbols that say whether and how
// porthole is built.
func porthole(config map[string]string) map[string]string {
	m := map[string]string{}
	for _, k := range []string{"BR2_PACKAGE_PORTHOLE", "BR2_PACKAGE_PORTHOLE_HOST_GO", "BR2_PACKAGE_PORTHOLE_HOST_GO_BIN"} {
		if v, ok := config[k]; ok {
			m[k] = v
		}
	}
	return m
}

// TestKconfigDefconfig: kconfig keeps BR2_PACKAGE_PORTHOLE=y of the MIPS32
// defconfig, where Buildroot's Go cannot build (it used to drop it silently),
// through the build machine's Go; and porthole.mk, given the resulting
// .config, builds for mipsle with soft-float.
func TestKconfigDefconfig(t *testing.T) {
	defs := files(t, "configs/*_defconfig")
	if len(defs) == 0 {
		t.Fatal("no configs/*_defconfig")
	}
	for _, def := range defs {
		t.Run(filepath.Base(def), func(t *testing.T) {
			abs, err := filepath.Abs(def)
			if err != nil {
				t.Fatal(err)
			}
			config := kconfig(t, "--defconfig="+abs, "")
			if config["BR2_PACKAGE_PORTHOLE"] != "y" {
				t.Fatalf("kconfig dropped BR2_PACKAGE_PORTHOLE=y; porthole's symbols: %v", porthole(config))
			}
			if config["BR2_mipsel"] != "y" {
				return
			}
			want := map[string]string{
				"BR2_PACKAGE_PORTHOLE":             "y",
				"BR2_PACKAGE_PORTHOLE_HOST_GO":     "y",
				"BR2_PACKAGE_PORTHOLE_HOST_GO_BIN": `"go"`,
			}
			if diff := cmp.Diff(want, porthole(config)); diff != "" {
				t.Errorf("porthole's symbols (-want +got):\n%s", diff)
			}
			if got := config["BR2_PACKAGE_PORTHOLE_THING_NAME"]; got != `"qemu-mipsel-buildroot"` {
				t.Errorf("BR2_PACKAGE_PORTHOLE_THING_NAME = %s, want the defconfig's", got)
			}

			gobin, rec := fakeGo(t, "go1.26.0")
			var lines []string
			for k, v := range config {
				if k == "BR2_PACKAGE_PORTHOLE_HOST_GO_BIN" {
					v = `"` + gobin + `"`
				}
				lines = append(lines, k+"="+v)
			}
			p := newPkg(t, lines...)
			p.copyGoMod()
			if out, err := p.make("built"); err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}
			_, env := recorded(t, rec, "build")
			if env["GOARCH"] != "mipsle" || env["GOMIPS"] != "softfloat" {
				t.Errorf("go build ran with GOARCH=%q GOMIPS=%q, want mipsle softfloat", env["GOARCH"], env["GOMIPS"])
			}
		})
	}
}

// TestKconfigHostGo: which way porthole is built for each kind of target.
// Where Buildroot's Go cannot build, the build machine's Go is forced (a
// .config saying otherwise is overridden); where only Buildroot's Go can,
// the host-Go option does not exist; where both can, it is offered and off
// by default; where neither can, porthole cannot be selected.
func TestKconfigHostGo(t *testing.T) {
	const on = "BR2_PACKAGE_PORTHOLE=y"
	for _, tc := range []struct {
		name   string
		config []string
		want   map[string]string // porthole's symbols; nil: porthole cannot be selected
	}{
		{"mipsel r2: host Go forced",
			[]string{"BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R2=y", on, "# BR2_PACKAGE_PORTHOLE_HOST_GO is not set"},
			map[string]string{"BR2_PACKAGE_PORTHOLE": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO_BIN": `"go"`}},
		{"mips r2 with a Go path",
			[]string{"BR2_mips=y", "BR2_MIPS_CPU_MIPS32R2=y", on, `BR2_PACKAGE_PORTHOLE_HOST_GO_BIN="/opt/go/bin/go"`},
			map[string]string{"BR2_PACKAGE_PORTHOLE": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO_BIN": `"/opt/go/bin/go"`}},
		{"mipsel r6: no Go", []string{"BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R6=y", on}, nil},
		{"mipsel MIPS IV: no Go", []string{"BR2_mipsel=y", "BR2_mips4=y", on}, nil},
		{"arm926t without PIE: host Go forced",
			[]string{"BR2_arm=y", "BR2_ARM_CPU_ARMV5=y", "# BR2_TOOLCHAIN_SUPPORTS_PIE is not set", on},
			map[string]string{"BR2_PACKAGE_PORTHOLE": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO_BIN": `"go"`}},
		{"arm cortex-a7: Buildroot's Go by default",
			[]string{"BR2_arm=y", "BR2_ARM_CPU_ARMV7A=y", on},
			map[string]string{"BR2_PACKAGE_PORTHOLE": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO": ""}},
		{"aarch64 choosing host Go",
			[]string{"BR2_aarch64=y", on, "BR2_PACKAGE_PORTHOLE_HOST_GO=y"},
			map[string]string{"BR2_PACKAGE_PORTHOLE": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO_BIN": `"go"`}},
		{"cortex-m3: only Buildroot's Go, no host-Go option",
			[]string{"BR2_arm=y", "BR2_ARM_CPU_ARMV7M=y", on, "BR2_PACKAGE_PORTHOLE_HOST_GO=y"},
			map[string]string{"BR2_PACKAGE_PORTHOLE": "y", "BR2_PACKAGE_PORTHOLE_HOST_GO": ""}},
		{"arm920t: no Go", []string{"BR2_arm=y", "BR2_ARM_CPU_ARMV4=y", on}, nil},
		{"powerpc: no Go", []string{"BR2_powerpc=y", on}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := porthole(kconfig(t, "--olddefconfig", strings.Join(tc.config, "\n")+"\n"))
			want := tc.want
			if want == nil {
				want = map[string]string{}
			}
			for k, v := range want {
				if v == "" {
					delete(want, k) // not set
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("porthole's symbols (-want +got):\n%s", diff)
			}
		})
	}
}

// TestKconfigBuildrootGo: where porthole is built with Buildroot's Go, it
// selects BR2_PACKAGE_HOST_GO, as Buildroot's package/go/Config.in.host asks
// of Go packages: without it Buildroot hides its choice of Go and builds with
// host-go-bin, a prebuilt Go it downloads, never the one it builds from
// source (host-go-src). With the build machine's Go, Buildroot's is not
// needed, and not asked for.
func TestKconfigBuildrootGo(t *testing.T) {
	const on = "BR2_PACKAGE_PORTHOLE=y"
	for _, tc := range []struct {
		name             string
		config           []string
		hostGo, provider string // BR2_PACKAGE_HOST_GO ("": not set), BR2_PACKAGE_PROVIDES_HOST_GO
	}{
		{"aarch64, Buildroot's Go", []string{"BR2_aarch64=y", on}, "y", `"host-go-src"`},
		{"arm cortex-a7, Buildroot's Go", []string{"BR2_arm=y", "BR2_ARM_CPU_ARMV7A=y", on}, "y", `"host-go-src"`},
		{"aarch64, the build machine's Go", []string{"BR2_aarch64=y", on, "BR2_PACKAGE_PORTHOLE_HOST_GO=y"}, "", `"host-go-bin"`},
		{"mipsel, the build machine's Go", []string{"BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R2=y", on}, "", `"host-go-bin"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := kconfig(t, "--olddefconfig", strings.Join(tc.config, "\n")+"\n")
			if config["BR2_PACKAGE_PORTHOLE"] != "y" {
				t.Fatalf("porthole is not selected: %v", porthole(config))
			}
			if got := config["BR2_PACKAGE_HOST_GO"]; got != tc.hostGo {
				t.Errorf("BR2_PACKAGE_HOST_GO = %q, want %q (porthole's symbols: %v)", got, tc.hostGo, porthole(config))
			}
			if got := config["BR2_PACKAGE_PROVIDES_HOST_GO"]; got != tc.provider {
				t.Errorf("BR2_PACKAGE_PROVIDES_HOST_GO = %s, want %s", got, tc.provider)
			}
		})
	}
}

// TestKconfigSysVInit: S50porthole is installed by default wherever Buildroot
// installs SysV scripts (BusyBox init, the defconfig's, sysvinit, OpenRC),
// and BR2_PACKAGE_PORTHOLE_SYSV_INIT leaves it out for an agent that
// /etc/inittab starts (docs/firmware.md): with both, the inittab agent
// waited for the script's agent's lock, exited 1 and was respawned, for ever.
// Under systemd the option is not offered.
func TestKconfigSysVInit(t *testing.T) {
	const on = "BR2_PACKAGE_PORTHOLE=y"
	arch := []string{"BR2_aarch64=y", on}
	for _, tc := range []struct {
		name   string
		config []string
		want   string // "": not set
	}{
		{"BusyBox init, the default", arch, "y"},
		{"sysvinit", append(arch, "BR2_INIT_SYSV=y"), "y"},
		{"OpenRC", append(arch, "BR2_INIT_OPENRC=y"), "y"},
		{"BusyBox init, inittab starts the agent", append(arch, "# BR2_PACKAGE_PORTHOLE_SYSV_INIT is not set"), ""},
		{"systemd", append(arch, "BR2_INIT_SYSTEMD=y", "BR2_PACKAGE_PORTHOLE_SYSV_INIT=y"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := kconfig(t, "--olddefconfig", strings.Join(tc.config, "\n")+"\n")
			if got := config["BR2_PACKAGE_PORTHOLE_SYSV_INIT"]; got != tc.want {
				t.Errorf("BR2_PACKAGE_PORTHOLE_SYSV_INIT = %q, want %q", got, tc.want)
			}
		})
	}
	for _, def := range files(t, "configs/*_defconfig") {
		abs, err := filepath.Abs(def)
		if err != nil {
			t.Fatal(err)
		}
		if got := kconfig(t, "--defconfig="+abs, "")["BR2_PACKAGE_PORTHOLE_SYSV_INIT"]; got != "y" {
			t.Errorf("%s: BR2_PACKAGE_PORTHOLE_SYSV_INIT = %q, want y (the board starts the agent with S50porthole)", filepath.Base(def), got)
		}
	}
}
