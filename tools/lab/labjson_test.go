package lab

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// TestLabJSONCommandsRunAnywhere: lab.json is "every endpoint, port and file
// for scripts" (README): its command lines name the CA (and, with an agent, the
// key and known_hosts) by absolute paths, so that a script runs them from any
// directory.
func TestLabJSONCommandsRunAnywhere(t *testing.T) {
	dir := stack.SafeDir(t)
	t.Chdir(dir)
	_, stop := runLab(t, Options{Region: stack.Region, StateDir: "state", NoAgent: true, SSHPort: 0}, 20*time.Second)
	info := readLabJSON(t, filepath.Join(dir, "state"))
	for _, c := range []struct{ field, cmd, flag string }{
		{"aws_command", info.AWSCommand, "--ca-bundle"},
		{"connect_command", info.ConnectUsage, "--ca-file"},
	} {
		m := regexp.MustCompile(c.flag + ` ('[^']*'|\S+)`).FindStringSubmatch(c.cmd)
		if m == nil {
			t.Fatalf("%s has no %s: %s", c.field, c.flag, c.cmd)
		}
		sh := exec.Command("sh", "-c", "test -r "+m[1])
		sh.Dir = "/" // a script elsewhere
		if err := sh.Run(); err != nil {
			t.Errorf("lab.json %s, run from another directory: %s %s is not there (%v)", c.field, c.flag, m[1], err)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}
