package brcheck

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/porthole-iot/porthole/board"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

const tree = "../../buildroot"

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// files returns the tree's files matching a glob relative to the tree.
func files(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(tree, pattern))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestExternalDesc(t *testing.T) {
	desc := read(t, filepath.Join(tree, "external.desc"))
	if !regexp.MustCompile(`(?m)^name: PORTHOLE$`).MatchString(desc) {
		t.Errorf("external.desc: want a line 'name: PORTHOLE' (BR2_EXTERNAL_PORTHOLE_PATH is derived from it):\n%s", desc)
	}
	if !regexp.MustCompile(`(?m)^desc: \S`).MatchString(desc) {
		t.Errorf("external.desc: want a desc: line")
	}
	mk := read(t, filepath.Join(tree, "external.mk"))
	if !strings.Contains(mk, "$(BR2_EXTERNAL_PORTHOLE_PATH)/package/*/*.mk") {
		t.Errorf("external.mk does not include the packages' .mk files:\n%s", mk)
	}
}

var (
	configRe = regexp.MustCompile(`(?m)^\s*(?:menu)?config\s+(BR2_\w+)`)
	sourceRe = regexp.MustCompile(`(?m)^\s*source\s+"([^"]+)"`)
	symbolRe = regexp.MustCompile(`BR2_PACKAGE_PORTHOLE\w*`)
)

