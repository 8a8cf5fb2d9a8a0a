//go:build linux

package agent

import (
	"context"
	"errors"
	"net"
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
		a.log.Error("ssh.listen: cannot listen; serving tunnels meanwhile, and trying again in the background",
			"listen", addr, "error", bindErr)
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
