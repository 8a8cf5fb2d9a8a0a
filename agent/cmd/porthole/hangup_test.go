package main

import (
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConnectHangup: a hangup is how `porthole connect` usually ends when it
// is not stopped by hand: the terminal of a `porthole connect ... &` (as the
// README runs it) is closed, or ssh ends its ProxyCommand. It killed porthole
// connect outright: the device never heard that the streams were gone (the
// service does not tell it when a side leaves, spec §3.8), so the login's
// commands kept running on the device, and the token's lock file stayed.
// It must end as Ctrl-C does: streams reset, exit 0.
func TestConnectHangup(t *testing.T) {
	srv, tun := echoTunnel(t)
	cmd, lines := childPorthole(t, "connect", "--endpoint", srv.URL, "--allow-insecure-websocket",
		"-L", "SSH=127.0.0.1:0", "--token-file", writeToken(t, tun.SourceToken))
	var logged []string
	next := func(what string, re *regexp.Regexp) []string {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("porthole connect ended before %s:\n%s", what, strings.Join(logged, "\n"))
				}
				logged = append(logged, l)
				if m := re.FindStringSubmatch(l); m != nil {
					return m
				}
			case <-timeout:
				t.Fatalf("no %s in 10 s:\n%s", what, strings.Join(logged, "\n"))
			}
		}
	}
	addr := next("listening line", regexp.MustCompile(`msg=listening .*addr=(\S+)`))[1]
	next("connection to the tunnel", regexp.MustCompile(`msg="tunnel services"`))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := c.Read(b); err != nil || string(b) != "ping" {
		t.Fatalf("echo %q, %v", b, err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	for l := range lines {
		logged = append(logged, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("porthole connect after SIGHUP: %v, want exit 0", err)
	}
	if all := strings.Join(logged, "\n"); !strings.Contains(all, "reset the open streams") {
		t.Errorf("the device was not told the streams are gone:\n%s", all)
	}
}
