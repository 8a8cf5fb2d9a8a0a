// Package check holds what the agent's config check runs at every start
// (agent.Check, Warnings and New): the syntax of service ids, targets and
// names, the data-plane endpoint, the proxy from the environment and the
// tunnel's CA files. Package tunnel exports them under its own names
// (ValidateServiceID, ValidateEndpoint, ...), and its dial uses them too.
//
// They are a package of their own because of where the linker puts them: it
// lays out a package's code after the code of the packages it imports, and
// on a device the kernel maps the binary's code in 64 KiB windows around
// each page the agent runs (docs/size.md, "Memory on the QEMU boards"). Of
// package tunnel an idle agent ran only these checks and its init; the rest
// runs with a tunnel open. In tunnel's first file they ended 1.2 KB before a
// window boundary (336 B built with Go 1.26.10), so that a little more code
// in agent/notify or in any package laid out before tunnel would have cost the
// idle agent a window, 64 KiB. Laid out before tunnel's other imports, and
// with tunnel's init gone (tunnel/check.go), the last code an idle agent runs
// there is protobuf's init, 7.7 KB before the boundary (make idle-layout
// gives the margin). Within this file, the code that runs at every start
// comes first, before what runs only with some settings.
package check

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/porthole-iot/porthole/agent/internal/syntax"
)

// ServiceID checks a service name against the API's rule: 1–128 characters
// of [a-zA-Z0-9:_-] (spec §3.4).
func ServiceID(s string) error {
	if !syntax.Name(s, 1, 128, ":_-") {
		return invalid("service id ", s, ": want 1-128 characters of [a-zA-Z0-9:_-]")
	}
	return nil
}

// RegionEndpoint is the data-plane host of region (spec §2.4); China regions use
// amazonaws.com.cn.
func RegionEndpoint(region string) string {
	host := "data.tunneling.iot." + region + ".amazonaws.com"
	if strings.HasPrefix(region, "cn-") {
		host += ".cn"
	}
	return host
}

// PlainWebSocketError is in the error for a ws:// (http://) endpoint given
// without allowInsecure, so that a command can say which of its options
// allows one (errors.Is with tunnel.ErrPlainWebSocket, which is one). A type
// of no size, not a variable: tunnel's copy of a variable would be set by code
// run at start, and this one is set in the binary's data.
type PlainWebSocketError struct{}

func (PlainWebSocketError) Error() string { return "plain ws:// needs the explicit insecure option" }

// Endpoint checks where a client would connect, as it would: an explicit
// data-plane endpoint (host[:port], or a wss:// URL; ws:// only with
// allowInsecure), or else a region name.
func Endpoint(endpoint, region string, allowInsecure bool) error {
	_, err := URL(endpoint, region, "destination", allowInsecure)
	return err
}

