package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/tools/internal/atomicfile"
)

// HostKeys is the trust-on-first-use store of device host keys, one per thing
// (or per label the operator gave a pasted token). With a Path it is a JSON file
// {"thing": "ssh-ed25519 AAAA..."}, written atomically with mode 0600; an empty
// Path keeps keys in memory only.
//
// Several consoles may share the file (every console a user starts has the same
// default): nothing is kept in memory between calls. A change takes an exclusive
// flock on Path+".lock", reads the file, makes its one change and writes the file
// atomically before it lets go, so that one console's new key is never lost to
// another's write; a lookup reads the file. (The lock is on a file of its own
// because the atomic write replaces the store's inode.)
type HostKeys struct {
	Path string

	mu   sync.Mutex        // one call at a time in this process, taken after the file lock
	keys map[string]string // thing → authorized_keys form, with an empty Path; nil until first use
}

// HostKeyChangedError is a host key that differs from the one stored for a thing.
type HostKeyChangedError struct {
	Thing     string
	Stored    string // SHA256 fingerprint of the stored key
	Presented string // SHA256 fingerprint of the key the device presented
}

func (e *HostKeyChangedError) Error() string {
	return fmt.Sprintf("console: the host key of %s changed: stored %s, presented %s", e.Thing, e.Stored, e.Presented)
}

// Check verifies key for thing. An unknown thing's key is stored (first use) and
// reported with firstUse true. A different key is a *HostKeyChangedError, unless
// accept is the new key's fingerprint: then it replaces the stored key. While
// another console holds the file's lock, Check waits for it until ctx ends.
func (h *HostKeys) Check(ctx context.Context, thing string, key ssh.PublicKey, accept string) (firstUse bool, err error) {
	if h.Path != "" {
		// The file lock first: h.mu is only ever held for a moment, so waiting
		// for it needs no ctx.
		unlock, err := lockFile(ctx, h.Path+".lock")
		if err != nil {
			return false, fmt.Errorf("locking host keys %s: %w", h.Path, err)
		}
		defer unlock()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	keys, err := h.readLocked()
	if err != nil {
		return false, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
	fp := ssh.FingerprintSHA256(key)
	stored, ok := keys[thing]
	switch {
	case ok && stored == line:
		return false, nil
	case ok && accept != fp:
		// A store seeded by hand may hold the key as the device's .pub file
		// has it, with a comment or spaces: the same key is no change.
		old, _, _, _, err := ssh.ParseAuthorizedKey([]byte(stored))
		if err != nil {
			return false, fmt.Errorf("host key of %s in %s: %w", thing, h.Path, err)
		}
		if bytes.Equal(old.Marshal(), key.Marshal()) {
			return false, nil
		}
		return false, &HostKeyChangedError{Thing: thing, Stored: ssh.FingerprintSHA256(old), Presented: fp}
	}
	keys[thing] = line
	return !ok, h.writeLocked(keys)
}

// Fingerprint returns the SHA256 fingerprint stored for thing, or "".
func (h *HostKeys) Fingerprint(thing string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys, err := h.readLocked() // no file lock: writes replace the file whole
	if err != nil {
		return "", err
	}
	stored, ok := keys[thing]
	if !ok {
		return "", nil
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(stored))
	if err != nil {
		return "", err
	}
	return ssh.FingerprintSHA256(k), nil
}

// readLocked returns the stored keys: the file's as it is now, or the in-memory
// map. h.mu is held.
func (h *HostKeys) readLocked() (map[string]string, error) {
	if h.Path == "" {
		if h.keys == nil {
			h.keys = map[string]string{}
		}
		return h.keys, nil
	}
	keys := map[string]string{}
	b, err := os.ReadFile(h.Path)
	if errors.Is(err, os.ErrNotExist) {
		return keys, nil
	}
	if err == nil && len(bytes.TrimSpace(b)) > 0 { // empty (": > FILE"): no keys, as no file
		err = json.Unmarshal(b, &keys)
	}
	if err != nil {
		return nil, fmt.Errorf("reading host keys %s: %w", h.Path, err)
	}
	if keys == nil { // the file holds null
		keys = map[string]string{}
	}
	return keys, nil
}

// writeLocked stores keys. h.mu and, with a Path, the file lock are held.
func (h *HostKeys) writeLocked(keys map[string]string) error {
	if h.Path == "" {
		return nil // keys is h.keys
	}
	b, err := json.MarshalIndent(keys, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(h.Path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing host keys %s: %w", h.Path, err)
	}
	return nil
}
