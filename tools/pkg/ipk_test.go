package pkg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// ipkMember is one entry of a .ipk's outer tar.
type ipkMember struct {
	hdr  *tar.Header
	data []byte
}

// readIPK reads a .ipk as OpenWrt's opkg (opkg-lede, libbb/unarchive.c
// deb_extract) does: the whole file through gunzip, then a tar walked for
// ./debian-binary, ./control.tar.gz and ./data.tar.gz. It is not an ar archive
// (Debian's .deb, and opkg's from before LEDE), which opkg-lede cannot read.
// The gzip header is gzip -n's, as ipkg-build's is: no name, no time.
func readIPK(t *testing.T, b []byte) []ipkMember {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("ipk: not gzip (opkg-lede gunzips the whole file): %v; starts %q", err, b[:min(8, len(b))])
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("ipk: gzip header has name %q, time %v; want neither (gzip -n)", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var out []ipkMember
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("ipk: outer tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("ipk: outer tar: %s: %v", h.Name, err)
		}
		out = append(out, ipkMember{h, data})
	}
	return out
}

// ipkMembers returns the outer tar's members by name.
func ipkMembers(t *testing.T, raw []byte) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, e := range readIPK(t, raw) {
		m[e.hdr.Name] = e.data
	}
	return m
}

var ipkArchs = []struct {
	arch, goarch, env string
}{
	{"mipsel_24kc", "mipsle", "GOMIPS=softfloat"},
	{"mips_24kc", "mips", "GOMIPS=softfloat"},
	{"arm_cortex-a7_neon-vfpv4", "arm", "GOARM=7"},
	{"aarch64_cortex-a53", "arm64", ""},
}

func TestIPK(t *testing.T) {
	for _, a := range ipkArchs {
		t.Run(a.arch, func(t *testing.T) {
			var env []string
			if a.env != "" {
				env = append(env, a.env)
			}
			bin := tinyBinary(t, a.goarch, env...)
			out := t.TempDir()
			if b, err := exec.Command("./ipk.sh", a.arch, "v1.2.3-4-gabcdef", out, bin).CombinedOutput(); err != nil {
				t.Fatalf("ipk.sh %s: %v\n%s", a.arch, err, b)
			}
			raw, err := os.ReadFile(filepath.Join(out, "porthole_1.2.3-4-gabcdef_"+a.arch+".ipk"))
			if err != nil {
				t.Fatal(err)
			}
			checkIPK(t, a.arch, raw, bin)
		})
	}
}

