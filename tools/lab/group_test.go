package lab

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// pidNamespaceEnv marks the run of the test binary that inPIDNamespace started.
const pidNamespaceEnv = "PORTHOLE_LAB_TEST_PID_NAMESPACE"

// inPIDNamespace runs the test t again in a child process of the test binary,
// in a pid namespace of its own, where the child (pid 1 there) may choose the
// pid of the next process it starts (/proc/sys/kernel/ns_last_pid) without
// taking one another program on this machine would get. It reports whether
// this is that child, which then runs the test's body.
func inPIDNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(pidNamespaceEnv) != "" {
		return true
	}
	hostenv.NeedRoot(t, "a pid namespace needs root")
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	// The parent's build of porthole, which it removes at its end.
	cmd.Env = append(os.Environ(), pidNamespaceEnv+"=1", "PORTHOLE_STACK_BIN="+stack.Build(t))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if errors.Is(err, syscall.EPERM) {
		t.Fatalf("child: %v: a pid namespace needs CAP_SYS_ADMIN, which this root lacks (a container's default)", err)
	}
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatal("the child did not run the test to its end")
	}
	return false
}

// TestStopLeavesTheAgentsReusedPIDAlone: the lab's stop signals the agent's
// process group, whose id is the agent's pid. Once the agent has exited and
// the lab has reaped it, that id may be another program's (pids wrap around),
// and a process group of that id another program's too (each job of a shell
// is one): the stop, long after, sent it SIGTERM. Here the pid is made to
// come round at once, in a pid namespace.
func TestStopLeavesTheAgentsReusedPIDAlone(t *testing.T) {
	if !inPIDNamespace(t) {
		return
	}
	state := filepath.Join(stack.SafeDir(t), "state")
	out, stop := runLab(t, Options{Region: stack.Region, StateDir: state, Porthole: stack.Build(t)}, 60*time.Second)
	agent := readLabJSON(t, state).AgentPID
	if err := syscall.Kill(agent, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out.Wait(t, regexp.MustCompile(`The agent exited`), 0, 10*time.Second)

	// A program that leads a process group of its own, with the agent's pid.
	if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(agent-1)), 0); err != nil {
		t.Fatal(err)
	}
	other := exec.Command("sleep", "60")
	other.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- other.Wait() }()
	defer func() {
		other.Process.Kill()
		<-ended
	}()
	if other.Process.Pid != agent {
		t.Fatalf("the other program got pid %d, not the agent's %d (a thread of this process took it meanwhile)", other.Process.Pid, agent)
	}

	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	select {
	case err := <-ended:
		ended <- err
		t.Errorf("the program that got the exited agent's pid ended (%v) when the lab stopped", err)
	case <-time.After(time.Second):
	}
}
