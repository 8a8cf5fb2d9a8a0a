package tunneld

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestDeviceBinaryDoesNotLinkTunneld keeps the service side out of the device binary
// (DESIGN.md, "Rules of the house"): agent/cmd/porthole must not depend on tools/,
// the data plane, the test fake, the lab broker or the protobuf reflection runtime.
func TestDeviceBinaryDoesNotLinkTunneld(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping go list in -short mode")
	}
	const module = "github.com/porthole-iot/porthole"
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goTool, "list", "-deps", module+"/agent/cmd/porthole").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		module + "/tools/",
		module + "/agent/tunnel/dataplane",
		module + "/agent/tunnel/tunneltest",
		"github.com/mochi-mqtt/",
		"google.golang.org/protobuf/reflect",
	}
	pkgs := strings.Fields(string(out))
	if !slices.Contains(pkgs, module+"/agent/tunnel") {
		t.Fatalf("go list -deps lists %d packages, without agent/tunnel: is this the device binary?", len(pkgs))
	}
	for _, pkg := range pkgs {
		for _, f := range forbidden {
			if strings.HasPrefix(pkg, f) {
				t.Errorf("the device binary depends on %s", pkg)
			}
		}
	}
}