func checkIPK(t *testing.T, arch string, raw []byte, bin string) {
	members := readIPK(t, raw)
	var names []string
	for _, m := range members {
		names = append(names, m.hdr.Name)
	}
	// ipkg-build's order and names; opkg-lede looks the names up with the ./.
	if got, want := strings.Join(names, " "), "./debian-binary ./data.tar.gz ./control.tar.gz"; got != want {
		t.Fatalf("ipk members = %q, want %q (in that order)", got, want)
	}
	for _, m := range members {
		h := m.hdr
		if h.Typeflag != tar.TypeReg || h.Uid != 0 || h.Gid != 0 || h.Format != tar.FormatGNU || !h.ModTime.Equal(members[0].hdr.ModTime) {
			t.Errorf("ipk member %s: type %c, owner %d:%d, format %v, time %v; want a regular file, 0:0, GNU, the time of the others (%v)",
				h.Name, h.Typeflag, h.Uid, h.Gid, h.Format, h.ModTime, members[0].hdr.ModTime)
		}
	}
	if string(members[0].data) != "2.0\n" {
		t.Errorf("debian-binary = %q, want 2.0", members[0].data)
	}
	ctrl := readTarGz(t, "control.tar.gz", members[2].data)
	data := readTarGz(t, "data.tar.gz", members[1].data)

	control := string(ctrl["./control"].data)
	for _, want := range []string{"Package: porthole\n", "Version: 1.2.3-4-gabcdef\n", "Architecture: " + arch + "\n", "Installed-Size: ", "Description: ", "License: Apache-2.0 BSD-3-Clause BSD-2-Clause MIT\n"} {
		if !strings.Contains(control, want) {
			t.Errorf("control lacks %q:\n%s", want, control)
		}
	}
	// The binary is static: the package depends on nothing (not even libc).
	if strings.Contains(control, "\nDepends:") {
		t.Errorf("control has a Depends line for a static binary:\n%s", control)
	}
	conffiles := strings.Fields(string(ctrl["./conffiles"].data))
	if len(conffiles) == 0 || conffiles[0] != "/etc/config/porthole" {
		t.Errorf("conffiles = %q, want /etc/config/porthole", conffiles)
	}
	for _, c := range conffiles {
		if _, ok := data["."+c]; !ok {
			t.Errorf("conffile %s is not in data.tar.gz", c)
		}
	}
	for _, s := range []string{"./preinst", "./postinst", "./prerm"} {
		f, ok := ctrl[s]
		if !ok {
			t.Errorf("control.tar.gz lacks %s", s)
			continue
		}
		if f.mode != 0o755 {
			t.Errorf("%s mode %o, want 755", s, f.mode)
		}
		shSyntax(t, s, f.data)
	}

	checkModes(t, "data.tar.gz", data, map[string]os.FileMode{
		"./usr/bin/porthole":            0o755,
		"./etc/init.d/porthole":         0o755,
		"./etc/config/porthole":         0o600, // option https_proxy may hold a password
		"./lib/upgrade/keep.d/porthole": 0o644,
		"./etc/porthole/":               0o755,
	})
	// The binary is porthole's and the modules' it links: a package
	// distributing it carries their licenses (BSD and MIT want the text with
	// every binary copy), as the tarball does.
	checkModes(t, "data.tar.gz", data, map[string]os.FileMode{
		"./usr/share/licenses/porthole/LICENSE":             0o644,
		"./usr/share/licenses/porthole/THIRD_PARTY_NOTICES": 0o644,
	})
	for name, src := range map[string]string{"LICENSE": "../../LICENSE", "THIRD_PARTY_NOTICES": "THIRD_PARTY_NOTICES"} {
		if b, err := os.ReadFile(src); err != nil || len(b) == 0 || !bytes.Equal(data["./usr/share/licenses/porthole/"+name].data, b) {
			t.Errorf("/usr/share/licenses/porthole/%s is not the tree's %s (%v)", name, src, err)
		}
	}
	if b, _ := os.ReadFile(bin); !bytes.Equal(data["./usr/bin/porthole"].data, b) {
		t.Error("/usr/bin/porthole is not the binary given")
	}
	initScript := data["./etc/init.d/porthole"].data
	shSyntax(t, "/etc/init.d/porthole", initScript)
	for _, want := range []string{"#!/bin/sh /etc/rc.common", "USE_PROCD=1", "procd_set_param respawn", "check-config", "procd_add_reload_trigger porthole", "\nrestart() {"} {
		if !bytes.Contains(initScript, []byte(want)) {
			t.Errorf("/etc/init.d/porthole lacks %q", want)
		}
	}
	keep := string(data["./lib/upgrade/keep.d/porthole"].data)
	for _, want := range []string{"/etc/config/porthole", "/etc/porthole/"} {
		if !strings.Contains(keep, want) {
			t.Errorf("sysupgrade keep list lacks %s: %q", want, keep)
		}
	}
}

// TestIPKVersion: a release (a v tag as git describe gives it) is the package
// version without the v, a pre-release's - a ~ (TestIPKPreReleaseSortsBeforeRelease);
// anything else, a bare commit hash from git describe --always whatever its
// first character, or dev, is 0+ it, which opkg sorts below every release.
func TestIPKVersion(t *testing.T) {
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	for _, tc := range []struct{ version, want string }{
		{"v1.2.3", "1.2.3"},
		{"v1.2.3-4-gabcdef-dirty", "1.2.3-4-gabcdef-dirty"},
		{"v10.0.0-rc1", "10.0.0~rc1"},
		{"v10.0.0-rc1-3-gabcdef-dirty", "10.0.0~rc1-3-gabcdef-dirty"},
		{"v2.0.0-beta.2", "2.0.0~beta.2"},
		{"1.2.3", "1.2.3"},
		{"1a84f1f-dirty", "0+1a84f1f-dirty"},
		{"1a84f1f", "0+1a84f1f"},
		{"7821324", "0+7821324"},
		{"abcdef1-dirty", "0+abcdef1-dirty"},
		{"dev", "0+dev"},
	} {
		out := t.TempDir()
		if b, err := exec.Command("./ipk.sh", "mipsel_24kc", tc.version, out, bin).CombinedOutput(); err != nil {
			t.Fatalf("ipk.sh mipsel_24kc %s: %v\n%s", tc.version, err, b)
		}
		raw, err := os.ReadFile(filepath.Join(out, "porthole_"+tc.want+"_mipsel_24kc.ipk"))
		if err != nil {
			names, _ := filepath.Glob(filepath.Join(out, "*.ipk"))
			t.Errorf("ipk.sh with version %s: %v (made %v)", tc.version, err, names)
			continue
		}
		ctrl := readTarGz(t, "control.tar.gz", ipkMembers(t, raw)["./control.tar.gz"])
		if control := string(ctrl["./control"].data); !strings.Contains(control, "\nVersion: "+tc.want+"\n") {
			t.Errorf("ipk.sh with version %s: control lacks Version: %s:\n%s", tc.version, tc.want, control)
		}
	}
}

