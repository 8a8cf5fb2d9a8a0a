package brcheck

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/porthole-iot/porthole/board"
	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// infraStub is what Buildroot gives a package .mk, reduced to what
// porthole.mk uses: the .config (BR2_CONFIG, included as Buildroot does, so
// strings keep their quotes), qstrip, INSTALL and SED
// (support/misc/utils.mk, package/Makefile.in), PKGDIR, and the steps of
// package/pkg-generic.mk that porthole.mk fills in (the rsync, build and
// target install steps with their hooks, in Buildroot's order).
// golang-package and generic-package only record which one was evaluated.
const infraStub = `include $(BR2_CONFIG)
qstrip = $(strip $(subst ",,$(1)))
INSTALL = install
SED = sed -i -e
define sep


endef
golang-package = PORTHOLE_INFRA := golang-package
generic-package = PORTHOLE_INFRA := generic-package
PORTHOLE_PKGDIR = $(BR2_EXTERNAL_PORTHOLE_PATH)/package/porthole/
include $(BR2_EXTERNAL_PORTHOLE_PATH)/package/porthole/porthole.mk

$(D)/.stamp_rsynced:
	$(foreach hook,$(PORTHOLE_POST_RSYNC_HOOKS),$(call $(hook))$(sep))
$(D)/.stamp_built:
	$(foreach hook,$(PORTHOLE_PRE_BUILD_HOOKS),$(call $(hook))$(sep))
	+$(PORTHOLE_BUILD_CMDS)
	$(foreach hook,$(PORTHOLE_POST_BUILD_HOOKS),$(call $(hook))$(sep))
$(D)/.stamp_target_installed:
	$(foreach hook,$(PORTHOLE_PRE_INSTALL_TARGET_HOOKS),$(call $(hook))$(sep))
	+$(PORTHOLE_INSTALL_TARGET_CMDS)
	$(if $(BR2_INIT_SYSTEMD),$(PORTHOLE_INSTALL_INIT_SYSTEMD))
	$(if $(BR2_INIT_SYSV)$(BR2_INIT_BUSYBOX),$(PORTHOLE_INSTALL_INIT_SYSV))
	$(if $(BR2_INIT_OPENRC),$(or $(PORTHOLE_INSTALL_INIT_OPENRC),$(PORTHOLE_INSTALL_INIT_SYSV)))
	$(foreach hook,$(PORTHOLE_POST_INSTALL_TARGET_HOOKS),$(call $(hook))$(sep))

# make show VARS="A B": each variable's origin and unexpanded value, a line
# each; make expand VARS=A: A's value expanded in a recipe of the build folder
show:
	@:$(foreach v,$(VARS),$(info $(v) $(origin $(v)) $(value $(v))))
expand: $(D)/.expand
$(D)/.expand:
	@:$(info $($(VARS)))
`

// pkg runs porthole.mk's steps with GNU make as Buildroot would, on a build
// folder (@D) and a target folder of its own.
type pkg struct {
	t      *testing.T
	config string   // the .config, one BR2_...=... line each
	dir    string   // the build folder, @D
	target string   // TARGET_DIR
	args   []string // make's command-line variables
	env    []string // added to the test's environment
}

