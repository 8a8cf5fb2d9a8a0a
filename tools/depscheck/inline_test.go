package depscheck

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-iot/porthole/board"
)

// hot are functions the compiler inlines into every caller in a default build:
// the ciphers' and hashes' inner steps, which run per block or per word. Built
// with the device's flags (agent/cmd/porthole/device.gcflags, mostly -l) none may
// be left as a function of its own, or the agent spends up to 4x the CPU per MiB
// (docs/size.md). math/bits.RotateLeft32 is ChaCha20's rotate: on 32-bit MIPS it
// is a function, and it stays one when math/bits is built with -l.
var hot = []string{
	"crypto/internal/fips140/aes.encryptBlock",
	"crypto/internal/fips140/aes/gcm.ghashAdd",
	"crypto/internal/fips140/sha256.block",
	"crypto/internal/fips140/sha512.block",
	"crypto/internal/fips140/bigmod.addMulVVW2048",
	"crypto/internal/fips140/edwards25519/field.feMul",
	"golang.org/x/crypto/internal/poly1305.mul64",
	"vendor/golang.org/x/crypto/internal/poly1305.mul64",
	"math/bits.RotateLeft32",
}

func TestDeviceFlagsKeepHotPathsInlined(t *testing.T) {
	flags, err := board.DeviceGCFlags("../../agent/cmd/porthole/device.gcflags")
	if err != nil {
		t.Fatal(err)
	}
	// The device's GOEXPERIMENT too: what links may differ without it (Go
	// 1.27's encoding/json/v2 calls math/bits.RotateLeft32 from a package
	// built with -l; nojsonv2 keeps it out).
	experiment, err := board.DeviceGOEXPERIMENT(t.Context(), "../../agent/cmd/porthole/device.goexperiment")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "porthole")
	args := append([]string{"build", "-trimpath", "-tags", "netgo,osusergo"}, flags...)
	cmd := exec.Command("go", append(args, "-o", bin, device)...)
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat", "GOEXPERIMENT="+experiment)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var stderr bytes.Buffer
	nm := exec.Command("go", "tool", "nm", bin)
	nm.Stderr = &stderr
	out, err := nm.Output()
	if err != nil {
		t.Fatalf("go tool nm: %v\n%s", err, stderr.String())
	}
	symbols := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			symbols[f[len(f)-1]] = true
		}
	}
	if !symbols["main.main"] {
		t.Fatalf("go tool nm %s: no main.main among %d symbols", bin, len(symbols))
	}
	for _, s := range hot {
		if symbols[s] {
			t.Errorf("%s is a function of its own in the device build: its package or a hot caller's is built with -l (device.gcflags)", s)
		}
	}
}
