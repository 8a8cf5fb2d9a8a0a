package board

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDeviceGCFlags(t *testing.T) {
	flags, err := DeviceGCFlags("../agent/cmd/porthole/device.gcflags")
	if err != nil {
		t.Fatal(err)
	}
	if flags[0] != "-gcflags=all=-l" {
		t.Errorf("first flag %q: want -gcflags=all=-l, which the lines after it refine", flags[0])
	}
	for _, f := range flags {
		if strings.Contains(f, "#") {
			t.Errorf("flag %q holds a comment", f)
		}
	}

	dir := t.TempDir()
	for name, text := range map[string]string{
		"empty":    "# only a comment\n\n",
		"space":    "all=-l\nruntime= -N\n",
		"indented": "all=-l\n  # an indented comment is not one for make\n",
		"crlf":     "all=-l\r\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if flags, err := DeviceGCFlags(path); err == nil {
			t.Errorf("%s: %q accepted as %q", name, text, flags)
		}
	}
	if _, err := DeviceGCFlags(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
}