func newPkg(t *testing.T, config ...string) *pkg {
	t.Helper()
	testenv.NeedProgram(t, "make")
	tmp := t.TempDir()
	p := &pkg{
		t:      t,
		config: strings.Join(config, "\n") + "\n",
		dir:    filepath.Join(tmp, "build", "porthole-custom"),
		target: filepath.Join(tmp, "target"),
	}
	for _, d := range []string{p.dir, p.target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// make runs make on the package's targets, named as in pkg-generic.mk
// ("built" is $(D)/.stamp_built), and returns its combined output.
func (p *pkg) make(targets ...string) (string, error) {
	p.t.Helper()
	ext, err := filepath.Abs(tree)
	if err != nil {
		p.t.Fatal(err)
	}
	tmp := filepath.Dir(filepath.Dir(p.dir))
	stub := filepath.Join(tmp, "stub.mk")
	config := filepath.Join(tmp, ".config")
	if err := os.WriteFile(stub, []byte(infraStub), 0o600); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(config, []byte(p.config), 0o600); err != nil {
		p.t.Fatal(err)
	}
	args := []string{"--no-print-directory", "-f", stub,
		"BR2_EXTERNAL_PORTHOLE_PATH=" + ext, "BR2_CONFIG=" + config,
		"D=" + p.dir, "TARGET_DIR=" + p.target, "PARALLEL_JOBS=2"}
	args = append(args, p.args...)
	for _, t := range targets {
		if t == "show" || t == "expand" {
			args = append(args, t)
			continue
		}
		args = append(args, filepath.Join(p.dir, ".stamp_"+t))
	}
	cmd := exec.Command("make", args...)
	cmd.Env = append(os.Environ(), p.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// show returns make's origin and value of each variable, unexpanded.
func (p *pkg) show(vars ...string) map[string][2]string {
	p.t.Helper()
	saved := p.args
	p.args = append(slices.Clone(p.args), "VARS="+strings.Join(vars, " "))
	out, err := p.make("show")
	p.args = saved
	if err != nil {
		p.t.Fatalf("make show: %v\n%s", err, out)
	}
	m := map[string][2]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(line, " ", 3)
		for len(f) < 3 {
			f = append(f, "")
		}
		m[f[0]] = [2]string{f[1], f[2]}
	}
	return m
}

// fakeGo writes a go command that answers `go env GOVERSION` with version and
// `go env GOEXPERIMENT` as Go 1.26 does (it knows nogreenteagc and nojsonv2, the
// device's),
// and records each other run in dir: its arguments (args, NUL-separated), its
// environment exactly as exec'd (environ, from /proc) and its working
// folder (pwd), prefixed by the subcommand; build creates its -o file.
func fakeGo(t *testing.T, version string) (gobin, dir string) {
	t.Helper()
	return fakeGoKnowing(t, version, "nogreenteagc nojsonv2")
}

// fakeGoKnowing is fakeGo knowing the GOEXPERIMENT values in experiments
// (space-separated): `go env GOEXPERIMENT` fails for any other, as go does.
func fakeGoKnowing(t *testing.T, version, experiments string) (gobin, dir string) {
	t.Helper()
	dir = t.TempDir()
	gobin = filepath.Join(dir, "go")
	script := fmt.Sprintf(`#!/bin/sh
rec=%q
if [ "$1 $2" = "env GOVERSION" ]; then echo %q; exit 0; fi
if [ "$1 $2" = "env GOEXPERIMENT" ]; then
	case " %s " in *" $GOEXPERIMENT "*) echo "$GOEXPERIMENT"; exit 0 ;; esac
	if [ -z "$GOEXPERIMENT" ]; then echo; exit 0; fi
	echo "go: unknown GOEXPERIMENT $GOEXPERIMENT" >&2; exit 2
fi
cat /proc/$$/environ > "$rec/$1.environ"
pwd > "$rec/$1.pwd"
printf '%%s\0' "$@" > "$rec/$1.args"
prev=
for a; do
	if [ "$prev" = -o ]; then mkdir -p "${a%%/*}" && printf '#!/bin/sh\necho porthole fake\n' > "$a"; fi
	prev=$a
done
if [ "$1 $2" = "mod vendor" ]; then mkdir -p vendor && : > vendor/modules.txt; fi
`, dir, version, experiments)
	if err := os.WriteFile(gobin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return gobin, dir
}

// recorded reads what fakeGo recorded for a subcommand: its arguments and
// environment, or nil if it did not run.
func recorded(t *testing.T, dir, sub string) (args []string, env map[string]string) {
	t.Helper()
	a, err := os.ReadFile(filepath.Join(dir, sub+".args"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	e, err := os.ReadFile(filepath.Join(dir, sub+".environ"))
	if err != nil {
		t.Fatal(err)
	}
	args = strings.Split(strings.TrimSuffix(string(a), "\x00"), "\x00")
	env = map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(string(e), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return args, env
}

// copyGoMod gives the build folder the tree's go.mod, which the Go check reads.
func (p *pkg) copyGoMod() {
	p.t.Helper()
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "go.mod"), b, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// hostGo is the .config of a target with porthole built by the build
// machine's Go at gobin.
func hostGo(gobin string, arch ...string) []string {
	return append(arch,
		"BR2_PACKAGE_PORTHOLE=y",
		"BR2_PACKAGE_PORTHOLE_HOST_GO=y",
		fmt.Sprintf("BR2_PACKAGE_PORTHOLE_HOST_GO_BIN=%q", gobin))
}

// TestHostGoEnv: with BR2_PACKAGE_PORTHOLE_HOST_GO, porthole.mk is a
// generic-package whose build runs the configured go with exactly the
// environment it sets (GOOS, GOARCH and its variant for Buildroot's target
// architecture, offline, vendored, no cgo; nothing from the caller's
// environment) and make cross's flags (less -s -w), and whose install puts
// the binary at /usr/bin/porthole, 0755. GOEXPERIMENT is the device's
// (agent/cmd/porthole/device.goexperiment), which this go knows.
func TestHostGoEnv(t *testing.T) {
	gcflags, err := board.DeviceGCFlags("../../agent/cmd/porthole/device.gcflags")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		arch []string
		want map[string]string // GOARCH and its variable
	}{
		{"mipsel soft-float, the defconfig", []string{"BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R2=y", "BR2_MIPS_SOFT_FLOAT=y"},
			map[string]string{"GOARCH": "mipsle", "GOMIPS": "softfloat"}},
		{"mips hard-float", []string{"BR2_mips=y", "BR2_MIPS_CPU_MIPS32R2=y"},
			map[string]string{"GOARCH": "mips", "GOMIPS": "hardfloat"}},
		{"mipsel hard-float NaN-2008, P5600", []string{"BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R5=y", "BR2_MIPS_NAN_2008=y"},
			map[string]string{"GOARCH": "mipsle", "GOMIPS": "softfloat"}},
		{"mips64el soft-float", []string{"BR2_mips64el=y", "BR2_MIPS_SOFT_FLOAT=y"},
			map[string]string{"GOARCH": "mips64le", "GOMIPS64": "softfloat"}},
		{"arm cortex-a7", []string{"BR2_arm=y", "BR2_ARM_CPU_ARMV7A=y", "BR2_ARM_CPU_HAS_VFPV4=y", "BR2_ARM_CPU_HAS_VFPV3=y", "BR2_ARM_CPU_HAS_VFPV2=y"},
			map[string]string{"GOARCH": "arm", "GOARM": "7"}},
		{"arm cortex-a9 without VFP", []string{"BR2_arm=y", "BR2_ARM_CPU_ARMV7A=y"},
			map[string]string{"GOARCH": "arm", "GOARM": "7,softfloat"}},
		{"arm1176jzf-s", []string{"BR2_arm=y", "BR2_ARM_CPU_ARMV6=y", "BR2_ARM_CPU_HAS_VFPV2=y"},
			map[string]string{"GOARCH": "arm", "GOARM": "6"}},
		{"arm926t", []string{"BR2_arm=y", "BR2_ARM_CPU_ARMV5=y"},
			map[string]string{"GOARCH": "arm", "GOARM": "5"}},
		{"arm cortex-a53 32-bit", []string{"BR2_arm=y", "BR2_ARM_CPU_ARMV8A=y", "BR2_ARM_CPU_HAS_VFPV3=y", "BR2_ARM_CPU_HAS_VFPV2=y"},
			map[string]string{"GOARCH": "arm", "GOARM": "7"}},
		{"aarch64", []string{"BR2_aarch64=y"}, map[string]string{"GOARCH": "arm64", "GOARM64": "v8.0"}},
		{"i386 without SSE2", []string{"BR2_i386=y"}, map[string]string{"GOARCH": "386", "GO386": "softfloat"}},
		{"i686 with SSE2", []string{"BR2_i386=y", "BR2_X86_CPU_HAS_SSE2=y"}, map[string]string{"GOARCH": "386", "GO386": "sse2"}},
		{"x86_64", []string{"BR2_x86_64=y"}, map[string]string{"GOARCH": "amd64", "GOAMD64": "v1"}},
		{"riscv64", []string{"BR2_riscv=y", "BR2_RISCV_64=y"}, map[string]string{"GOARCH": "riscv64", "GORISCV64": "rva20u64"}},
		{"powerpc64le", []string{"BR2_powerpc64le=y"}, map[string]string{"GOARCH": "ppc64le", "GOPPC64": "power8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gobin, rec := fakeGo(t, "go1.26.0")
			p := newPkg(t, hostGo(gobin, tc.arch...)...)
			p.copyGoMod()
			// What the caller's environment must not change.
			p.env = []string{"GOFLAGS=-mod=mod -tags=leak", "GOARM=5", "GOAMD64=v3", "GOOS=windows", "CGO_ENABLED=1", "GOTOOLCHAIN=auto"}
			if got := p.show("PORTHOLE_INFRA")["PORTHOLE_INFRA"][1]; got != "generic-package" {
				t.Errorf("infrastructure = %q, want generic-package", got)
			}
			if out, err := p.make("built", "target_installed"); err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}
			args, env := recorded(t, rec, "build")
			if args == nil {
				t.Fatal("go build did not run")
			}

			wantEnv := map[string]string{
				"GOOS": "linux", "CGO_ENABLED": "0", "GOFLAGS": "-mod=vendor", "GOPROXY": "off",
				"GOTOOLCHAIN": "local", "GOENV": "off", "GOWORK": "off", "GOEXPERIMENT": "nogreenteagc,nojsonv2",
				"PATH": os.Getenv("PATH"), "HOME": filepath.Join(p.dir, ".go/home"),
				"GOPATH": filepath.Join(p.dir, ".go"), "GOCACHE": filepath.Join(p.dir, ".go/cache"),
			}
			for k, v := range tc.want {
				wantEnv[k] = v
			}
			if diff := cmp.Diff(wantEnv, env); diff != "" {
				t.Errorf("go build's environment (-want +got):\n%s", diff)
			}

			want := []string{"build", "-trimpath", "-buildvcs=false", "-tags", "netgo osusergo", "-ldflags", ldflags(), "-p", "2"}
			want = append(want, gcflags...)
			want = append(want, "-o", filepath.Join(p.dir, "bin/porthole"), "github.com/porthole-iot/porthole/agent/cmd/porthole")
			if diff := cmp.Diff(want, args); diff != "" {
				t.Errorf("go build's arguments (-want +got):\n%s", diff)
			}
			st, err := os.Stat(filepath.Join(p.target, "usr/bin/porthole"))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o755 {
				t.Errorf("/usr/bin/porthole mode %o, want 755", st.Mode().Perm())
			}
		})
	}
}

// ldflags is the -ldflags value porthole.mk should pass: the Makefile's
// (make cross) less -s -w, which Buildroot's own strip replaces.
func ldflags() string {
	// PORTHOLE_VERSION and PORTHOLE_BUILD_TIME are make version's: run it here.
	version, buildTime := "dev", ""
	if out, err := exec.Command("make", "-s", "--no-print-directory", "-C", filepath.Join(tree, ".."), "version").Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) > 0 {
			version = f[0]
			if len(f) > 1 {
				buildTime = f[1]
			}
		}
	}
	s := "-X github.com/porthole-iot/porthole/agent.Version=" + version
	if buildTime != "" {
		s += " -X github.com/porthole-iot/porthole/agent/notify.BuildTime=" + buildTime
	}
	return s
}

// TestMakefileLDFlags: the -ldflags of make cross, without -s -w, are what
// TestHostGoEnv expects porthole.mk to pass.
func TestMakefileLDFlags(t *testing.T) {
	testenv.NeedProgram(t, "make")
	out, err := exec.Command("make", "-s", "-C", "../..", "--no-print-directory", "-pn", "help").Output()
	if err != nil {
		t.Fatalf("make -pn: %v", err)
	}
	m := regexp.MustCompile(`(?m)^LDFLAGS := (.*)$`).FindSubmatch(out)
	if m == nil {
		t.Fatal("the Makefile sets no LDFLAGS")
	}
	got := strings.TrimSpace(strings.TrimPrefix(string(m[1]), "-s -w "))
	if want := ldflags(); got != want {
		t.Errorf("Makefile LDFLAGS less -s -w = %q\nwant %q (porthole.mk's)", got, want)
	}
}

// TestGoCheck: the build stops before vendoring, with a message naming the
// Buildroot option to change, when the Go it would use is older than go.mod's
// go line or cannot run; newer, pre-release and development Go pass.
func TestGoCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version string // "" for a go command that does not exist
		golang  bool   // Buildroot's host-go (golang-package) instead of the host's
		want    string // in the error; "" for a build that runs
	}{
		{"host go 1.26.0", "go1.26.0", false, ""},
		{"host go 1.27rc1", "go1.27rc1", false, ""},
		{"host go devel", "devel go1.27-0123456 Tue Jan 1 00:00:00 2030 +0000", false, ""},
		{"host go 1.25.9", "go1.25.9", false, "is go1.25.9, older than go 1.26.0 in go.mod: set BR2_PACKAGE_PORTHOLE_HOST_GO_BIN"},
		{"host go 1.26rc1", "go1.26rc1", false, "is go1.26rc1, older than go 1.26.0 in go.mod: set BR2_PACKAGE_PORTHOLE_HOST_GO_BIN"},
		{"host go 1.9", "go1.9", false, "is go1.9, older than go 1.26.0"},
		{"host go missing", "", false, "cannot run the Go toolchain"},
		{"buildroot host-go 1.26.2", "go1.26.2", true, ""},
		{"buildroot host-go 1.23.6", "go1.23.6", true, "Buildroot's host-go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gobin, rec := fakeGo(t, tc.version)
			if tc.version == "" {
				gobin = filepath.Join(rec, "no-such-go")
			}
			var p *pkg
			if tc.golang {
				p = newPkg(t, "BR2_aarch64=y", "BR2_PACKAGE_HOST_GO_TARGET_ARCH_SUPPORTS=y", "BR2_PACKAGE_PORTHOLE=y")
				p.args = []string{"GO_BIN=" + gobin, "HOST_GO_COMMON_ENV=GOFLAGS=-mod=vendor GOPROXY=off"}
			} else {
				p = newPkg(t, hostGo(gobin, "BR2_mipsel=y", "BR2_MIPS_SOFT_FLOAT=y")...)
			}
			p.copyGoMod()
			out, err := p.make("built")
			vendor, _ := recorded(t, rec, "mod")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("build: %v\n%s", err, out)
				}
				if vendor == nil {
					t.Error("go mod vendor did not run")
				}
				return
			}
			if err == nil {
				t.Fatalf("build passed, want an error with %q\n%s", tc.want, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("build's output has no %q:\n%s", tc.want, out)
			}
			if tc.golang && !strings.Contains(out, "enable BR2_PACKAGE_PORTHOLE_HOST_GO") {
				t.Errorf("with Buildroot's host-go the message should say to enable BR2_PACKAGE_PORTHOLE_HOST_GO:\n%s", out)
			}
			if vendor != nil {
				t.Error("go mod vendor ran after the Go check failed")
			}
		})
	}
}

