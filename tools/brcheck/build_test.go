package brcheck

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// TestHostGoBuildMipsle builds porthole as Buildroot would for the
// defconfig's target (MIPS32r2 little endian, soft-float, so through the
// build machine's Go): the tree copied into a build folder as Buildroot's
// rsync copies it, then porthole.mk's own steps — the Go check, go mod vendor
// (from the module cache only: GOPROXY=off), go build and the target install
// — with the real go. It then reads the installed binary's build settings
// and runs it under qemu-mipsel-static.
//
// The build shares the Go build cache of the user (PORTHOLE_GOCACHE): a few
// seconds when make cross or the qemu tests have built for mipsle, up to a
// minute or two on a cold cache, so -short skips it.
func TestHostGoBuildMipsle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the device binary for mipsle (up to minutes on a cold Go cache); not with -short")
	}
	ci := os.Getenv("CI") == "true"
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go is not on PATH:", err)
	}
	gocache, err := exec.Command(gobin, "env", "GOCACHE").Output()
	if err != nil {
		t.Fatal("go env GOCACHE:", err)
	}
	p := newPkg(t, append(hostGo(gobin, "BR2_mipsel=y", "BR2_MIPS_CPU_MIPS32R2=y", "BR2_MIPS_SOFT_FLOAT=y"),
		`BR2_PACKAGE_PORTHOLE_THING_NAME="brcheck-thing"`, "BR2_INIT_BUSYBOX=y", "BR2_PACKAGE_PORTHOLE_SYSV_INIT=y")...)
	p.args = []string{"PORTHOLE_GOCACHE=" + strings.TrimSpace(string(gocache))}
	p.env = []string{"GOPROXY=off"}
	if err := rsync("../..", p.dir, p.rsyncExclusions()); err != nil {
		t.Fatal(err)
	}
	for _, excluded := range []string{"bin", "dist"} { // porthole.mk's exclusions
		if _, err := os.Lstat(filepath.Join(p.dir, excluded)); err == nil {
			t.Errorf("the build folder has the tree's %s", excluded)
		}
	}

	// porthole.mk links in git describe's version of the tree: taken before
	// the build, which takes long enough for a commit to land meanwhile.
	version := strings.TrimPrefix(strings.Fields(ldflags())[1], "github.com/porthole-iot/porthole/agent.Version=")
	out, err := p.make("rsynced", "built", "target_installed")
	if err != nil {
		if strings.Contains(out, "module lookup disabled by GOPROXY=off") {
			if ci {
				t.Fatalf("go mod vendor: the Go module cache lacks modules porthole needs (make test runs go mod download first):\n%s", out)
			}
			t.Skipf("go mod vendor: the Go module cache lacks modules porthole needs; run go mod download:\n%s", out)
		}
		t.Fatalf("build: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(p.dir, "vendor/modules.txt")); err != nil {
		t.Errorf("the build folder was not vendored: %v", err)
	}
	if _, err := os.Stat("../../vendor"); err == nil {
		t.Error("the build vendored the source tree, not its own folder")
	}
	// make porthole-dirclean removes the build folder with rm -rf.
	if ro := readOnlyDirs(t, p.dir); len(ro) > 0 {
		t.Errorf("the build left %d folders of its build folder read-only, which make porthole-dirclean cannot remove, such as %s", len(ro), ro[0])
	}

	bin := filepath.Join(p.target, "usr/bin/porthole")
	for path, mode := range map[string]os.FileMode{
		bin:                          0o755,
		"etc/init.d/S50porthole":     0o755,
		"etc/porthole/porthole.toml": 0o600,
	} {
		if !filepath.IsAbs(path) {
			path = filepath.Join(p.target, path)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Error(err)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", path, st.Mode().Perm(), mode)
		}
	}
	if got, want := read(t, filepath.Join(p.target, "etc/init.d/S50porthole")), read(t, "../pkg/sysv/porthole"); got != want {
		t.Error("etc/init.d/S50porthole is not tools/pkg/sysv/porthole")
	}
	if b, err := os.ReadFile(filepath.Join(p.target, "etc/porthole/porthole.toml")); err == nil &&
		!strings.Contains(string(b), "\nthing_name = \"brcheck-thing\"\n") {
		t.Errorf("porthole.toml: BR2_PACKAGE_PORTHOLE_THING_NAME not written:\n%s", b)
	}

	info, err := exec.Command(gobin, "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m %s: %v", bin, err)
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "build" {
			k, v, _ := strings.Cut(f[1], "=")
			settings[k] = v
		}
	}
	for k, want := range map[string]string{
		"GOOS": "linux", "GOARCH": "mipsle", "GOMIPS": "softfloat", "CGO_ENABLED": "0",
		"-tags": "netgo,osusergo", "-trimpath": "true", "GOEXPERIMENT": "nogreenteagc,nojsonv2",
	} {
		if settings[k] != want {
			t.Errorf("go version -m: build %s=%q, want %q\n%s", k, settings[k], want, info)
		}
	}

	qemu := testenv.NeedProgram(t, "qemu-mipsel-static") // Debian qemu-user-static
	got, err := exec.Command(qemu, bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-mipsel-static porthole version: %v\n%s", err, got)
	}
	// The version porthole.mk links in, and the Go release that built it.
	if want := "porthole " + version + " (go"; !strings.HasPrefix(string(got), want) || !strings.HasSuffix(string(got), ")\n") {
		t.Errorf("porthole version under qemu = %q, want %q… (the version porthole.mk links in, then the Go release)", strings.TrimSpace(string(got)), want)
	}
}

