package pkg

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestIPKReproducibleWithTarOptions: GNU tar reads options from TAR_OPTIONS in
// the environment, as the builder's umask, which the scripts pin (022), would
// also change them. A builder whose environment set TAR_OPTIONS=--format=posix
// (or whose tar defaults to pax) got pax headers with atime and ctime in
// data.tar.gz and control.tar.gz, which only the outer tar's --format=gnu
// kept out (and in tarball.sh's tar): two builds of the same inputs differed,
// and opkg's tar reader knows no pax header. Every tar names its format now.
func TestIPKReproducibleWithTarOptions(t *testing.T) {
	bin := tinyBinary(t, "mipsle", "GOMIPS=softfloat")
	var builds [][]byte
	for range 2 {
		out := t.TempDir()
		cmd := exec.Command("./ipk.sh", "mipsel_24kc", "v1.2.3", out, bin)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000", "TAR_OPTIONS=--format=posix")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ipk.sh: %v\n%s", err, b)
		}
		raw, err := os.ReadFile(filepath.Join(out, "porthole_1.2.3_mipsel_24kc.ipk"))
		if err != nil {
			t.Fatal(err)
		}
		builds = append(builds, raw)
		time.Sleep(1100 * time.Millisecond)
	}
	if !bytes.Equal(builds[0], builds[1]) {
		t.Error("TAR_OPTIONS=--format=posix: two builds of the same package differ (pax atime/ctime in the inner tars)")
	}
}
