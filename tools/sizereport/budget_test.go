package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/porthole-iot/porthole/board"
)

// newerGo is the newest Go the device build was measured with (docs/size.md,
// fifteenth round), besides go.mod's. Go 1.27 made encoding/json a layer over
// encoding/json/v2, which log/slog links into the agent: without the device's
// GOEXPERIMENT nojsonv2 the linux/mipsle binary grew 640 KiB, over its budget.
// The go command fetches it from the Go module proxy, as a module.
const newerGo = "go1.27.3"

// TestDeviceBinaryBudgets: the budgeted device binaries, built as the QEMU
// boards and make cross build them (device.gcflags, device.goexperiment),
// fit their file-size budgets, with go.mod's Go and with newerGo.
func TestDeviceBinaryBudgets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four device binaries")
	}
	boards := map[string]string{"linux-mipsle": "qemu-mipsel-malta", "linux-armv7": "qemu-armv7-virt"}
	if len(boards) != len(budgets) {
		t.Fatalf("budgets %v: a board for each is wanted here", budgets)
	}
	for _, toolchain := range []string{"local", newerGo} {
		t.Run(toolchain, func(t *testing.T) {
			// Both the device's GOEXPERIMENT check and the build ask the go
			// command, so the whole environment names the toolchain.
			t.Setenv("GOTOOLCHAIN", toolchain)
			if out, err := exec.Command("go", "version").CombinedOutput(); err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("GOTOOLCHAIN=%s go version: %v\n%s", toolchain, err, out)
				}
				t.Skipf("GOTOOLCHAIN=%s: the go command cannot run it (no Go module proxy?): %v\n%s", toolchain, err, out)
			}
			for target, name := range boards {
				c, err := board.Load("../../board", name)
				if err != nil {
					t.Fatal(err)
				}
				out := filepath.Join(t.TempDir(), "porthole")
				cmd, err := c.GoBuild(t.Context(), out, "budget-test")
				if err != nil {
					t.Fatal(err)
				}
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", cmd, err, b)
				}
				fi, err := os.Stat(out)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s, GOTOOLCHAIN=%s: %d bytes (%.2f MiB, budget %.1f)", target, toolchain, fi.Size(), mib(fi.Size()), budgets[target])
				if mib(fi.Size()) > budgets[target] {
					t.Errorf("%s built with GOTOOLCHAIN=%s: %d bytes, over its %.1f MiB budget (docs/size.md)",
						target, toolchain, fi.Size(), budgets[target])
				}
			}
		})
	}
}
