package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// TestNoAgentWritesAgentConfig runs the lab with --no-agent ("for an agent you
// start yourself"): it writes its agent's config in the state directory, names
// it in lab.json, and prints the command that runs an agent on it; porthole
// check-config passes it without a warning, and an agent started with the
// printed command subscribes to its notify topic on the lab's broker. The lab
// made the device's certificate and key, and listed them, but wrote no config
// and printed no command.
func TestNoAgentWritesAgentConfig(t *testing.T) {
	porthole := stack.Build(t)
	state := filepath.Join(stack.SafeDir(t), "state")
	out, _ := runLab(t, Options{Region: stack.Region, StateDir: state, NoAgent: true, Porthole: porthole}, 20*time.Second)
	info := readLabJSON(t, state)
	if want := filepath.Join(state, "device", "porthole.toml"); info.AgentConfig != want {
		t.Fatalf("lab.json agent_config = %q, want %s", info.AgentConfig, want)
	}
	if fi, err := os.Stat(info.AgentConfig); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the agent config: %v (%v), want a 0600 file", fi, err)
	}
	if want := porthole + " agent -c " + info.AgentConfig; !strings.HasSuffix(info.AgentUsage, want) {
		t.Errorf("lab.json agent_command = %q, want it to end in %q", info.AgentUsage, want)
	}
	if !strings.Contains(out.String(), "\n  "+info.AgentUsage+"\n") {
		t.Errorf("the printed output lacks the agent command %q:\n%s", info.AgentUsage, out)
	}

	var stdout, stderr bytes.Buffer
	check := exec.Command(porthole, "check-config", "-c", info.AgentConfig)
	check.Stdout, check.Stderr = &stdout, &stderr
	if err := check.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("porthole check-config on the lab's agent config: %v\n%s%s", err, &stdout, &stderr)
	}

	// The printed command, in a shell as an operator pastes it, run from
	// another directory.
	log := stack.NewLog()
	agent := exec.Command("sh", "-c", "exec "+info.AgentUsage)
	agent.Dir = "/"
	agent.Stdout, agent.Stderr = log, log
	agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		agent.Process.Signal(syscall.SIGTERM)
		if err := agent.Wait(); err != nil {
			t.Errorf("the agent after SIGTERM: %v\n%s", err, log)
		}
	}()
	log.Wait(t, stack.SubscribedRE(), 0, 30*time.Second)
}

// TestLabStopEndsTheAgentBehindAWrapper: with --porthole naming a shell script
// that runs the agent without exec (a wrapper that sets its environment),
// stopping the lab signalled the script alone, and the agent was left
// running under init.
func TestLabStopEndsTheAgentBehindAWrapper(t *testing.T) {
	wrapper, state, agents := wrappedAgent(t)
	_, stop := runLab(t, Options{Region: stack.Region, StateDir: state, Porthole: wrapper, Console: ""}, 60*time.Second)
	if len(agents()) != 1 {
		t.Fatalf("agents running on the lab's config: %v, want one", agents())
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(agents()) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the lab stopped, the agent it started through a wrapper still runs (pids %v)", agents())
		}
	}
}

// TestWrapperKilledAloneTakesItsAgent: a --porthole wrapper script killed
// alone (its pid is the agent_pid of lab.json) ends the agent it ran too, as
// the lab says the agent exited: the lab's stop, later, no longer signals the
// group of a leader it has reaped (its id may be another program's by then),
// and the agent would have outlived the lab.
func TestWrapperKilledAloneTakesItsAgent(t *testing.T) {
	wrapper, state, agents := wrappedAgent(t)
	out, _ := runLab(t, Options{Region: stack.Region, StateDir: state, Porthole: wrapper, Console: ""}, 60*time.Second)
	if len(agents()) != 1 {
		t.Fatalf("agents running on the lab's config: %v, want one", agents())
	}
	if err := syscall.Kill(readLabJSON(t, state).AgentPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out.Wait(t, regexp.MustCompile(`The agent exited`), 0, 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); len(agents()) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after its wrapper was killed, the agent still runs (pids %v)", agents())
		}
	}
}

// wrappedAgent writes a --porthole wrapper script that runs the agent without
// exec (a wrapper that sets its environment), and returns it with the state
// directory of a lab beside it and what lists the agents running on that
// lab's config (agentsOn).
func wrappedAgent(t *testing.T) (wrapper, state string, agents func() []int) {
	t.Helper()
	porthole := stack.Build(t)
	dir := stack.SafeDir(t)
	wrapper = filepath.Join(dir, "porthole-wrapper")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\n"+shellArg(porthole)+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	state = filepath.Join(dir, "state")
	return wrapper, state, agentsOn(t, porthole, state)
}

// agentsOn returns a function that lists the agents of the binary porthole
// running on the config of the lab in state; the test kills those left at its
// end.
func agentsOn(t *testing.T, porthole, state string) func() []int {
	config := filepath.Join(state, "device", "porthole.toml")
	agents := func() []int {
		var pids []int
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, _ := os.ReadFile(p)
			args := strings.Split(string(b), "\x00")
			if len(args) > 3 && args[0] == porthole && args[1] == "agent" && args[3] == config {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				pids = append(pids, pid)
			}
		}
		return pids
	}
	t.Cleanup(func() {
		for _, pid := range agents() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return agents
}

// TestNoAgentRefusesAnUnsafeState: the config --no-agent writes names the
// authorized_keys in the state directory, which the agent's SSH server ignores
// below a directory others can write (as OpenSSH does). The lab refuses such a
// --state before making anything, as it does when it runs the agent itself.
func TestNoAgentRefusesAnUnsafeState(t *testing.T) {
	open := filepath.Join(stack.SafeDir(t), "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o1777); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(open, "state")
	err := Run(context.Background(), Options{Region: stack.Region, StateDir: state, NoAgent: true, Out: stack.NewLog()})
	if err == nil || !strings.Contains(err.Error(), "which others can write") {
		t.Fatalf("Run --no-agent with --state %s: %v, want a refusal naming %s", state, err, open)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the refused state directory: %v, want it not made", err)
	}
}

// TestFrozenAgentStopSaysSo: a lab whose agent does not end at SIGTERM (here
// stopped with SIGSTOP, as a frozen one) says what its stop waits for, kills
// the agent and ends, instead of a silent wait.
func TestFrozenAgentStopSaysSo(t *testing.T) {
	porthole := stack.Build(t)
	state := filepath.Join(stack.SafeDir(t), "state")
	out, stop := runLab(t, Options{Region: stack.Region, StateDir: state, Porthole: porthole}, 60*time.Second)
	info := readLabJSON(t, state)
	if info.AgentPID == 0 {
		t.Fatal("lab.json names no agent pid")
	}
	if err := syscall.Kill(info.AgentPID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	from := out.Len()
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	want := fmt.Sprintf("the agent (pid %d) has not stopped %v after SIGTERM; killing it in %v\n", info.AgentPID, agentStopQuiet, agentStopKill-agentStopQuiet)
	if got := out.String()[from:]; !strings.Contains(got, want) {
		t.Errorf("the lab's stop with its agent frozen wrote\n%s\nwant it to say %q", got, want)
	}
	if err := syscall.Kill(info.AgentPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the frozen agent after the lab's stop: %v, want it gone", err)
	}
}
