package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// ProxyFromEnvironment returns the HTTPS proxy for the data-plane connection from
// https_proxy (which wins) or HTTPS_PROXY, honouring NO_PROXY/no_proxy (spec §2.7;
// NO_PROXY is porthole's addition). Unlike net/http's version it also proxies
// loopback hosts when told to, reads the environment on every call, and rejects
// schemes other than http and https. The proxy is reached with CONNECT; credentials
// in the URL are sent as Basic auth.
func ProxyFromEnvironment(target *url.URL) (*url.URL, error) {
	return proxyFor(target, os.Getenv)
}

// ProxyURL returns a Config.Proxy that always uses u.
func ProxyURL(u *url.URL) func(*url.URL) (*url.URL, error) {
	return func(*url.URL) (*url.URL, error) { return u, nil }
}

// EnvironmentProxy is the proxy ProxyFromEnvironment gives the tunnel at
// endpoint or region: nil when there is none or NO_PROXY bypasses it, and an
// error naming the variable when it does not parse, so that a caller can refuse
// it at start instead of failing every dial. An endpoint that does not validate
// gives nil, nil (ValidateEndpoint's to report).
func EnvironmentProxy(endpoint, region string, allowInsecure bool) (*url.URL, error) {
	u, err := tunnelURL(endpoint, region, ModeSource, allowInsecure)
	if err != nil {
		return nil, nil
	}
	return proxyFor(u, os.Getenv)
}

// PlainEndpoint reports whether a data-plane endpoint is reached without TLS
// (ws:// or http://, in any case), as the dial decides.
func PlainEndpoint(endpoint string) bool {
	u, err := url.Parse(endpoint)
	return err == nil && (u.Scheme == "ws" || u.Scheme == "http")
}

func proxyFor(target *url.URL, getenv func(string) string) (*url.URL, error) {
	name, raw := "https_proxy", getenv("https_proxy")
	if raw == "" {
		name, raw = "HTTPS_PROXY", getenv("HTTPS_PROXY")
	}
	if raw == "" {
		return nil, nil
	}
	noProxy := getenv("no_proxy")
	if noProxy == "" {
		noProxy = getenv("NO_PROXY")
	}
	if bypassProxy(target.Hostname(), target.Port(), noProxy) {
		return nil, nil
	}
	u, err := ParseProxyURL(raw)
	if err != nil {
		// Named, as the variable holds it: the error is the same at every dial.
		return nil, fmt.Errorf("tunnel: %s: %s", name, strings.TrimPrefix(err.Error(), "tunnel: "))
	}
	return u, nil
}

// ParseProxyURL parses an HTTPS proxy setting: http[s]://[user:pass@]host[:port];
// a missing scheme means http and a missing port 3128 (as localproxy). Errors
// never quote the URL, which may hold a password: a # / or ? in a password
// that is not percent-encoded ends the user info early, and what url.Parse
// then takes for a port or a scheme is part of the password or user name.
func ParseProxyURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		if _, rest, _ := strings.Cut(raw, "://"); !strings.ContainsAny(raw, "@[") && strings.Count(rest, ":") >= 2 {
			// No user info, so nothing secret: "fd00::1:3128" cannot be
			// told from an address without a port.
			return nil, errors.New("tunnel: proxy URL: an IPv6 address needs brackets, with the port after them: http://[2001:db8::1]:3128")
		}
		return nil, errProxyURLSyntax // url.Parse's errors quote the URL or a part of it
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		// In "user:pa://ss@host" url.Parse takes the user name for the scheme.
		if before, _, _ := strings.Cut(raw, "://"); !strings.EqualFold(before, u.Scheme) {
			return nil, errProxyURLSyntax
		}
		return nil, fmt.Errorf("tunnel: proxy URL scheme %q, want http or https", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("tunnel: proxy URL has no host")
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "3128")
	} else if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return nil, errors.New("tunnel: proxy URL port: want 1-65535") // the "port" may be a password
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("tunnel: proxy URL must be only http[s]://[user:password@]host[:port]")
	}
	return u, nil
}

// errProxyURLSyntax is ParseProxyURL's error for a URL it cannot take apart.
var errProxyURLSyntax = errors.New("tunnel: proxy URL does not parse (percent-encode special characters in the user name and password)")

// bypassProxy applies a NO_PROXY list: "*", host names (a leading dot, "*." or
// neither: the name and its subdomains), IP addresses, CIDR ranges, each
// optionally with :port.
func bypassProxy(host, port, noProxy string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	ip := net.ParseIP(host)
	for _, entry := range strings.Split(noProxy, ",") {
		entry = strings.ToLower(strings.TrimSpace(entry))
		if entry == "" {
			continue
		}
		if entry == "*" {
			return true
		}
		if _, cidr, err := net.ParseCIDR(entry); err == nil {
			if ip != nil && cidr.Contains(ip) {
				return true
			}
			continue
		}
		if h, p, err := net.SplitHostPort(entry); err == nil {
			if p != port {
				continue
			}
			entry = h
		}
		entry = strings.Trim(entry, "[]")
		if eip := net.ParseIP(entry); eip != nil {
			if ip != nil && eip.Equal(ip) {
				return true
			}
			continue
		}
		// "*.example.com" is ".example.com", as in Go's net/http (httpproxy).
		if strings.HasPrefix(entry, "*.") {
			entry = entry[1:]
		}
		entry = strings.TrimPrefix(strings.TrimSuffix(entry, "."), ".")
		if host == entry || strings.HasSuffix(host, "."+entry) {
			return true
		}
	}
	return false
}
