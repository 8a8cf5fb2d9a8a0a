package tunnel

import (
	"context"
	"net"
)

// DialServiceConnecting is t.DialService with connecting run just before the
// TCP connect.
func DialServiceConnecting(ctx context.Context, t Targets, service string, connecting func(context.Context)) (net.Conn, error) {
	return t.dialService(ctx, service, connecting)
}
