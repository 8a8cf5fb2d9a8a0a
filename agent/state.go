package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// maxTunnelLifetime is the longest a tunnel can be open (spec §7): saved state older
// than this is stale.
const maxTunnelLifetime = 12 * time.Hour

// savedTunnel is what the agent keeps on disk for a live destination session, so that
// a restart reconnects to a tunnel that is still open: the access token alone cannot
// be used twice, the access token with its client token can (spec §3.8). The file
// holds a secret and is written with mode 0600.
type savedTunnel struct {
	AccessToken string    `json:"access_token"`
	ClientToken string    `json:"client_token"`
	Region      string    `json:"region"`
	Services    []string  `json:"services"`
	Received    time.Time `json:"received"`
}

// stateStore keeps one file per live tunnel in DataDir/tunnels, named by a hash of
// the access token.
type stateStore struct{ dir string }

func tokenKey(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return hex.EncodeToString(sum[:12])
}

func (s stateStore) path(key string) string { return filepath.Join(s.dir, key+".json") }

// save writes t atomically: temp file, fsync, rename, fsync of the directory.
func (s stateStore) save(t savedTunnel) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return writeFileAtomic(s.path(tokenKey(t.AccessToken)), b, 0o600)
}

func (s stateStore) remove(accessToken string) error {
	err := os.Remove(s.path(tokenKey(accessToken)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// load returns the saved tunnels that may still be open, and deletes the rest
// (expired or unreadable: a corrupt file cannot be used and is reported).
func (s stateStore) load(now time.Time) ([]savedTunnel, []error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("reading state directory: %w", err)}
	}
	var out []savedTunnel
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		p := filepath.Join(s.dir, name)
		b, err := os.ReadFile(p)
		var t savedTunnel
		if err == nil {
			err = json.Unmarshal(b, &t)
		}
		if err == nil && (t.AccessToken == "" || t.ClientToken == "" || tokenKey(t.AccessToken)+".json" != name) {
			err = errors.New("incomplete or misnamed record")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("discarding tunnel state %s: %v", name, err))
			os.Remove(p)
			continue
		}
		if now.Sub(t.Received) > maxTunnelLifetime {
			os.Remove(p)
			continue
		}
		out = append(out, t)
	}
	return out, errs
}

// writeFileAtomic replaces path with data so that a crash leaves the old or the new
// content, never a mix.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