// TestSymbols: every Config.in sourced exists, and every BR2_PACKAGE_PORTHOLE*
// symbol used anywhere in the tree is defined in one.
func TestSymbols(t *testing.T) {
	defined := map[string]bool{}
	var walk func(path string)
	seen := map[string]bool{}
	walk = func(path string) {
		if seen[path] {
			return
		}
		seen[path] = true
		text := read(t, path)
		for _, m := range configRe.FindAllStringSubmatch(text, -1) {
			defined[m[1]] = true
		}
		for _, m := range sourceRe.FindAllStringSubmatch(text, -1) {
			if !strings.HasPrefix(m[1], "$BR2_EXTERNAL_PORTHOLE_PATH/") {
				t.Errorf("%s: source %q: want a path under $BR2_EXTERNAL_PORTHOLE_PATH", path, m[1])
				continue
			}
			p := filepath.Join(tree, strings.TrimPrefix(m[1], "$BR2_EXTERNAL_PORTHOLE_PATH/"))
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s: source %q: %v", path, m[1], err)
				continue
			}
			walk(p)
		}
	}
	walk(filepath.Join(tree, "Config.in"))
	for _, pkg := range files(t, "package/*/Config.in") {
		if !seen[pkg] {
			t.Errorf("%s is not sourced from Config.in", pkg)
		}
	}
	if !defined["BR2_PACKAGE_PORTHOLE"] {
		t.Fatal("BR2_PACKAGE_PORTHOLE is not defined")
	}
	err := filepath.Walk(tree, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, _ := os.ReadFile(path)
		for _, sym := range symbolRe.FindAllString(string(b), -1) {
			if !defined[sym] {
				t.Errorf("%s uses %s, which no Config.in defines", path, sym)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var (
	assignRe = regexp.MustCompile(`(?m)^([A-Za-z0-9_]+)\s*(?:\+=|:=|\?=|=)`)
	defineRe = regexp.MustCompile(`(?m)^define\s+(\S+)`)
	hookRe   = regexp.MustCompile(`(?m)^[A-Z0-9_]+_HOOKS\s*\+=\s*(.+)$`)
	pkgdirRe = regexp.MustCompile(`\$\(([A-Z0-9_]+)_PKGDIR\)/(\S+)`)
	evalRe   = regexp.MustCompile(`(?m)^\$\(eval \$\(([a-z-]+)\)\)$`)
	tailRe   = regexp.MustCompile(`^(else|endif|ifeq .*|ifneq .*)$`)
)

// infra lists the Buildroot package-infrastructure variable suffixes (generic
// and golang) that name steps, hooks or init installs: a misspelt one is
// silently ignored by Buildroot, so only these are accepted.
var infra = map[string]bool{
	"POST_RSYNC_HOOKS": true, "POST_PATCH_HOOKS": true, "POST_CONFIGURE_HOOKS": true, "PRE_BUILD_HOOKS": true,
	"POST_BUILD_HOOKS": true, "POST_INSTALL_TARGET_HOOKS": true, "PRE_INSTALL_TARGET_HOOKS": true,
	"POST_EXTRACT_HOOKS": true, "TARGET_FINALIZE_HOOKS": true,
	"BUILD_CMDS": true, "INSTALL_TARGET_CMDS": true, "INSTALL_INIT_SYSV": true, "INSTALL_INIT_SYSTEMD": true,
	"INSTALL_INIT_OPENRC": true,
}

func TestMakefiles(t *testing.T) {
	mks := files(t, "package/*/*.mk")
	if len(mks) == 0 {
		t.Fatal("no package/*/*.mk")
	}
	for _, mk := range mks {
		name := strings.TrimSuffix(filepath.Base(mk), ".mk")
		if filepath.Base(filepath.Dir(mk)) != name {
			t.Errorf("%s: a package's .mk is named after its folder", mk)
		}
		pkg := strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "_"
		text := read(t, mk)
		names := map[string]bool{}
		for _, m := range assignRe.FindAllStringSubmatch(text, -1) {
			names[m[1]] = true
		}
		defined := map[string]bool{}
		for _, m := range defineRe.FindAllStringSubmatch(text, -1) {
			names[m[1]] = true
			defined[m[1]] = true
		}
		for n := range names {
			if !strings.HasPrefix(n, pkg) {
				t.Errorf("%s: variable %s is outside the package's namespace %s*", mk, n, pkg)
				continue
			}
			suffix := strings.TrimPrefix(n, pkg)
			if (strings.HasSuffix(suffix, "_HOOKS") || strings.HasSuffix(suffix, "_CMDS") || strings.HasPrefix(suffix, "INSTALL_INIT_")) && !infra[suffix] {
				t.Errorf("%s: %s is not a Buildroot infrastructure variable (misspelt?)", mk, n)
			}
			if suffix == "INSTALL_BINS" {
				t.Errorf("%s: %s is no longer supported by golang-package (it errors); BUILD_TARGETS names the binaries", mk, n)
			}
		}
		for _, want := range []string{"VERSION", "SITE", "LICENSE", "GOMOD", "BUILD_TARGETS"} {
			if !names[pkg+want] {
				t.Errorf("%s: %s%s is not set", mk, pkg, want)
			}
		}
		for _, m := range hookRe.FindAllStringSubmatch(text, -1) {
			for _, h := range strings.Fields(m[1]) {
				if !defined[h] {
					t.Errorf("%s: hook %s is added but never defined", mk, h)
				}
			}
		}
		for _, m := range pkgdirRe.FindAllStringSubmatch(text, -1) {
			if m[1]+"_" != pkg {
				t.Errorf("%s: $(%s_PKGDIR) is another package's folder", mk, m[1])
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(mk), m[2])); err != nil {
				t.Errorf("%s: installs $(%s_PKGDIR)/%s: %v", mk, m[1], m[2], err)
			}
		}
		// The infrastructure is evaluated last, after every variable it reads:
		// golang-package, or generic-package for the build machine's Go
		// (TestHostGoEnv and TestGolangPackage check which one is taken).
		evals := evalRe.FindAllStringSubmatchIndex(text, -1)
		if len(evals) == 0 {
			t.Errorf("%s: no $(eval $(golang-package))", mk)
			continue
		}
		var infras []string
		for _, e := range evals {
			infras = append(infras, text[e[2]:e[3]])
		}
		sort.Strings(infras)
		if got := strings.Join(infras, " "); got != "golang-package" && got != "generic-package golang-package" {
			t.Errorf("%s: evaluates %s, want golang-package (and generic-package)", mk, got)
		}
		for _, line := range strings.Split(strings.TrimSpace(text[evals[0][0]:]), "\n") {
			if !evalRe.MatchString(line) && !tailRe.MatchString(line) {
				t.Errorf("%s: %q after the first $(eval ...): want the infrastructure as the last lines", mk, line)
			}
		}
		cfg := read(t, filepath.Join(filepath.Dir(mk), "Config.in"))
		if !regexp.MustCompile(`(?m)^\s*depends on BR2_PACKAGE_HOST_GO_TARGET_ARCH_SUPPORTS\b`).MatchString(cfg) {
			t.Errorf("%s/Config.in: golang packages must depend on BR2_PACKAGE_HOST_GO_TARGET_ARCH_SUPPORTS", filepath.Dir(mk))
		}
	}
}

func TestDefconfigs(t *testing.T) {
	defs := files(t, "configs/*_defconfig")
	if len(defs) == 0 {
		t.Fatal("no configs/*_defconfig")
	}
	line := regexp.MustCompile(`^(#.*|BR2_\w+=.*|)$`)
	overlay := regexp.MustCompile(`\$\(BR2_EXTERNAL_PORTHOLE_PATH\)/([^" ]+)`)
	for _, d := range defs {
		text := read(t, d)
		for i, l := range strings.Split(text, "\n") {
			if !line.MatchString(l) {
				t.Errorf("%s:%d: not a defconfig line: %q", d, i+1, l)
			}
		}
		if !strings.Contains(text, "\nBR2_PACKAGE_PORTHOLE=y\n") {
			t.Errorf("%s does not enable BR2_PACKAGE_PORTHOLE", d)
		}
		for _, m := range overlay.FindAllStringSubmatch(text, -1) {
			if _, err := os.Stat(filepath.Join(tree, m[1])); err != nil {
				t.Errorf("%s names $(BR2_EXTERNAL_PORTHOLE_PATH)/%s: %v", d, m[1], err)
			}
		}
	}
}

// keys lists a TOML document's key paths (a.b.c).
func keys(t *testing.T, path string) []string {
	t.Helper()
	var m map[string]any
	if _, err := toml.DecodeFile(path, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok && k != "services" {
				walk(prefix+k+".", sub)
				continue
			}
			out = append(out, prefix+k)
		}
	}
	walk("", m)
	sort.Strings(out)
	return out
}

// TestDefaultConfig: the config the package installs uses only keys the agent
// documents in porthole.example.toml, and the .mk's sed lines find their targets.
func TestDefaultConfig(t *testing.T) {
	path := filepath.Join(tree, "package/porthole/porthole.toml")
	known := map[string]bool{}
	for _, k := range keys(t, "../../agent/porthole.example.toml") {
		known[k] = true
	}
	for _, k := range keys(t, path) {
		if !known[k] {
			t.Errorf("%s: key %s is not in agent/porthole.example.toml", path, k)
		}
	}
	text := []byte(read(t, path))
	for _, re := range []string{`(?m)^thing_name = `, `(?m)^\[mqtt\]\n(?:[^\[].*\n)*endpoint = `} {
		if !regexp.MustCompile(re).Match(text) {
			t.Errorf("%s: no line matching %s for porthole.mk to rewrite", path, re)
		}
	}
	if bytes.Contains(text, []byte("BEGIN")) {
		t.Errorf("%s holds key material", path)
	}
}

// TestDeviceFlags: porthole.mk and the Makefile both pass the compiler flags of
// agent/cmd/porthole/device.gcflags, as the QEMU boards do (and the Makefile
// the GOEXPERIMENT of device.goexperiment), so a firmware image,
// make cross and the boards build the same binary. GNU make expands both files
// (porthole.mk with golang-package stubbed out).
func TestDeviceFlags(t *testing.T) {
	testenv.NeedProgram(t, "make")
	want, err := board.DeviceGCFlags("../../agent/cmd/porthole/device.gcflags")
	if err != nil {
		t.Fatal(err)
	}
	ext, err := filepath.Abs(tree)
	if err != nil {
		t.Fatal(err)
	}
	stub := filepath.Join(t.TempDir(), "stub.mk")
	text := "BR2_EXTERNAL_PORTHOLE_PATH := " + ext + "\ngolang-package :=\ninclude " +
		filepath.Join(ext, "package/porthole/porthole.mk") + "\nprint: ; @echo $(PORTHOLE_BUILD_OPTS)\n"
	if err := os.WriteFile(stub, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cmd  *exec.Cmd
	}{
		{"porthole.mk PORTHOLE_BUILD_OPTS", exec.Command("make", "-s", "-f", stub, "print")},
		{"make device-gcflags", exec.Command("make", "-s", "-C", "../..", "--no-print-directory", "device-gcflags")},
	} {
		out, err := c.cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, out)
		}
		if got := strings.Fields(string(out)); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s = %q\nwant %q (agent/cmd/porthole/device.gcflags)", c.name, got, want)
		}
	}

	// The GOEXPERIMENT: TestHostGoEnv and TestGolangPackage check porthole.mk's.
	experiment, err := board.DeviceGOEXPERIMENT(t.Context(), "../../agent/cmd/porthole/device.goexperiment")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("make", "-s", "-C", "../..", "--no-print-directory", "device-goexperiment").CombinedOutput()
	if err != nil {
		t.Fatalf("make device-goexperiment: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != experiment {
		t.Errorf("make device-goexperiment = %q, want %q (agent/cmd/porthole/device.goexperiment)", got, experiment)
	}
}
