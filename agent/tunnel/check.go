package tunnel

// What the agent's config check runs when it starts (agent.Check, Warnings and
// New) is in package check, laid out before this one, so that an idle agent
// runs no code of this package (agent/tunnel/internal/check says why). These
// are its exports, under this package's names; the dial uses the same
// functions later. They are variables, not functions that call check's: the
// compiler does not inline such a function into its callers when check's is
// inlined into it, and the agent would run it here. Each is set in the
// binary's data, as is every other package-level variable of this package
// in the device build (errors.New is inlined there, device.gcflags): the
// package has no init function to run at start either. A variable set by
// code (one that calls a function not inlined) would bring one back, and
// with it a 64 KiB window of the idle agent; make idle-layout shows it.

import (
	"net/url"

	"github.com/porthole-iot/porthole/agent/tunnel/internal/check"
)

// Mode is the side of the tunnel a client plays.
type Mode string

// The two modes of local-proxy-mode (spec §2.1).
const (
	ModeSource      Mode = "source"
	ModeDestination Mode = "destination"
)

// ValidateServiceID checks a service name against the API's rule: 1–128 characters
// of [a-zA-Z0-9:_-] (spec §3.4).
var ValidateServiceID = check.ServiceID

// RegionEndpoint is the data-plane host of region (spec §2.4); China regions use
// amazonaws.com.cn.
var RegionEndpoint = check.RegionEndpoint

// ErrPlainWebSocket is in the error for a ws:// (http://) endpoint given without
// allowInsecure, so that a command can say which of its options allows one.
var ErrPlainWebSocket error = check.PlainWebSocketError{}

// ValidateEndpoint checks where a client would connect, as it would: an explicit
// data-plane endpoint (host[:port], or a wss:// URL; ws:// only with
// allowInsecure), or else a region name.
var ValidateEndpoint = check.Endpoint

// tunnelURL builds the WebSocket URL for a mode from an explicit endpoint or a region.
// endpoint is host[:port], or a wss:// (https://) URL; ws:// (http://) only when
// allowInsecure is set.
func tunnelURL(endpoint, region string, mode Mode, allowInsecure bool) (*url.URL, error) {
	return check.URL(endpoint, region, string(mode), allowInsecure)
}

// EnvironmentProxy is the proxy ProxyFromEnvironment gives the tunnel at
// endpoint or region: nil when there is none or NO_PROXY bypasses it, and an
// error naming the variable when it does not parse, so that a caller can refuse
// it at start instead of failing every dial. An endpoint that does not validate
// gives nil, nil (ValidateEndpoint's to report).
var EnvironmentProxy = check.EnvironmentProxy

// PlainEndpoint reports whether a data-plane endpoint is reached without TLS
// (ws:// or http://, in any case), as the dial decides.
var PlainEndpoint = check.PlainEndpoint

// ValidateTarget checks a target: "host:port" with a numeric port, or "unix:/abs/path".
var ValidateTarget = check.Target

// IPv6Hint is what to add to the refusal of a host:port that is an IPv6
// address without brackets ("fd00::1:22"), or "": "; an IPv6 address needs
// brackets, with the port after them: " and example.
var IPv6Hint = check.IPv6Hint

// CAFiles lists the files of a CA setting: the file itself, or the entries of a
// directory that are regular files, links followed. As OpenSSL's CA path
// (localproxy's --capath), a directory's other entries are passed over: a
// dangling link (a certificate removed without update-ca-certificates), a
// link to a subdirectory. The agent's check-config reads the same.
var CAFiles = check.CAFiles

// ParseProxyURL parses an HTTPS proxy setting: http[s]://[user:pass@]host[:port];
// a missing scheme means http and a missing port 3128 (as localproxy). Errors
// never quote the URL, which may hold a password.
var ParseProxyURL = check.ProxyURL
