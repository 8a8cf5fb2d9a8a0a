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

// ValidateServiceID checks a service name against the API's rule: 1–128 characters
// of [a-zA-Z0-9:_-] (spec §3.4).
func ValidateServiceID(s string) error {
	if !isName(s, 1, 128, ":_-") {
		return fmt.Errorf("tunnel: service id %q: want 1-128 characters of [a-zA-Z0-9:_-]", s)
	}
	return nil
}

// ValidateTarget checks a target: "host:port" with a numeric port, or "unix:/abs/path".
func ValidateTarget(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !strings.HasPrefix(path, "/") {
			return fmt.Errorf("tunnel: target %q: unix socket path must be absolute", addr)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("tunnel: target %q: want host:port or unix:/path", addr)
	}
	if host == "" {
		return fmt.Errorf("tunnel: target %q: empty host", addr)
	}
	if n, err := net.LookupPort("tcp", port); err != nil || n == 0 || strings.Trim(port, "0123456789") != "" {
		return fmt.Errorf("tunnel: target %q: bad port %q", addr, port)
	}
	return nil
}