// URL builds the WebSocket URL for a mode from an explicit endpoint or a region.
// endpoint is host[:port], or a wss:// (https://) URL; ws:// (http://) only when
// allowInsecure is set.
func URL(endpoint, region, mode string, allowInsecure bool) (*url.URL, error) {
	if mode != "source" && mode != "destination" {
		return nil, invalid("mode ", mode, ", want source or destination")
	}
	u := &url.URL{Scheme: "wss", Path: "/tunnel", RawQuery: "local-proxy-mode=" + mode}
	switch {
	case endpoint != "" && region != "":
		// An explicit endpoint wins; the region then only documents where the tunnel is.
		fallthrough
	case endpoint != "":
		if strings.Contains(endpoint, "@") {
			// Not quoted: what comes before the @ is a password, as often as
			// not (a proxy's URL given as the endpoint).
			return nil, errors.New("tunnel: endpoint must not carry a user name or password (an @); a proxy is given apart from it, as https_proxy")
		}
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
					return nil, fmt.Errorf("tunnel: endpoint %q is not TLS; %w", endpoint, PlainWebSocketError{})
				}
				u.Scheme = "ws"
			default:
				return nil, fmt.Errorf("tunnel: endpoint %q: scheme %q, want wss", endpoint, p.Scheme)
			}
			if p.Path != "" && p.Path != "/" || p.RawQuery != "" {
				return nil, invalid("endpoint ", endpoint, " must not carry a path or query")
			}
			host = p.Host
		}
		zone := ""
		if i, j := strings.IndexByte(host, '%'), strings.IndexByte(host, ']'); strings.HasPrefix(host, "[") && 0 < i && i < j {
			// A link-local address's zone ("[fe80::1%br-lan]:443", as
			// mqtt.endpoint takes it) says which link to dial: kept as
			// written, an interface's name or number.
			if _, err := netip.ParseAddr(host[1:j]); err == nil && syntax.Name(host[i+1:j], 1, 15, "._-") {
				host, zone = host[:i]+host[j:], host[i:j]
			}
		}
		if len(host) > 253 || !syntax.Name(host, 1, 253, ".:[]-") {
			return nil, invalid("endpoint host ", host, " is not a valid host[:port]")
		}
		if _, _, err := net.SplitHostPort(host); err != nil && strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
			// "::1:8443" cannot be told from an address without a port, and
			// was dialled as [::1:8443]:443.
			return nil, invalid("endpoint ", endpoint, ": an IPv6 address needs brackets, with the port after them: [2001:db8::1]:443")
		}
		u.Host = strings.ToLower(host)
		if zone != "" {
			i := strings.IndexByte(u.Host, ']')
			u.Host = u.Host[:i] + zone + u.Host[i:]
		}
	case region != "":
		if !syntax.Name(region, 1, 64, "-") || strings.ToLower(region) != region {
			return nil, invalid("region ", region, " is not a valid region name")
		}
		u.Host = RegionEndpoint(region)
	default:
		return nil, errors.New("tunnel: neither endpoint nor region given")
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
	h, _, err := net.SplitHostPort(u.Host)
	if _, aerr := netip.ParseAddr(h); err != nil || h == "" || strings.ContainsAny(h, "[]") ||
		strings.Contains(h, ":") && aerr != nil || strings.HasPrefix(u.Host, "[") && !strings.Contains(h, ":") {
		return nil, invalid("endpoint ", endpoint, " is not a valid host[:port]")
	}
	return u, nil
}

// EnvironmentProxy is the proxy the tunnel's ProxyFromEnvironment gives at
// endpoint or region: nil when there is none or NO_PROXY bypasses it, and an
// error naming the variable when it does not parse, so that a caller can refuse
// it at start instead of failing every dial. An endpoint that does not validate
// gives nil, nil (Endpoint's to report).
func EnvironmentProxy(endpoint, region string, allowInsecure bool) (*url.URL, error) {
	u, err := URL(endpoint, region, "source", allowInsecure)
	if err != nil {
		return nil, nil
	}
	return ProxyFor(u, os.Getenv)
}

func ProxyFor(target *url.URL, getenv func(string) string) (*url.URL, error) {
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
	if BypassProxy(target.Hostname(), target.Port(), noProxy) {
		return nil, nil
	}
	u, err := ProxyURL(raw)
	if err != nil {
		// Named, as the variable holds it: the error is the same at every dial.
		return nil, errors.New("tunnel: " + name + ": " + strings.TrimPrefix(err.Error(), "tunnel: "))
	}
	return u, nil
}

// PlainEndpoint reports whether a data-plane endpoint is reached without TLS
// (ws:// or http://, in any case), as the dial decides.
func PlainEndpoint(endpoint string) bool {
	u, err := url.Parse(endpoint)
	return err == nil && (u.Scheme == "ws" || u.Scheme == "http")
}