// TestGolangPackage: where Buildroot's Go builds for the target and the
// host-Go option is off, porthole.mk is a golang-package: the infrastructure
// builds and installs (porthole.mk defines neither), with porthole's tags,
// compiler flags, linker flags and environment (the GOARCH variant too, which
// Buildroot's go.mk does not set for mips64), after the same Go check and
// vendoring as the host-Go way.
func TestGolangPackage(t *testing.T) {
	gcflags, err := board.DeviceGCFlags("../../agent/cmd/porthole/device.gcflags")
	if err != nil {
		t.Fatal(err)
	}
	gobin, rec := fakeGo(t, "go1.26.1")
	p := newPkg(t, "BR2_mips64el=y", "BR2_MIPS_SOFT_FLOAT=y", "BR2_PACKAGE_HOST_GO_TARGET_ARCH_SUPPORTS=y", "BR2_PACKAGE_PORTHOLE=y")
	p.args = []string{"GO_BIN=" + gobin, "HOST_GO_COMMON_ENV=GOFLAGS=-mod=vendor GOPROXY=off BUILDROOT_GO_ENV=1"}
	p.copyGoMod()
	vars := []string{"PORTHOLE_INFRA", "PORTHOLE_BUILD_CMDS", "PORTHOLE_INSTALL_TARGET_CMDS", "PORTHOLE_TAGS", "PORTHOLE_GOMOD", "PORTHOLE_BUILD_TARGETS"}
	m := p.show(vars...)
	for _, c := range []struct{ v, origin, value string }{
		{"PORTHOLE_INFRA", "file", "golang-package"},
		{"PORTHOLE_BUILD_CMDS", "undefined", ""},
		{"PORTHOLE_INSTALL_TARGET_CMDS", "undefined", ""},
		{"PORTHOLE_TAGS", "file", "netgo osusergo"},
		{"PORTHOLE_GOMOD", "file", "github.com/porthole-iot/porthole"},
		{"PORTHOLE_BUILD_TARGETS", "file", "agent/cmd/porthole"},
	} {
		if got := m[c.v]; got != [2]string{c.origin, c.value} {
			t.Errorf("%s = %q (%s), want %q (%s)", c.v, got[1], got[0], c.value, c.origin)
		}
	}
	// PORTHOLE_GO_ENV asks Buildroot's go whether it knows the device's
	// GOEXPERIMENT when the build runs: run it as pkg-golang.mk's build does.
	goEnv := p.expandVar("PORTHOLE_GO_ENV")
	out, err := exec.Command("sh", "-c", "env -i "+goEnv+" env").Output()
	if err != nil {
		t.Fatalf("PORTHOLE_GO_ENV %q in a shell: %v", goEnv, err)
	}
	got := strings.Fields(string(out))
	slices.Sort(got)
	if want := []string{"CGO_ENABLED=0", "GOEXPERIMENT=nogreenteagc,nojsonv2", "GOMIPS64=softfloat"}; !slices.Equal(got, want) {
		t.Errorf("PORTHOLE_GO_ENV %q sets %q, want %q", goEnv, got, want)
	}
	if got := strings.Fields(p.expandVar("PORTHOLE_BUILD_OPTS")); !slices.Equal(got, gcflags) {
		t.Errorf("PORTHOLE_BUILD_OPTS = %q\nwant %q (device.gcflags)", got, gcflags)
	}
	if got, want := strings.Join(strings.Fields(p.expandVar("PORTHOLE_LDFLAGS")), " "), ldflags(); got != want {
		t.Errorf("PORTHOLE_LDFLAGS = %q, want %q", got, want)
	}
	if out, err := p.make("built"); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	args, env := recorded(t, rec, "mod")
	// -modcacherw: Buildroot's module cache is in its output folder, which
	// make clean removes (TestGolangPackageVendorOffline).
	if !slices.Equal(args, []string{"mod", "vendor", "-modcacherw"}) {
		t.Fatalf("vendoring ran go %q, want go mod vendor -modcacherw", args)
	}
	for k, v := range map[string]string{"BUILDROOT_GO_ENV": "1", "GOFLAGS": "-mod=mod", "GOWORK": "off"} {
		if env[k] != v {
			t.Errorf("go mod vendor's %s = %q, want %q", k, env[k], v)
		}
	}
}

