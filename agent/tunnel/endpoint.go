package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Mode is the side of the tunnel a client plays.
type Mode string

// The two modes of local-proxy-mode (spec §2.1).
const (
	ModeSource      Mode = "source"
	ModeDestination Mode = "destination"
)

// RegionEndpoint is the data-plane host of region (spec §2.4); China regions use
// amazonaws.com.cn.
func RegionEndpoint(region string) string {
	host := "data.tunneling.iot." + region + ".amazonaws.com"
	if strings.HasPrefix(region, "cn-") {
		host += ".cn"
	}
	return host
}

// ErrPlainWebSocket is in the error for a ws:// (http://) endpoint given without
// allowInsecure, so that a command can say which of its options allows one.
var ErrPlainWebSocket = errors.New("plain ws:// needs the explicit insecure option")

// ValidateEndpoint checks where a client would connect, as it would: an explicit
// data-plane endpoint (host[:port], or a wss:// URL; ws:// only with
// allowInsecure), or else a region name.
func ValidateEndpoint(endpoint, region string, allowInsecure bool) error {
	_, err := tunnelURL(endpoint, region, ModeDestination, allowInsecure)
	return err
}

// tunnelURL builds the WebSocket URL for a mode from an explicit endpoint or a region.
// endpoint is host[:port], or a wss:// (https://) URL; ws:// (http://) only when
// allowInsecure is set.
func tunnelURL(endpoint, region string, mode Mode, allowInsecure bool) (*url.URL, error) {
	if mode != ModeSource && mode != ModeDestination {
		return nil, fmt.Errorf("tunnel: mode %q, want source or destination", mode)
	}
	u := &url.URL{Scheme: "wss", Path: "/tunnel", RawQuery: "local-proxy-mode=" + string(mode)}
	switch {
	case endpoint != "" && region != "":
		// An explicit endpoint wins; the region then only documents where the tunnel is.
		fallthrough
	case endpoint != "":
		host := endpoint
		if i := strings.Index(endpoint, "://"); i >= 0 {
			p, err := url.Parse(endpoint)
			if err != nil {
				return nil, fmt.Errorf("tunnel: endpoint %q: %w", endpoint, err)
			}
			switch p.Scheme {
			case "wss", "https":
			case "ws", "http":
				if !allowInsecure {
					return nil, fmt.Errorf("tunnel: endpoint %q is not TLS; %w", endpoint, ErrPlainWebSocket)
				}
				u.Scheme = "ws"
			default:
				return nil, fmt.Errorf("tunnel: endpoint %q: scheme %q, want wss", endpoint, p.Scheme)
			}
			if p.Path != "" && p.Path != "/" || p.RawQuery != "" || p.User != nil {
				return nil, fmt.Errorf("tunnel: endpoint %q must not carry a path, query or credentials", endpoint)
			}
			host = p.Host
		}
		if len(host) > 253 || !isName(host, 1, 253, ".:[]-") {
			return nil, fmt.Errorf("tunnel: endpoint host %q is not a valid host[:port]", host)
		}
		if _, _, err := net.SplitHostPort(host); err != nil && strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
			// "::1:8443" cannot be told from an address without a port, and
			// was dialled as [::1:8443]:443.
			return nil, fmt.Errorf("tunnel: endpoint %q: an IPv6 address needs brackets, with the port after them: [2001:db8::1]:443", endpoint)
		}
		u.Host = strings.ToLower(host)
	case region != "":
		if !isName(region, 1, 64, "-") || strings.ToLower(region) != region {
			return nil, fmt.Errorf("tunnel: region %q is not a valid region name", region)
		}
		u.Host = RegionEndpoint(region)
	default:
		return nil, fmt.Errorf("tunnel: neither endpoint nor region given")
	}
	if _, port, err := net.SplitHostPort(u.Host); err == nil {
		// A port that cannot be dialled fails every attempt the same way.
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("tunnel: endpoint %q: port %q is not a number from 1 to 65535", endpoint, port)
		}
	} else {
		if u.Scheme == "ws" {
			u.Host = net.JoinHostPort(strings.Trim(u.Host, "[]"), "80")
		} else {
			u.Host = net.JoinHostPort(strings.Trim(u.Host, "[]"), "443")
		}
	}
	// The dial splits the host off again: brackets must enclose an IPv6
	// address and nothing else ("a]b", "x[y]:1", "[]" and "[0]:1" got this
	// far; "[0]" was dialled as 0.0.0.0, this machine, in a URL that does not
	// parse).
	if h, _, err := net.SplitHostPort(u.Host); err != nil || h == "" || strings.ContainsAny(h, "[]") ||
		strings.Contains(h, ":") && net.ParseIP(h) == nil || strings.HasPrefix(u.Host, "[") && !strings.Contains(h, ":") {
		return nil, fmt.Errorf("tunnel: endpoint %q is not a valid host[:port]", endpoint)
	}
	return u, nil
}
