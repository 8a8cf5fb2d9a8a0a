package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// An operator runs porthole connect on a laptop: macOS and Windows as well as
// Linux. The device side is Linux code, kept out of those builds by build
// constraints (agent_other.go); this keeps them building.
func TestConnectBuildsForOperatorSystems(t *testing.T) {
	if testing.Short() {
		t.Skip("builds for other systems: not with -short")
	}
	for _, target := range []struct{ goos, goarch string }{{"darwin", "arm64"}, {"windows", "amd64"}} {
		t.Run(target.goos+"-"+target.goarch, func(t *testing.T) {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(t.TempDir(), "porthole"), ".")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+target.goos, "GOARCH="+target.goarch)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("porthole does not build for %s/%s: %v\n%s", target.goos, target.goarch, err, out)
			}
		})
	}
}