// TestGolangPackageCPULevel: with Buildroot's Go the build runs in
// Buildroot's environment, which is the caller's (Buildroot hides no GO*
// variable, and its Go reads the caller's go env file): a GOAMD64=v3 there,
// or GOARM64, GORISCV64, GOPPC64 above the base level, made a binary that
// refuses to run on a device without those instructions ("This program can
// only be run on AMD64 processors with v3 microarchitecture support").
// porthole.mk gives Go's base CPU level, as make cross does (its CROSS_TARGETS),
// after Buildroot's environment, as it gives GOARM and GOMIPS.
func TestGolangPackageCPULevel(t *testing.T) {
	for _, tc := range []struct {
		arch, want string
	}{
		{"BR2_x86_64=y", "GOAMD64=v1"},
		{"BR2_aarch64=y", "GOARM64=v8.0"},
		{"BR2_RISCV_64=y", "GORISCV64=rva20u64"},
		{"BR2_powerpc64le=y", "GOPPC64=power8"},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			p := newPkg(t, tc.arch, "BR2_PACKAGE_HOST_GO_TARGET_ARCH_SUPPORTS=y", "BR2_PACKAGE_PORTHOLE=y")
			if got := p.show("PORTHOLE_INFRA")["PORTHOLE_INFRA"][1]; got != "golang-package" {
				t.Fatalf("infrastructure = %q, want golang-package", got)
			}
			name, _, _ := strings.Cut(tc.want, "=")
			// pkg-golang.mk's build: $(HOST_GO_TARGET_ENV) $(PORTHOLE_GO_ENV) go
			// build, in the environment make was run in.
			goEnv := p.expandVar("PORTHOLE_GO_ENV")
			out, err := exec.Command("sh", "-c", "env -i "+name+"=leaked GOAMD64=v3 "+goEnv+" env").Output()
			if err != nil {
				t.Fatalf("PORTHOLE_GO_ENV %q in a shell: %v", goEnv, err)
			}
			if got := strings.Fields(string(out)); !slices.Contains(got, tc.want) {
				t.Errorf("go build's environment with %s=leaked in the caller's: %q, want %s (the base level)", name, got, tc.want)
			}
		})
	}
}

