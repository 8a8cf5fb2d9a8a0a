package tunnel

import (
	"net/url"
	"os"

	"github.com/porthole-iot/porthole/agent/tunnel/internal/check"
)

// ProxyFromEnvironment returns the HTTPS proxy for the data-plane connection from
// https_proxy (which wins) or HTTPS_PROXY, honouring NO_PROXY/no_proxy (spec §2.7;
// NO_PROXY is porthole's addition). Unlike net/http's version it also proxies
// loopback hosts when told to, reads the environment on every call, and rejects
// schemes other than http and https. The proxy is reached with CONNECT; credentials
// in the URL are sent as Basic auth.
func ProxyFromEnvironment(target *url.URL) (*url.URL, error) {
	return check.ProxyFor(target, os.Getenv)
}

// ProxyURL returns a Config.Proxy that always uses u.
func ProxyURL(u *url.URL) func(*url.URL) (*url.URL, error) {
	return func(*url.URL) (*url.URL, error) { return u, nil }
}
