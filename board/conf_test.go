package board

import (
	"os"
	"path/filepath"
	"runtime"
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

// TestDeviceGOEXPERIMENT: the tree's file names two experiments, which this
// toolchain knows (Go 1.26 and 1.27); one it does not know is left out, as the
// Makefile and the Buildroot package leave it out; malformed files are refused.
func TestDeviceGOEXPERIMENT(t *testing.T) {
	ctx := t.Context()
	got, err := DeviceGOEXPERIMENT(ctx, "../agent/cmd/porthole/device.goexperiment")
	if err != nil {
		t.Fatal(err)
	}
	if got != "nogreenteagc,nojsonv2" {
		// The readers leave out an experiment the toolchain does not know, so
		// users still build; here it is the maintainers' cue: the mipsel board's
		// idle memory and the mipsle binary's size rely on them (docs/size.md,
		// the fourteenth and fifteenth rounds).
		t.Errorf("device GOEXPERIMENT = %q, want nogreenteagc,nojsonv2: if this Go (%s) no longer knows one, re-measure the binary sizes and the boards' idle memory and update agent/cmd/porthole/device.goexperiment and docs/size.md", got, runtime.Version())
	}

	dir := t.TempDir()
	for name, c := range map[string]struct {
		text, want string
		ok         bool
	}{
		"unknown":  {"# a comment\nnosuchexperiment\n", "", true},
		"one of 3": {"nogreenteagc,nosuchexperiment,nojsonv2\n", "nogreenteagc,nojsonv2", true},
		"empties":  {",nogreenteagc,,\n", "nogreenteagc", true},
		"none":     {"# only a comment\n\n", "", true},
		"two":      {"nogreenteagc\nnoaliastypeparams\n", "", false},
		"space":    {"nogreenteagc \n", "", false},
		"crlf":     {"nogreenteagc\r\n", "", false},
		"indented": {"  # an indented comment is not one for make\n", "", false},
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := DeviceGOEXPERIMENT(ctx, path)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("%s: %q gave %q, %v; want %q, ok %v", name, c.text, got, err, c.want, c.ok)
		}
	}
	if _, err := DeviceGOEXPERIMENT(ctx, filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
}

// TestGoBuild: a board's binary is built with the device's compiler flags and
// GOEXPERIMENT, as make cross builds it.
func TestGoBuild(t *testing.T) {
	c, err := Load(".", "qemu-mipsel-malta")
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := c.GoBuild(t.Context(), "/nonexistent/porthole", "test")
	if err != nil {
		t.Fatal(err)
	}
	gcflags, err := DeviceGCFlags("../agent/cmd/porthole/device.gcflags")
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(cmd.Args, " ")
	if !strings.Contains(args, " "+strings.Join(gcflags, " ")+" ") {
		t.Errorf("go build %s\nwithout the device's -gcflags %q", args, gcflags)
	}
	if env := strings.Join(cmd.Env, "\n"); !strings.HasSuffix(env, "\nGOARCH=mipsle\nGOEXPERIMENT=nogreenteagc,nojsonv2\nGOMIPS=softfloat") {
		t.Errorf("go build's environment ends\n%s\nwant GOARCH=mipsle, GOEXPERIMENT=nogreenteagc,nojsonv2, GOMIPS=softfloat", env[max(0, len(env)-200):])
	}
}
