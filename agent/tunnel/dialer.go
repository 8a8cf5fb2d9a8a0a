package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
)

// Dialer opens the local connection for a stream of a service. The destination
// engine calls it once per stream (V1/V2) or per connection (V3); what a service ID
// means is the caller's business (the agent hands SSH to its in-process server).
type Dialer interface {
	DialService(ctx context.Context, service string) (net.Conn, error)
}

// DialerFunc adapts a function to Dialer.
type DialerFunc func(ctx context.Context, service string) (net.Conn, error)

// DialService calls f.
func (f DialerFunc) DialService(ctx context.Context, service string) (net.Conn, error) {
	return f(ctx, service)
}

// ErrUnknownService is returned for a service with no target: nothing else is reachable.
var ErrUnknownService = errors.New("tunnel: no target for service")

// Targets maps service IDs to "host:port" or "unix:/path/to/socket". It is a Dialer
// that reaches those targets and nothing else.
type Targets map[string]string

// DialService dials the target of service.
func (t Targets) DialService(ctx context.Context, service string) (net.Conn, error) {
	return t.dialService(ctx, service, nil)
}

// dialService is DialService. connecting, when not nil, runs just before a
// TCP connect (tests: a stop that comes while the dial runs).
//
// A TCP dial whose context ends after the handshake (the agent stops, the
// stream is reset or superseded, the dial timeout) is closed by net's
// dialer, on loopback and a fast LAN after the target has accepted it: with
// a FIN, an accepted connection that ends cleanly with no byte in it, which
// a target that reads to the end (nc > file, an upload ended by the close)
// took for a complete, empty upload. So the socket is made with SO_LINGER 0,
// which turns that close into a reset (as link.cut wants for a connection
// that opened), and gets the default back once the dial has returned it.
func (t Targets) dialService(ctx context.Context, service string, connecting func(context.Context)) (net.Conn, error) {
	addr, ok := t[service]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, loggedName(service))
	}
	var d net.Dialer
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return d.DialContext(ctx, "unix", path)
	}
	d.ControlContext = func(ctx context.Context, _, _ string, rc syscall.RawConn) error {
		if err := rc.Control(lingerZero); err != nil {
			return err
		}
		if connecting != nil {
			connecting(ctx)
		}
		return nil
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(-1) // the default: link.closeConn chooses FIN or reset
	}
	return c, nil
}

// Validate checks every service name and target.
func (t Targets) Validate() error {
	for svc, addr := range t {
		if err := ValidateServiceID(svc); err != nil {
			return err
		}
		if err := ValidateTarget(addr); err != nil {
			return fmt.Errorf("service %s: %w", svc, err)
		}
	}
	return nil
}
