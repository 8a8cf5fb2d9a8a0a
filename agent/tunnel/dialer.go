package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
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
	addr, ok := t[service]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	var d net.Dialer
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return d.DialContext(ctx, "unix", path)
	}
	return d.DialContext(ctx, "tcp", addr)
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
