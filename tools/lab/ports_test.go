package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// takenPorts returns n loopback ports that are in use, listened on until the
// test ends.
func takenPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// TestPortsInUseNamedAtOnce: both ports the lab wants, taken, are named in one
// refusal with the way to choose others through make, before anything starts.
func TestPortsInUseNamedAtOnce(t *testing.T) {
	ports := takenPorts(t, 2)
	err := Run(context.Background(), Options{Region: stack.Region, StateDir: filepath.Join(stack.SafeDir(t), "state"), SSHPort: ports[0], HTTPPort: ports[1], Porthole: "/bin/true", Out: io.Discard})
	want := fmt.Sprintf("ports %d and %d are in use: choose others, e.g. --ssh-port %d --http-port %d (with make: make lab LABFLAGS=\"--ssh-port %[3]d --http-port %[4]d\"; 0 takes any free port)",
		ports[0], ports[1], ports[0]+1, ports[1]+1)
	if err == nil || err.Error() != want {
		t.Fatalf("Run with both ports taken = %v, want %q", err, want)
	}
}

// TestPortTakenWhileTheLabStarts: a port free at the lab's first check but
// taken before its source side listens (a second lab started at once) is
// refused as the first check refuses it, naming the flag and the way to choose
// another, not with the listener's bare "address already in use".
func TestPortTakenWhileTheLabStarts(t *testing.T) {
	porthole := stack.Build(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var taken net.Listener
	beforeSource = func() {
		if taken, err = net.Listen("tcp", ln.Addr().String()); err != nil {
			t.Error(err)
		}
	}
	defer func() {
		beforeSource = func() {}
		if taken != nil {
			taken.Close()
		}
	}()
	err = Run(context.Background(), Options{Region: stack.Region, StateDir: filepath.Join(stack.SafeDir(t), "state"), SSHPort: port, Porthole: porthole, Out: stack.NewLog()})
	want := fmt.Sprintf("port %d is in use: choose others, e.g. --ssh-port %d (with make: make lab LABFLAGS=\"--ssh-port %[2]d\"; 0 takes any free port); it was free when the lab started",
		port, port+1)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run with --ssh-port taken after the check = %v, want it to say %q", err, want)
	}
}

// TestConsolePortInUse: a --console port that is taken is named as the source
// side's ports are, with the way to choose another through make, and with them
// at once; it said only "choose another address with --console", after the
// broker and tunneld had started.
func TestConsolePortInUse(t *testing.T) {
	ports := takenPorts(t, 2)
	for _, tc := range []struct {
		name string
		opt  Options
		want string
	}{
		{"alone", Options{NoAgent: true, Console: fmt.Sprintf("127.0.0.1:%d", ports[0])},
			fmt.Sprintf("port %d is in use: choose others, e.g. --console 127.0.0.1:%d (with make: make lab LABFLAGS=\"--console 127.0.0.1:%[2]d\"; 0 takes any free port)",
				ports[0], ports[0]+1)},
		{"with the SSH port", Options{Porthole: "/bin/true", SSHPort: ports[1], Console: fmt.Sprintf("127.0.0.1:%d", ports[0])},
			fmt.Sprintf("ports %d and %d are in use: choose others, e.g. --ssh-port %d --console 127.0.0.1:%d (with make: make lab LABFLAGS=\"--ssh-port %[3]d --console 127.0.0.1:%[4]d\"; 0 takes any free port)",
				ports[1], ports[0], ports[1]+1, ports[0]+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opt.Region, tc.opt.StateDir, tc.opt.Out = stack.Region, filepath.Join(stack.SafeDir(t), "state"), io.Discard
			tc.opt.vendor = xterm // a console that runs, not one skipped for want of xterm.js
			// A lab that is not refused runs until ctx ends.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := Run(ctx, tc.opt); err == nil || err.Error() != tc.want {
				t.Fatalf("Run with --console %s taken = %v, want %q", tc.opt.Console, err, tc.want)
			}
		})
	}
}

// TestConsolePortSkippedWithoutXterm: in a build without xterm.js the console
// is skipped and its port never listened on, so a taken --console port does not
// refuse the lab's start; it did, naming a port the lab would not use.
func TestConsolePortSkippedWithoutXterm(t *testing.T) {
	port := takenPorts(t, 1)[0]
	noXterm := fstest.MapFS{"README.md": {Data: []byte("make console-assets")}}
	out, _ := runLab(t, Options{Region: stack.Region, StateDir: filepath.Join(stack.SafeDir(t), "state"), NoAgent: true,
		Console: fmt.Sprintf("127.0.0.1:%d", port), vendor: noXterm}, 60*time.Second)
	if !strings.Contains(out.String(), "skipped (xterm.js is not in this build)") {
		t.Errorf("the console step was not skipped:\n%s", out.String())
	}
}
