// Package proxyenv keeps the machine's proxy settings out of tests: porthole's
// dialer proxies loopback too (a device may reach its tunnel endpoint only
// through a proxy on itself), so the https_proxy of a machine behind one would
// send every test's tunnel, on loopback, to that proxy; and a lowercase
// no_proxy would beat a test's own NO_PROXY.
package proxyenv

import (
	"os"
	"slices"
	"strings"
)

// vars are the variables porthole, Go's net/http and curl take a proxy from.
var vars = []string{"https_proxy", "http_proxy", "all_proxy", "no_proxy"}

// Clear unsets the proxy variables, in either case, in this process and so in
// what it starts. A test package calls it from its TestMain.
func Clear() {
	for _, k := range vars {
		os.Unsetenv(k)
		os.Unsetenv(strings.ToUpper(k))
	}
}

// Without is env (NAME=value entries) without the proxy variables: for the
// one command of a test that dials loopback, where the rest keep the machine's
// proxy (a download that needs it).
func Without(env []string) []string {
	return slices.DeleteFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(vars, strings.ToLower(k))
	})
}