// Target checks a target: "host:port" with a numeric port, or "unix:/abs/path".
// Its errors all start with "tunnel: target ": the agent's config check
// shows what follows (it has taken "builtin" before it calls Target).
func Target(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !strings.HasPrefix(path, "/") {
			return invalid("target ", addr, ": unix socket path must be absolute")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return invalid("target ", addr, `: want "builtin", "host:port" or "unix:/path"`)
	}
	if host == "" {
		// Only this: a host with a space or a slash, which no dial reaches
		// either, was taken by older builds, and refusing it would cut a
		// device off, its other services too.
		return invalid("target ", addr, " has no usable host name")
	}
	if n, err := net.LookupPort("tcp", port); err != nil || n == 0 || strings.Trim(port, "0123456789") != "" {
		return fmt.Errorf("tunnel: target %q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}

// CAFiles lists the files of a CA setting: the file itself, or the entries of a
// directory that are regular files, links followed. As OpenSSL's CA path
// (localproxy's --capath), a directory's other entries are passed over: a
// dangling link (a certificate removed without update-ca-certificates), a
// link to a subdirectory. The agent's check-config reads the same.
func CAFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil || !fi.IsDir() {
		return []string{path}, err
	}
	entries, err := os.ReadDir(path)
	var files []string
	for _, e := range entries {
		p := filepath.Join(path, e.Name())
		if fi, serr := os.Stat(p); serr == nil && fi.Mode().IsRegular() {
			files = append(files, p)
		}
	}
	return files, err
}

// ProxyURL parses an HTTPS proxy setting: http[s]://[user:pass@]host[:port];
// a missing scheme means http and a missing port 3128 (as localproxy). Errors
// never quote the URL, which may hold a password: a # / or ? in a password
// that is not percent-encoded ends the user info early, and what url.Parse
// then takes for a port or a scheme is part of the password or user name.
func ProxyURL(raw string) (*url.URL, error) {
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
		return nil, proxyURLSyntax(raw) // url.Parse's errors quote the URL or a part of it
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		// In "user:pa://ss@host" url.Parse takes the user name for the scheme.
		if before, _, _ := strings.Cut(raw, "://"); !strings.EqualFold(before, u.Scheme) {
			return nil, errProxyURLSyntax
		}
		return nil, invalid("proxy URL scheme ", u.Scheme, ", want http or https")
	}
	if u.Hostname() == "" {
		return nil, errors.New("tunnel: proxy URL has no host")
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "3128")
	} else if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return nil, errors.New("tunnel: proxy URL port: want 1-65535") // the "port" may be a password
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("tunnel: proxy URL must be only http[s]://[user:password@]host[:port]")
	}
	return u, nil
}

// errProxyURLSyntax is ProxyURL's error for a URL it cannot take apart.
var errProxyURLSyntax = errors.New("tunnel: proxy URL does not parse (percent-encode special characters in the user name and password)")

// proxyURLSyntax is errProxyURLSyntax, or a precise hint for the mistakes
// that are not in the user name or password: white space around the URL, and
// an IPv6 zone whose % is not written %25. Like it, it quotes none of raw.
func proxyURLSyntax(raw string) error {
	_, host, _ := strings.Cut(raw, "://") // raw has a scheme, "http://" when it had none
	if strings.TrimSpace(raw) != raw || strings.TrimSpace(host) != host {
		return errors.New("tunnel: proxy URL does not parse: remove the white space before or after it")
	}
	if i := strings.LastIndexByte(host, '@'); i >= 0 {
		host = host[i+1:]
	}
	if h, _, ok := strings.Cut(host, "]"); ok && strings.HasPrefix(h, "[") && strings.Contains(h, "%") && !strings.Contains(h, "%25") {
		return errors.New("tunnel: proxy URL does not parse: write an IPv6 address's zone with %25, not %, as in http://[fe80::1%25eth0]:3128")
	}
	return errProxyURLSyntax
}

// BypassProxy applies a NO_PROXY list: "*", host names (a leading dot, "*." or
// neither: the name and its subdomains), IP addresses, CIDR ranges, each
// optionally with :port.
func BypassProxy(host, port, noProxy string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	// A link-local endpoint has a zone ("fe80::1%br-lan"), which ParseIP
	// refuses: its addresses and ranges match it on any link, as sshd's
	// permit_local_forward does; an entry with the zone still matches as
	// a name.
	addr, _, _ := strings.Cut(host, "%")
	ip := net.ParseIP(addr)
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

// IPv6Hint is what to add to the refusal of a host:port that is an IPv6
// address without brackets ("fd00::1:22", which cannot be told from an
// address without a port), or "". The agent's config check and porthole
// connect's listen addresses say it alike.
func IPv6Hint(hostport, example string) string {
	if strings.HasPrefix(hostport, "unix:") || strings.Contains(hostport, "[") || strings.Count(hostport, ":") < 2 {
		return ""
	}
	return "; an IPv6 address needs brackets, with the port after them: " + example
}

// invalid is the error "tunnel: " + what + v quoted (%q) + rest. One
// function, not inlined (this package is compiled with inlining), builds them
// all: a fmt.Errorf at each place took more code, laid out before the idle
// agent's (docs/size.md).
//
//go:noinline
func invalid(what, v, rest string) error {
	return fmt.Errorf("tunnel: %s%q%s", what, v, rest)
}
