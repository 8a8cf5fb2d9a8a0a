// Package hostenv keeps settings of the machine that runs the tests out of
// them, where a test would otherwise pass or fail by the machine:
//   - its proxy: porthole's dialer proxies loopback too (a device may reach its
//     tunnel endpoint only through a proxy on itself), so the https_proxy of a
//     machine behind one would send every test's tunnel, on loopback, to that
//     proxy; and a lowercase no_proxy would beat a test's own NO_PROXY;
//   - its umask: under 002 the directories t.TempDir numbers come out
//     group-writable, and the agent rightly refuses such a data_dir.
package hostenv

import (
	"os"
	"slices"
	"strings"
)

// vars are the variables porthole, Go's net/http and curl take a proxy from.
var vars = []string{"https_proxy", "http_proxy", "all_proxy", "no_proxy"}

// Clear unsets the proxy variables, in either case, and sets the umask to 022,
// in this process and so in what it starts. A test package calls it from its
// TestMain.
func Clear() {
	for _, k := range vars {
		os.Unsetenv(k)
		os.Unsetenv(strings.ToUpper(k))
	}
	Umask()
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