// TestGoExperimentUnknown: a Go that does not know an experiment of the
// device's GOEXPERIMENT (Go drops experiments in time) builds porthole without
// it, with the others it knows, and the build says so once per experiment, in
// the Go check; with both infrastructures.
func TestGoExperimentUnknown(t *testing.T) {
	for _, c := range []struct {
		knows, want string
		warned      []string
	}{
		{"", "", []string{"nogreenteagc", "nojsonv2"}},
		{"nojsonv2", "nojsonv2", []string{"nogreenteagc"}},
	} {
		warnings := func(t *testing.T, out string) {
			t.Helper()
			for _, e := range []string{"nogreenteagc", "nojsonv2"} {
				want := 0
				if slices.Contains(c.warned, e) {
					want = 1
				}
				if n := strings.Count(out, "does not know GOEXPERIMENT="+e+" "); n != want {
					t.Errorf("the warning about %s came %d times, want %d:\n%s", e, n, want, out)
				}
			}
		}
		t.Run("host Go knowing "+c.knows, func(t *testing.T) {
			gobin, rec := fakeGoKnowing(t, "go1.28.0", c.knows)
			p := newPkg(t, hostGo(gobin, "BR2_mipsel=y", "BR2_MIPS_SOFT_FLOAT=y")...)
			p.copyGoMod()
			out, err := p.make("built")
			if err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}
			warnings(t, out)
			_, env := recorded(t, rec, "build")
			if v, ok := env["GOEXPERIMENT"]; !ok || v != c.want {
				t.Errorf("go build's GOEXPERIMENT = %q (set %v), want set and %q", v, ok, c.want)
			}
		})
		t.Run("Buildroot's Go knowing "+c.knows, func(t *testing.T) {
			gobin, _ := fakeGoKnowing(t, "go1.28.0", c.knows)
			p := newPkg(t, "BR2_aarch64=y", "BR2_PACKAGE_HOST_GO_TARGET_ARCH_SUPPORTS=y", "BR2_PACKAGE_PORTHOLE=y")
			p.args = []string{"GO_BIN=" + gobin, "HOST_GO_COMMON_ENV=GOFLAGS=-mod=vendor GOPROXY=off"}
			p.copyGoMod()
			out, err := p.make("built")
			if err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}
			warnings(t, out)
			if !strings.Contains(out, "porthole: warning: the Go toolchain Buildroot's host-go") {
				t.Errorf("no warning naming Buildroot's Go:\n%s", out)
			}
			goEnv := p.expandVar("PORTHOLE_GO_ENV")
			env, err := exec.Command("sh", "-c", "env -i "+goEnv+" env").Output()
			if err != nil {
				t.Fatalf("PORTHOLE_GO_ENV %q in a shell: %v", goEnv, err)
			}
			if got := strings.Fields(string(env)); !slices.Contains(got, "GOEXPERIMENT="+c.want) {
				t.Errorf("PORTHOLE_GO_ENV sets %q, want GOEXPERIMENT=%s", got, c.want)
			}
		})
	}
}

