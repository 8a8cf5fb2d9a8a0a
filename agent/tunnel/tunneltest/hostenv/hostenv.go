// Package hostenv keeps settings of the machine that runs the tests out of
// them, where a test would otherwise pass or fail by the machine:
//   - its proxy: porthole's dialer proxies loopback too (a device may reach its
//     tunnel endpoint only through a proxy on itself), so the https_proxy of a
//     machine behind one would send every test's tunnel, on loopback, to that
//     proxy; and a lowercase no_proxy would beat a test's own NO_PROXY;
//   - its umask: under 002 the directories t.TempDir numbers come out
//     group-writable, and the agent rightly refuses such a data_dir;
//   - its DNS: tests stay on loopback even with the code under test broken,
//     and a name meant for a test's own resolver must not reach the host's.
package hostenv

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
)

// vars are the variables porthole, Go's net/http and curl take a proxy from.
var vars = []string{"https_proxy", "http_proxy", "all_proxy", "no_proxy"}

// Clear unsets the proxy variables, in either case, and sets the umask to 022,
// in this process and so in what it starts, and keeps this process's lookups
// from DNS (NoDNS). A test package calls it from its TestMain.
func Clear() {
	for _, k := range vars {
		os.Unsetenv(k)
		os.Unsetenv(strings.ToUpper(k))
	}
	Umask()
	NoDNS()
}

// NoDNS makes Go's default resolver, in this process, fail every DNS query
// instead of sending it; /etc/hosts still answers (localhost). A lookup
// that should have gone to a test's own resolver, or a name a broken
// configuration falls back to (an AWS endpoint), then fails here. Programs
// the tests start are not covered: they get names no resolver asks about
// (region x-, x-.invalid).
func NoDNS() {
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("test: no DNS query leaves this machine")
	}}
}

// WithoutProxies is env (NAME=value entries) without the proxy variables: for
// the one command of a test that dials loopback, where the rest keep the
// machine's proxy (a download that needs it).
func WithoutProxies(env []string) []string {
	return slices.DeleteFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(vars, strings.ToLower(k))
	})
}
