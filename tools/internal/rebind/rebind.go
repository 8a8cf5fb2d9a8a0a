// Package rebind tells a request made to a local server by its own name from
// one sent by a web page whose DNS name was rebound to the server's address.
// Browsers let such a page send any request to the server and read its answers
// (they are same-origin for it), but the Host header still carries the page's
// name.
package rebind

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// LocalHost reports whether r's Host header names the address r came in on (the
// listen address, or the interface's for a wildcard one) or a loopback name
// (localhost, 127.0.0.1, [::1]), with the port it came in on. Any other name may
// be a page that rebound its DNS name to this address. A request that did not
// come through an http.Server (no local address in its context) is not local.
func LocalHost(r *http.Request) bool {
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if la == nil {
		return false
	}
	local, err := netip.ParseAddrPort(la.String())
	if err != nil {
		return false
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil { // no port: the scheme's
		host, port = strings.TrimSuffix(strings.TrimPrefix(r.Host, "["), "]"), "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	if port != fmt.Sprint(local.Port()) {
		return false
	}
	// ASCII only: EqualFold alone takes "localhoſt" (U+017F folds to s).
	if len(host) == len("localhost") && strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return false
	}
	ip = ip.Unmap()
	return ip == local.Addr().Unmap() || ip == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || ip == netip.IPv6Loopback()
}