// expandVar returns a make variable of porthole.mk, expanded as in a recipe
// of the build folder ($(@D) is that folder).
func (p *pkg) expandVar(v string) string {
	p.t.Helper()
	saved := p.args
	p.args = append(slices.Clone(p.args), "VARS="+v)
	defer func() { p.args = saved }()
	out, err := p.make("expand")
	if err != nil {
		p.t.Fatalf("make expand: %v\n%s", err, out)
	}
	return strings.TrimSuffix(out, "\n")
}

// rsyncExclusions returns the patterns of porthole.mk's
// PORTHOLE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS with Buildroot's
// RSYNC_VCS_EXCLUSIONS, sorted.
func (p *pkg) rsyncExclusions() []string {
	p.t.Helper()
	var out []string
	for _, f := range strings.Fields(p.expandVar("PORTHOLE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS")) {
		pat, ok := strings.CutPrefix(f, "--exclude=")
		if !ok {
			p.t.Fatalf("PORTHOLE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS: %q: want --exclude=PATTERN", f)
		}
		out = append(out, pat)
	}
	return append(out, ".svn", ".git", ".hg", ".bzr", "CVS")
}

// TestLegalInfo: make legal-info copies PORTHOLE_LICENSE_FILES out of the
// source tree as it is after the rsync and before the build (legal-info
// depends on the patch step only, so the vendor/ folder the pre-build hook
// makes is not there yet). Those files must hold, besides porthole's own
// license, the license text of Go (the binary holds its runtime) and of every
// module linked into the device binary: BSD and MIT want the text and
// copyright notice with each binary, and legal-info is what a firmware
// engineer ships with the image. PORTHOLE_LICENSE, the manifest's license
// column, must name their licenses too.
func TestLegalInfo(t *testing.T) {
	p := newPkg(t, "BR2_mipsel=y", "BR2_MIPS_SOFT_FLOAT=y", "BR2_PACKAGE_PORTHOLE=y", "BR2_PACKAGE_PORTHOLE_HOST_GO=y")
	m := p.show("PORTHOLE_LICENSE", "PORTHOLE_LICENSE_FILES")
	root := filepath.Join(tree, "..")
	var text strings.Builder
	for _, f := range strings.Fields(m["PORTHOLE_LICENSE_FILES"][1]) {
		if strings.HasPrefix(f, "vendor/") {
			t.Errorf("PORTHOLE_LICENSE_FILES names %s: there is no vendor/ when legal-info runs", f)
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Errorf("PORTHOLE_LICENSE_FILES: %v", err)
			continue
		}
		text.WriteString(string(b))
	}
	all := text.String()

	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	goLicense, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(all, string(goLicense)) {
		t.Error("PORTHOLE_LICENSE_FILES lack Go's LICENSE (the binary holds Go's runtime and standard library)")
	}

	list := exec.Command("go", "list", "-mod=readonly", "-tags", "netgo,osusergo", "-deps",
		"-f", "{{with .Module}}{{if not .Main}}{{.Path}} {{.Dir}}{{end}}{{end}}", "./agent/cmd/porthole")
	list.Dir = root
	list.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat", "GOFLAGS=", "GOWORK=off")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, dir, _ := strings.Cut(line, " ")
		if line == "" || seen[path] {
			continue
		}
		seen[path] = true
		files, _ := filepath.Glob(filepath.Join(dir, "LICENSE*"))
		if len(files) == 0 {
			t.Errorf("module %s has no LICENSE file in %s", path, dir)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(all, string(b)) {
				t.Errorf("PORTHOLE_LICENSE_FILES (%s) lack the license text of %s, linked into the binary", m["PORTHOLE_LICENSE_FILES"][1], path)
			}
		}
	}
	for _, want := range []string{"Apache-2.0", "BSD-3-Clause", "BSD-2-Clause", "MIT"} {
		if !strings.Contains(m["PORTHOLE_LICENSE"][1], want) {
			t.Errorf("PORTHOLE_LICENSE = %q lacks %s", m["PORTHOLE_LICENSE"][1], want)
		}
	}
}