func TestIPKRefusesAnotherArchitecture(t *testing.T) {
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	out, err := exec.Command("./ipk.sh", "mips_24kc", "v1", t.TempDir(), bin).CombinedOutput()
	if err == nil {
		t.Fatalf("ipk.sh mips_24kc with a little-endian binary succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "want '1 2 8'") {
		t.Errorf("ipk.sh error = %q, want it to name the expected ELF header", out)
	}
}

// TestIPKReproducible: two builds from the same inputs are the same bytes,
// every entry dated SOURCE_DATE_EPOCH.
// buildReproducible runs ipk.sh for mipsel_24kc v1.2.3 with bin under
// SOURCE_DATE_EPOCH, with the given umask and TMPDIR ("": the caller's), and
// returns the package.
func buildReproducible(t *testing.T, bin, umask, tmp string) []byte {
	t.Helper()
	out := t.TempDir()
	if umask == "" {
		umask = "022"
	}
	cmd := exec.Command("sh", "-c", `umask "$0"; exec ./ipk.sh "$@"`, umask, "mipsel_24kc", "v1.2.3", out, bin)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
	if tmp != "" {
		cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("umask %s; TMPDIR=%s ipk.sh: %v\n%s", umask, tmp, err, b)
	}
	raw, err := os.ReadFile(filepath.Join(out, "porthole_1.2.3_mipsel_24kc.ipk"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestIPKReproducible(t *testing.T) {
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	var builds [][]byte
	for i := range 2 {
		raw := buildReproducible(t, bin, "", "")
		builds = append(builds, raw)
		if i == 0 {
			time.Sleep(1100 * time.Millisecond) // a second later, for any time that leaks in
		}
	}
	if !bytes.Equal(builds[0], builds[1]) {
		t.Error("two builds of the same package differ")
	}
	for _, m := range readIPK(t, builds[0]) {
		if m.hdr.ModTime.Unix() != 1700000000 {
			t.Errorf("ipk member %s dated %v, want SOURCE_DATE_EPOCH 1700000000", m.hdr.Name, m.hdr.ModTime)
		}
	}
}

// TestIPKBusyBox lists and unpacks the package with BusyBox's gzip and tar, the
// tools an OpenWrt device has, as opkg-lede reads it: gunzip, then a tar.
func TestIPKBusyBox(t *testing.T) {
	bb := testenv.NeedProgram(t, "busybox") // Debian: busybox-static
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	out := t.TempDir()
	if b, err := exec.Command("./ipk.sh", "mipsel_24kc", "v1.2.3", out, bin).CombinedOutput(); err != nil {
		t.Fatalf("ipk.sh: %v\n%s", err, b)
	}
	ipk := filepath.Join(out, "porthole_1.2.3_mipsel_24kc.ipk")
	list := exec.Command(bb, "sh", "-c", `"$0" gzip -d -c <"$1" | "$0" tar tf -`, bb, ipk)
	b, err := list.CombinedOutput()
	if got, want := string(b), "./debian-binary\n./data.tar.gz\n./control.tar.gz\n"; err != nil || got != want {
		t.Errorf("busybox gzip -d -c <ipk | busybox tar tf -: %v %q, want %q", err, got, want)
	}
	dir := t.TempDir()
	unpack := exec.Command(bb, "sh", "-c", `set -e; "$0" gzip -d -c <"$1" | "$0" tar xf -; "$0" tar xzf control.tar.gz ./control; cat ./control`, bb, ipk)
	unpack.Dir = dir
	if b, err := unpack.CombinedOutput(); err != nil || !strings.Contains(string(b), "Package: porthole\n") {
		t.Errorf("unpacking the control file with busybox: %v\n%s", err, b)
	}
}

// TestIPKUmask: the package does not depend on the umask of whoever builds it.
// opkg (libbb/unarchive.c) chmods every directory of data.tar.gz that already
// exists on the device to the mode the tar gives it: a package built under
// umask 002 (a desktop user's default on Ubuntu or Fedora) makes /etc, /usr/bin
// and /lib group-writable on the router, and one built under umask 077 makes
// them root's only, which non-root daemons cannot read. Each directory is 0755
// and the bytes are those of a build under umask 022.
func TestIPKUmask(t *testing.T) {
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	build := func(umask string) []byte { return buildReproducible(t, bin, umask, "") }
	want := build("022")
	for _, umask := range []string{"002", "077"} {
		raw := build(umask)
		members := ipkMembers(t, raw)
		for _, part := range []string{"./data.tar.gz", "./control.tar.gz"} {
			for name, f := range readTarGz(t, part, members[part]) {
				if f.dir && f.mode != 0o755 {
					t.Errorf("umask %s: %s: directory %s mode %o, want 755 (opkg sets the device's directory to it)", umask, part, name, f.mode)
				}
				switch {
				case name == "./etc/config/porthole":
					if f.mode != 0o600 {
						t.Errorf("umask %s: %s: %s mode %o, want 600 (option https_proxy may hold a password)", umask, part, name, f.mode)
					}
				case !f.dir && (f.mode&0o644 != 0o644 || f.mode&0o022 != 0):
					t.Errorf("umask %s: %s: %s mode %o, want readable by all, writable by root only", umask, part, name, f.mode)
				}
			}
		}
		if !bytes.Equal(raw, want) {
			t.Errorf("umask %s: the package differs from the one built under umask 022", umask)
		}
	}
}

// TestIPKInstalledSize: Installed-Size is the bytes of the package's files,
// the same wherever the package is built: not du's total, which counts the directories too, at the size the build
// machine's file system gives them (4096 on ext4, a few dozen bytes on tmpfs),
// so that the same inputs made different packages on different machines.
func TestIPKInstalledSize(t *testing.T) {
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	build := func(tmp string) []byte { return buildReproducible(t, bin, "", tmp) }
	raw := build(t.TempDir())
	members := ipkMembers(t, raw)
	var sum int
	for _, f := range readTarGz(t, "data.tar.gz", members["./data.tar.gz"]) {
		if !f.dir {
			sum += len(f.data)
		}
	}
	control := string(readTarGz(t, "control.tar.gz", members["./control.tar.gz"])["./control"].data)
	if want := fmt.Sprintf("\nInstalled-Size: %d\n", sum); !strings.Contains(control, want) {
		t.Errorf("control lacks %q (the sum of the files' sizes):\n%s", strings.TrimSpace(want), control)
	}
	// A work folder on tmpfs, where directories have other sizes than on the
	// disk t.TempDir() is on (ext4 here), gives the same package.
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != 0x01021994 { // TMPFS_MAGIC
		t.Log("no tmpfs at /dev/shm: the package is not built on one")
		return
	}
	shm, err := os.MkdirTemp("/dev/shm", "ipk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(shm)
	if !bytes.Equal(build(shm), raw) {
		t.Error("the package built with TMPDIR on tmpfs differs from the one built on disk")
	}
}

// TestIPKPreReleaseSortsBeforeRelease: opkg orders versions as dpkg does
// (libopkg's verrevcmp, the revision split at the last '-'), so a release
// candidate's package must sort before the release's, and so must a build
// made on top of the candidate (git describe v10.0.0-rc1-3-gabcdef).
// Otherwise `opkg upgrade` never moves a device from the candidate to the
// release, and `opkg install porthole_10.0.0_*.ipk` says "Not downgrading
// package porthole ... from 10.0.0-rc1 to 10.0.0" and exits 0 with the
// candidate still installed. dpkg --compare-versions stands in for opkg: the
// same algorithm.
func TestIPKPreReleaseSortsBeforeRelease(t *testing.T) {
	testenv.NeedProgram(t, "dpkg") // fails under CI=true when missing
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	version := func(tag string) string {
		out := t.TempDir()
		if b, err := exec.Command("./ipk.sh", "mipsel_24kc", tag, out, bin).CombinedOutput(); err != nil {
			t.Fatalf("ipk.sh %s: %v\n%s", tag, err, b)
		}
		names, _ := filepath.Glob(filepath.Join(out, "*.ipk"))
		raw, err := os.ReadFile(names[0])
		if err != nil {
			t.Fatal(err)
		}
		ctrl := readTarGz(t, "control.tar.gz", ipkMembers(t, raw)["./control.tar.gz"])
		for _, l := range strings.Split(string(ctrl["./control"].data), "\n") {
			if v, ok := strings.CutPrefix(l, "Version: "); ok {
				return v
			}
		}
		t.Fatalf("ipk.sh %s: no Version in control", tag)
		return ""
	}
	release := version("v10.0.0")
	for _, tag := range []string{"v10.0.0-rc1", "v10.0.0-rc1-3-gabcdef", "v10.0.0-beta2"} {
		pre := version(tag)
		if err := exec.Command("dpkg", "--compare-versions", pre, "lt", release).Run(); err != nil {
			t.Errorf("package of %s has version %s, which opkg orders after the release's %s: opkg upgrade never installs the release over it", tag, pre, release)
		}
	}
}
