package console

import (
	"fmt"
	"net"
)

// NotLoopbackError is CheckLoopback's answer for an address beyond loopback.
type NotLoopbackError struct {
	Addr string // the listen address, as given
}

func (e *NotLoopbackError) Error() string {
	return e.Addr + " is not loopback, and the console would serve plain HTTP there: " +
		"anyone on the network could read its access token and terminals"
}

// CheckLoopback reports whether addr, a listen address (host:port), is on
// loopback, where a console without Config.TLS may serve: it serves plain HTTP,
// its URL holds the access token, and its terminals are logins to devices (the
// lab's, as root with the lab's key). Every interface (":8088", "0.0.0.0:8088")
// is beyond loopback. It is a *NotLoopbackError for an address beyond loopback,
// and net's error, after the address, for one that is not host:port with a port
// net.Listen takes (0-65535, or a service name) or that does not resolve: found
// before the lab starts its broker and tunneld, where net.Listen found it only
// after them.
func CheckLoopback(addr string) error {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	if !a.IP.IsLoopback() {
		return &NotLoopbackError{Addr: addr}
	}
	return nil
}
