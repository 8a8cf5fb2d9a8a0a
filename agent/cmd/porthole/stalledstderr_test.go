package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestAgentFailureExitsWithStalledStderr: the running agent's log goes through
// logWriter, so a log output that takes nothing (a serial console paused with
// Ctrl-S or held by flow control, a supervisor that stopped draining the pipe,
// a stalled journald) does not stop it. But an agent that fails (exit 2: the
// MQTT files on storage not mounted yet, data_dir held by another agent) prints
// its last error with a plain write to stderr in run, after logWriter's close:
// it blocks there for as long as the output stays stalled, and the init system,
// waiting for the exit to respawn it, never does. Here stderr is a pipe already
// full that nobody reads.
func TestAgentFailureExitsWithStalledStderr(t *testing.T) {
	dir := t.TempDir()
	dev := writeDevice(t, dir)
	b, err := os.ReadFile(dev.path)
	if err != nil {
		t.Fatal(err)
	}
	path := dev.path // its MQTT key on storage not mounted yet: exit 2
	os.WriteFile(path, bytes.Replace(b, []byte(`"`+dev.key+`"`), []byte(`"`+filepath.Join(dir, "persist", "device.pem.key")+`"`), 1), 0o600)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd := int(w.Fd()) // Fd puts it in blocking mode: once
	syscall.SetNonblock(fd, true)
	for {
		if _, err := syscall.Write(fd, make([]byte, 4096)); err != nil {
			break // full
		}
	}
	syscall.SetNonblock(fd, false)
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "agent", "-c", path)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitRuntime {
			t.Errorf("agent: %v, want exit %d", err, exitRuntime)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Signal(syscall.SIGQUIT)
		go func() { time.Sleep(3 * time.Second); cmd.Process.Kill() }()
		b := make([]byte, 1<<20)
		var all []byte
		r.SetReadDeadline(time.Now().Add(4 * time.Second))
		for {
			n, err := r.Read(b)
			all = append(all, b[:n]...)
			if err != nil {
				break
			}
		}
		<-exited
		t.Errorf("agent with MQTT files not there yet and its stderr stalled has not exited (2) in 10 s: blocked writing its last error; its goroutines:\n%s", bytes.TrimLeft(all, "\x00"))
	}
}
