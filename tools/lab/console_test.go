package lab

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"testing/fstest"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// xterm stands in for the console's xterm.js files (tools/console's vendorFiles).
var xterm = fstest.MapFS{
	"xterm.js":     {Data: []byte("/* xterm.js */")},
	"xterm.css":    {Data: []byte("/* xterm.css */")},
	"addon-fit.js": {Data: []byte("/* addon-fit.js */")},
}

// TestConsoleStepWithoutXterm: in a build without xterm.js the web console's
// progress line says skipped, not ok, and with it ok. It said ok either way,
// over the output's word that the console is not in this build. The console's
// host key store (console_host_keys.json in the state directory) is written
// only when the console runs: a skipped one wrote it all the same.
func TestConsoleStepWithoutXterm(t *testing.T) {
	porthole := stack.Build(t)
	for _, tc := range []struct {
		name     string
		vendor   fstest.MapFS
		want     string
		hostKeys bool // console_host_keys.json written
	}{
		{"without", fstest.MapFS{"README.md": {Data: []byte("make console-assets")}}, `(?m)^  web console \.\.\. +skipped \(xterm\.js is not in this build\)$`, false},
		{"with", xterm, `(?m)^  web console \.\.\. +ok \(`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(stack.SafeDir(t), "state")
			out, _ := runLab(t, Options{Region: stack.Region, StateDir: state, Porthole: porthole, Console: "127.0.0.1:0", vendor: tc.vendor}, 60*time.Second)
			if !regexp.MustCompile(tc.want).MatchString(out.String()) {
				t.Errorf("the progress lines lack %s:\n%s", tc.want, out.String())
			}
			_, err := os.Stat(filepath.Join(state, "console_host_keys.json"))
			if written := err == nil; written != tc.hostKeys {
				t.Errorf("console_host_keys.json once the lab is up: %v, want it written: %v", err, tc.hostKeys)
			}
		})
	}
}
