//go:build !linux

package agent

// systemRoots reports true: elsewhere than on Linux, where the agent does not
// run, crypto/x509 asks the system's own verifier.
func systemRoots() bool { return true }
