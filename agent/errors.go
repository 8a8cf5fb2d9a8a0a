package agent

import (
	"fmt"
	"strings"
)

// wrapErr is fmt.Errorf(what+": %w", err). One call at each place that wraps
// an error with a fixed prefix is less code than a fmt.Errorf at each, and
// that code is laid out before the idle agent's (docs/size.md).
func wrapErr(what string, err error) error { return fmt.Errorf("%s: %w", what, err) }

// untunneled is err's text without the "tunnel: " its package puts first,
// for the agent's messages that say which setting or step it is about.
func untunneled(err error) string { return strings.TrimPrefix(err.Error(), "tunnel: ") }
