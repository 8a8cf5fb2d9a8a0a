//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/porthole-iot/porthole/sshd"
)

// The retries of an ssh.listen address that cannot be bound at start begin
// sshListenRetryFirst after the failure and double up to sshListenRetryMax
// (vars for tests). No jitter: the address is the device's own, and no peer
// sees a crowd of devices retrying at once.
var (
	sshListenRetryFirst = time.Second
	sshListenRetryMax   = time.Minute
	sshListenLookup     = 5 * time.Second // the bind at start: a host name's lookup
)

// serveSSHListen serves SSH on ln, the ssh.listen address bound at start, until
// the SSH server is shut down. If it could not be bound (ln is nil, bindErr
// says why), it logs an error and binds it again in the background until it
// succeeds or ctx ends: another daemon holding the port (the router's dropbear
// on :22), or an address not yet up at boot, once stopped the whole agent
// (exit 2, restarted by the init system for as long as the port stayed taken),
// and so the MQTT listener and every tunnel, the only way left to reach the
// device and mend its config.
func (a *Agent) serveSSHListen(ctx context.Context, ln net.Listener, bindErr error) {
	addr := a.cfg.SSH.Listen
	if ln == nil {
		args := []any{"listen", addr, "error", bindErr}
		if h := lowPortHint(addr); h != "" && errors.Is(bindErr, fs.ErrPermission) {
			args = append(args, "hint", h) // once: the retries say nothing new
		}
		a.log.Error("ssh.listen: cannot listen; serving tunnels meanwhile, and trying again in the background", args...)
		if ln = a.bindSSHListen(ctx); ln == nil {
			return // stopped
		}
	}
	if err := a.ssh.Serve(ln); !errors.Is(err, sshd.ErrServerClosed) {
		a.log.Error("ssh.listen: no longer accepting SSH connections", "listen", addr, "error", err)
	}
}

// bindSSHListen binds ssh.listen with a backoff until it succeeds, and returns
// the listener; nil if ctx ends first.
func (a *Agent) bindSSHListen(ctx context.Context) net.Listener {
	addr := a.cfg.SSH.Listen
	delay := sshListenRetryFirst
	t := time.NewTimer(delay)
	defer t.Stop()
	for attempt := 2; ; attempt++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// ctx ends a lookup of a host name that hangs (no DNS at boot):
		// the agent's stop waits for this loop.
		ln, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
		if err == nil {
			a.log.Info("ssh.listen: listening now", "listen", addr, "attempts", attempt)
			return ln
		}
		delay = min(2*delay, sshListenRetryMax)
		a.log.Debug("ssh.listen: still cannot listen", "listen", addr, "error", err, "retry_in", delay)
		t.Reset(delay)
	}
}

// lowPortHint says why ssh.listen cannot be bound by this process when its
// port is below net.ipv4.ip_unprivileged_port_start (1024 unless set), which
// only root or a process with CAP_NET_BIND_SERVICE may bind; "" otherwise
// (a port given as a service name too). An agent run as its own user got
// "bind: permission denied", retried for ever, and no word of why.
func lowPortHint(addr string) string {
	if addr == "" {
		return ""
	}
	return portHint(addr, sshd.UnprivilegedPortStart(), mayBindLow())
}

// portHint is lowPortHint's text for ports below start, for a process that
// may bind them or not.
func portHint(addr string, start int, mayBind bool) string {
	_, p, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(p)
	if err != nil || port == 0 || port >= start || mayBind {
		return ""
	}
	return fmt.Sprintf("ports below %d need root or CAP_NET_BIND_SERVICE (net.ipv4.ip_unprivileged_port_start), which the agent (uid %d) does not have", start, os.Geteuid())
}

// mayBindLow reports whether this process has CAP_NET_BIND_SERVICE (bit 10)
// in its effective set: root has it, unless a container took it away, and a
// user's service may have it (systemd's AmbientCapabilities=).
func mayBindLow() bool {
	b, _ := os.ReadFile("/proc/self/status")
	_, v, ok := strings.Cut(string(b), "\nCapEff:")
	if !ok {
		return os.Geteuid() == 0
	}
	v, _, _ = strings.Cut(strings.TrimSpace(v), "\n")
	caps, err := strconv.ParseUint(v, 16, 64)
	return err == nil && caps&(1<<10) != 0
}
