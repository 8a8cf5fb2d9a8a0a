//go:build !unix && !windows

package tunnel

// lingerZero does nothing where there is no SO_LINGER (see Targets.dialService).
func lingerZero(fd uintptr) {}
