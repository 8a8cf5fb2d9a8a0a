package agent

// The files both sides keep: the agent's state (Linux only) and porthole
// connect's client-token cache (every system an operator runs it on).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// maxTunnelLifetime is the longest a tunnel can be open (spec §7): saved state older
// than this is stale.
const maxTunnelLifetime = 12 * time.Hour

// sessionLifetime is maxTunnelLifetime for a session's deadline; tests shorten
// it.
var sessionLifetime = maxTunnelLifetime

// tokenKey names what is kept for an access token (a state file, a cached
// client token) by a hash of it: never the token itself.
func tokenKey(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return hex.EncodeToString(sum[:12])
}

// writeFileAtomic replaces path with data, mode 0600 (CreateTemp's, which no
// umask widens), so that a crash leaves the old or the new content, never a mix.
// It writes no more to flash than that: no chmod, and no removal of a renamed
// temporary file.
func writeFileAtomic(path string, data []byte) error {
	if err := replaceFile(path, data); err != nil {
		return wrapErr("writing "+path, err)
	}
	return nil
}

// replaceFile is writeFileAtomic without the path in its errors.
func replaceFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if tmp != "" {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	tmp = ""
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// retryFlock calls try, which takes a flock without waiting, until it gives
// something other than errLockHeld, wait has passed, or ctx ends.
func retryFlock(ctx context.Context, wait time.Duration, try func() (*os.File, error)) (*os.File, error) {
	deadline := time.Now().Add(wait)
	for {
		f, err := try()
		if !errors.Is(err, errLockHeld) || !time.Now().Before(deadline) {
			return f, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