// rsync copies the tree src into dst as Buildroot's rsync step does
// (rsync -au --chmod=u=rwX,go=rX with exclusions): patterns with a leading
// slash match at the top of src only, others any file or folder whose name
// they match (globs, as rsync's: *~); symbolic links are copied as links.
func rsync(src, dst string, exclude []string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		for _, pat := range exclude {
			top, anchored := strings.CutPrefix(pat, "/")
			matched, err := filepath.Match(pat, d.Name())
			if err != nil {
				return fmt.Errorf("exclusion %q: %w", pat, err)
			}
			if (anchored && rel == top) || (!anchored && matched) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case info.Mode().IsRegular():
			mode := os.FileMode(0o644)
			if info.Mode()&0o100 != 0 {
				mode = 0o755
			}
			return copyFile(path, to, mode)
		}
		return nil
	})
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestGolangPackageVendorOffline: with Buildroot's Go, porthole.mk vendors
// into the build folder with Buildroot's Go environment (its own, here empty,
// module cache) and GOPROXY from the caller's, so the README's offline recipe,
// GOPROXY=file://$(go env GOMODCACHE)/cache/download, works: run here with the
// real go as Buildroot's host-go.
func TestGolangPackageVendorOffline(t *testing.T) {
	if testing.Short() {
		t.Skip("extracts every module porthole needs into a new module cache; not with -short")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go is not on PATH:", err)
	}
	modcache, err := exec.Command(gobin, "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal("go env GOMODCACHE:", err)
	}
	p := newPkg(t, "BR2_aarch64=y", "BR2_PACKAGE_HOST_GO_TARGET_ARCH_SUPPORTS=y", "BR2_PACKAGE_PORTHOLE=y")
	gopath := filepath.Join(t.TempDir(), "go-path")
	// Go writes its module cache read-only.
	t.Cleanup(func() {
		filepath.WalkDir(gopath, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(path, 0o755)
			}
			return nil
		})
	})
	// HOST_GO_COMMON_ENV as Buildroot's package/go/go.mk sets it, but PATH.
	p.args = []string{"GO_BIN=" + gobin, "HOST_GO_COMMON_ENV=GO111MODULE=on GOFLAGS=-mod=vendor GOPATH=" + gopath +
		" GOMODCACHE=" + gopath + "/pkg/mod GOPROXY=off GOTOOLCHAIN=local GOBIN= CGO_ENABLED=0"}
	p.env = []string{"GOPROXY=file://" + strings.TrimSpace(string(modcache)) + "/cache/download"}
	if err := rsync("../..", p.dir, p.rsyncExclusions()); err != nil {
		t.Fatal(err)
	}
	out, err := p.make("built")
	if err != nil {
		if strings.Contains(out, ": reading file://") {
			if os.Getenv("CI") == "true" {
				t.Fatalf("go mod vendor: the Go module cache lacks modules porthole needs (make test runs go mod download first):\n%s", out)
			}
			t.Skipf("go mod vendor: the Go module cache lacks modules porthole needs; run go mod download:\n%s", out)
		}
		t.Fatalf("vendoring: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(p.dir, "vendor/modules.txt")); err != nil {
		t.Errorf("the build folder was not vendored: %v", err)
	}
	if _, err := os.Stat(filepath.Join(gopath, "pkg/mod/cache/download")); err != nil {
		t.Errorf("vendoring did not use Buildroot's module cache (GOMODCACHE of HOST_GO_COMMON_ENV): %v", err)
	}
	// That cache is in Buildroot's output folder, which make clean removes
	// with rm -rf as the user who builds (golang/go#31481).
	if ro := readOnlyDirs(t, gopath); len(ro) > 0 {
		t.Errorf("vendoring left %d folders of Buildroot's module cache read-only, which make clean cannot remove (go mod vendor without -modcacherw), such as %s", len(ro), ro[0])
	}
}

// readOnlyDirs returns the folders under root that their owner cannot write:
// rm -rf, run by anyone but root, cannot remove what they hold. Go makes its
// module cache so unless told -modcacherw.
func readOnlyDirs(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o200 == 0 {
			rel, _ := filepath.Rel(root, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
