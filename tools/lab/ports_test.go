package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// TestPortsInUseNamedAtOnce: both ports the lab wants, taken, are named in one
// refusal with the way to choose others through make, before anything starts.
func TestPortsInUseNamedAtOnce(t *testing.T) {
	var ports []int
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
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
