package lab

import (
	"errors"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// group is a child process the lab started as the leader of a process group
// of its own, which the lab signals as a whole: the agent (with whatever a
// --porthole wrapper script runs), or a board's QEMU.
//
// The group's id is the leader's pid. Once the leader is reaped, that pid is
// free, and after a wrap-around may be another program's, leading a group of
// its own (each job of a shell does): a signal to the group then would reach
// that program. So the lab signals the group only while its leader is not
// reaped, and waits for the leader's exit without reaping it; it stops
// signalling, under mu, the lock signal takes, before it reaps it.
type group struct {
	cmd *exec.Cmd
	// exited is closed once the leader has exited and been reaped; cmd's
	// ProcessState then says how it ended.
	exited chan struct{}

	mu     sync.Mutex
	reaped bool // the leader is reaped, or about to be: signal sends nothing
}

// startGroup starts cmd as the leader of a process group of its own.
func startGroup(cmd *exec.Cmd) (*group, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &group{cmd: cmd, exited: make(chan struct{})}
	go g.wait()
	return g, nil
}

// wait reaps the leader once it has exited, and then closes g.exited.
func (g *group) wait() {
	defer close(g.exited)
	pid := g.cmd.Process.Pid
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
	for errors.Is(err, unix.EINTR) {
		err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
	}
	if err != nil {
		// Not seen to happen (the leader is this process's child): reaped
		// without the wait that keeps its pid, and signalled no more.
		g.cmd.Wait()
		g.mu.Lock()
		g.reaped = true
		g.mu.Unlock()
		return
	}
	g.mu.Lock()
	// What is left of the group goes with its leader, while the group is
	// still surely the lab's: the agent behind a --porthole wrapper that was
	// killed alone would otherwise outlive the lab, which then could no longer
	// tell its group from another that took the id.
	syscall.Kill(-pid, syscall.SIGTERM)
	g.reaped = true // signalled no more: the Wait below frees the id
	g.mu.Unlock()
	g.cmd.Wait()
}

// signal sends sig to the group, unless its leader has been reaped.
func (g *group) signal(sig syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.reaped {
		syscall.Kill(-g.cmd.Process.Pid, sig)
	}
}
