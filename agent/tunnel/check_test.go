package tunnel

import (
	"github.com/porthole-iot/porthole/agent/internal/syntax"
	"github.com/porthole-iot/porthole/agent/tunnel/internal/check"
)

// The tests of the start-time checks call them by the names they had in this
// package, before they moved to package check.
var (
	proxyFor    = check.ProxyFor
	bypassProxy = check.BypassProxy
	isName      = syntax.Name
)
