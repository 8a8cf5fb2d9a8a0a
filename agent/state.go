//go:build linux

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/jsonlite"
)

// savedTunnel is what the agent keeps on disk for a live destination session, so that
// a restart reconnects to a tunnel that is still open: the access token alone cannot
// be used twice, the access token with its client token can (spec §3.8). The file
// holds a secret and is written with mode 0600. It is written with encoding/json
// and read by decode.
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

func (s stateStore) path(key string) string { return filepath.Join(s.dir, key+".json") }

// save writes t atomically: temp file, fsync, rename, fsync of the directory.
func (s stateStore) save(t savedTunnel) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return wrapErr("creating state directory", err)
	}
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return writeFileAtomic(s.path(tokenKey(t.AccessToken)), b)
}

func (s stateStore) remove(accessToken string) error {
	err := os.Remove(s.path(tokenKey(accessToken)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// load returns the saved tunnels that may still be open, oldest first (the
// order they came in: past max_tunnels the newest wins, as it would have before
// the restart), and deletes the rest: expired, whose fingerprints it returns,
// or corrupt (a file that cannot be used; reported). One it cannot read is
// reported and left, at every start until it can be read (or is removed by
// hand: it may hold tokens).
func (s stateStore) load(now time.Time) (saved []savedTunnel, expired []string, errs []error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, []error{wrapErr("reading state directory", err)}
	}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(s.dir, name)
		if strings.HasPrefix(name, ".") && strings.Contains(name, ".json.tmp") && e.Type().IsRegular() {
			// writeFileAtomic's temporary file, left by a crash or power cut
			// during a save (none is being written: load runs before any
			// save, under the data directory's lock). It holds tokens.
			errs = append(errs, errors.New("removing "+name+", left by a save that did not finish (a crash or power cut)"))
			os.Remove(p)
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		b, err := os.ReadFile(p)
		// Unread, the file is not known to be at fault (out of descriptors,
		// an I/O error of the flash): kept for a later start, where it may
		// resume its tunnel.
		what, read := "keeping unread tunnel state", err == nil
		var t savedTunnel
		if read {
			what = "discarding tunnel state"
			err = t.decode(b)
		}
		if err == nil && (t.AccessToken == "" || t.ClientToken == "" || tokenKey(t.AccessToken)+".json" != name) {
			err = errors.New("incomplete or misnamed record")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %v", what, name, err))
			if read {
				os.Remove(p)
			}
			continue
		}
		if age := now.Sub(t.Received); age > maxTunnelLifetime {
			// Said, not silent: a clock stepped far forward since (a router that
			// booted with a stale one) also ends up here.
			errs = append(errs, fmt.Errorf("removing the saved tunnel %s: received %s ago (%s; the clock says %s), longer than a tunnel lives (%v)",
				fingerprint(t.AccessToken), age.Round(time.Minute), utc(t.Received), utc(now), maxTunnelLifetime))
			os.Remove(p)
			expired = append(expired, fingerprint(t.AccessToken))
			continue
		}
		// File names are hashes of the tokens: no order of their own. Oldest
		// first, in directory order among equal times: each is inserted
		// after those not newer, a stable insertion sort, smaller than
		// sort.Slice over the indices with a copy (slices' stable sort would
		// link one of savedTunnel's own, 4.4 KB of code on linux/mipsle);
		// there are at most a few dozen.
		j := len(saved)
		for j > 0 && t.Received.Before(saved[j-1].Received) {
			j--
		}
		saved = append(saved, t)
		copy(saved[j+1:], saved[j:])
		saved[j] = t
	}
	return saved, expired, errs
}

// decode reads a state file into t as json.Unmarshal(b, t) did, without
// encoding/json's reflection-based decoder: keys match the json tags ignoring
// case (Unicode's simple folding included, as strings.EqualFold does), null
// leaves a field as it is, unknown keys are skipped, and of a repeated key the
// last wins. What encoding/json refused is refused.
func (t *savedTunnel) decode(b []byte) error {
	doc, err := jsonlite.Parse(b)
	if err != nil {
		return err
	}
	switch doc.Kind() {
	case jsonlite.Object:
	case jsonlite.Null:
		return nil
	default:
		return errors.New("got JSON " + doc.Kind().String() + ", want object")
	}
	for _, m := range doc.Members() {
		switch key := m.Key; {
		case strings.EqualFold(key, "access_token"):
			err = decodeString(&t.AccessToken, m.Value)
		case strings.EqualFold(key, "client_token"):
			err = decodeString(&t.ClientToken, m.Value)
		case strings.EqualFold(key, "region"):
			err = decodeString(&t.Region, m.Value)
		case strings.EqualFold(key, "services"):
			err = decodeStrings(&t.Services, m.Value)
		case strings.EqualFold(key, "received"):
			err = t.Received.UnmarshalJSON(m.Value.Bytes())
		}
		if err != nil {
			return fmt.Errorf("%q: %w", m.Key, err)
		}
	}
	return nil
}

func decodeString(s *string, v jsonlite.Value) error {
	switch v.Kind() {
	case jsonlite.String:
		*s = v.Text()
	case jsonlite.Null:
	default:
		return errors.New("got JSON " + v.Kind().String() + ", want string")
	}
	return nil
}

// decodeStrings decodes an array into *s as encoding/json does: reusing the slice,
// so that a null element keeps what a repeated key put there before.
func decodeStrings(s *[]string, v jsonlite.Value) error {
	switch v.Kind() {
	case jsonlite.Array:
	case jsonlite.Null:
		*s = nil
		return nil
	default:
		return errors.New("got JSON " + v.Kind().String() + ", want array of strings")
	}
	out := (*s)[:0]
	for _, e := range v.Elements() {
		if i := len(out); i < cap(out) {
			out = out[:i+1]
		} else {
			out = append(out, "")
		}
		if err := decodeString(&out[len(out)-1], e); err != nil {
			return err
		}
	}
	if len(out) == 0 {
		out = []string{}
	}
	*s = out
	return nil
}
