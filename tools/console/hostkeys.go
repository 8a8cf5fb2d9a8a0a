package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// HostKeys is the trust-on-first-use store of device host keys, one per thing
// (or per label the operator gave a pasted token). With a Path it is a JSON file
// {"thing": "ssh-ed25519 AAAA..."}, written atomically with mode 0600 after every
// change; an empty Path keeps keys in memory only.
type HostKeys struct {
	Path string

	mu   sync.Mutex
	keys map[string]string // thing → authorized_keys form; nil until loaded
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
// accept is the new key's fingerprint: then it replaces the stored key.
func (h *HostKeys) Check(thing string, key ssh.PublicKey, accept string) (firstUse bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(); err != nil {
		return false, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
	fp := ssh.FingerprintSHA256(key)
	stored, ok := h.keys[thing]
	switch {
	case ok && stored == line:
		return false, nil
	case ok && accept != fp:
		old, _, _, _, err := ssh.ParseAuthorizedKey([]byte(stored))
		if err != nil {
			return false, fmt.Errorf("host key of %s in %s: %w", thing, h.Path, err)
		}
		return false, &HostKeyChangedError{Thing: thing, Stored: ssh.FingerprintSHA256(old), Presented: fp}
	}
	h.keys[thing] = line
	return !ok, h.saveLocked()
}

// Fingerprint returns the SHA256 fingerprint stored for thing, or "".
func (h *HostKeys) Fingerprint(thing string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(); err != nil {
		return "", err
	}
	stored, ok := h.keys[thing]
	if !ok {
		return "", nil
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(stored))
	if err != nil {
		return "", err
	}
	return ssh.FingerprintSHA256(k), nil
}

func (h *HostKeys) loadLocked() error {
	if h.keys != nil {
		return nil
	}
	h.keys = map[string]string{}
	if h.Path == "" {
		return nil
	}
	b, err := os.ReadFile(h.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = json.Unmarshal(b, &h.keys)
	}
	if err != nil {
		h.keys = nil
		return fmt.Errorf("reading host keys %s: %w", h.Path, err)
	}
	return nil
}

func (h *HostKeys) saveLocked() error {
	if h.Path == "" {
		return nil
	}
	b, err := json.MarshalIndent(h.keys, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(h.Path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing host keys %s: %w", h.Path, err)
	}
	return nil
}

// writeFileAtomic writes b to path through a temporary file, fsync and rename.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
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
	return os.Rename(f.Name(), path)
}
