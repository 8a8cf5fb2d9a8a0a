//go:build !linux

package main

import (
	"io"
	"runtime"

	"github.com/porthole-iot/porthole/agent"
)

// On an operator's machine porthole is the source-mode proxy: the device
// agent, its SSH server and what they check are Linux code.

// usageNote ends `porthole -h`: which of its commands this build has.
const usageNote = "\nThis porthole, for " + runtime.GOOS + ", is the operator's: it has connect and version. " +
	"agent, check-config and keygen are the device's, in the Linux builds.\n"

func runAgent(args []string, stdout, stderr io.Writer) error { return linuxOnly("agent") }

func runCheckConfig(args []string, stdout, stderr io.Writer) error { return linuxOnly("check-config") }

func runKeygen(args []string, stdout, stderr io.Writer) error { return linuxOnly("keygen") }

func linuxOnly(cmd string) error {
	return agent.Usagef("the device agent runs on Linux; this porthole for %s is the operator's proxy: "+
		"porthole connect --region R --token-file F -L SSH=2222 (porthole -h lists the commands; %s needs a Linux build)",
		runtime.GOOS, cmd)
}
