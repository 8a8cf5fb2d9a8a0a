package tunneld

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
	"github.com/porthole-iot/porthole/tools/internal/atomicfile"
)

// stateFile is the name of the state file in Config.DataDir.
const stateFile = "tunnels.json"

// stateVersion is the format of the state file; a file of another version is refused.
const stateVersion = 1

// state is the saved form of the server. It holds access and client tokens, so the
// file is written with mode 0600.
type state struct {
	Version int       `json:"version"`
	Tunnels []*record `json:"tunnels"`
}

// load restores the tunnels saved in the data directory, if there is a state file.
// Open tunnels get their tokens back; closed ones answer "tunnel is closed" until
// they are forgotten.
func (s *Server) load() error {
	if s.cfg.DataDir == "" {
		return nil
	}
	// A save that did not finish (killed between writeState's temporary
	// file and its rename) left that file, with every tunnel's tokens in it;
	// no later save would remove it.
	removed, err := atomicfile.RemoveLeftovers(s.cfg.DataDir, stateFile)
	for _, f := range removed {
		s.log.Info("removed the file of a save that did not finish", "file", f)
	}
	if err != nil {
		return fmt.Errorf("removing the file of a save that did not finish: %w", err)
	}
	path := filepath.Join(s.cfg.DataDir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("reading state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("reading state %s: version %d, want %d", path, st.Version, stateVersion)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	open := 0
	for _, r := range st.Tunnels {
		if r == nil || checkTunnelID(r.ID) != nil || s.tunnels[r.ID] != nil {
			return fmt.Errorf("reading state %s: a tunnel with a missing, bad or repeated id", path)
		}
		// A closed tunnel is registered closed, not closed again: its
		// client tokens, which a later tunnel may have used again (they are
		// unique across open tunnels only, spec §2.1), are free, and the
		// data plane does not log a close that happened before the restart.
		if r.Status != StatusOpen {
			r.Status = StatusClosed
		} else {
			open++
		}
		if err := s.registerLocked(r); err != nil {
			return fmt.Errorf("restoring tunnel %s: %w", r.ID, err)
		}
		s.restoreRevokedLocked(r)
		r.saved, r.savedPending = durableOf(r.dp.Sides()), r.NotifyPending
		s.tunnels[r.ID] = r
	}
	s.trimClosedLocked() // the limit may have been lowered
	s.log.Info("state restored", "path", path, "tunnels", len(s.tunnels), "open", open)
	return nil
}

// save writes the state file atomically: a temporary file in the same directory,
// fsync, rename, fsync of the directory. It encodes a snapshot of the tunnels,
// taken under s.mu (the records, not what they point to: strings are shared),
// after releasing it, and streams the encoding to the file, so that a save
// costs the snapshot and one tunnel's encoding, not the file's size in memory
// several times over. Each change rewrites the whole file
// (2 MB and ~70 ms at 2,000 tunnels), one at a time: callers that queued behind
// a save return once a later save, whose snapshot has their change, succeeded
// (group commit), so that concurrent changes (first uses of tokens: each
// handshake's 101 waits for its save) share writes instead of waiting for one
// each.
func (s *Server) save() error {
	// Group commit: a ticket taken after the caller's change; a save whose
	// snapshot came after it (through >= ticket) covers the caller too.
	return s.saveThrough(s.saveTicket())
}

// saveTicket is saveTicketLocked for a caller without s.mu.
func (s *Server) saveTicket() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveTicketLocked()
}

// saveTicketLocked takes a ticket for the state as it is: every snapshot
// taken from now on covers it. A change that takes its ticket under s.mu
// with the change is covered by exactly the snapshots that hold the change.
func (s *Server) saveTicketLocked() uint64 {
	s.saveTickets++
	return s.saveTickets
}

// saveThrough is save with a ticket taken already: it returns once a
// successful write covers the ticket.
func (s *Server) saveThrough(ticket uint64) error {
	if s.cfg.DataDir == "" {
		return nil
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	// Covered first: the last save, at a stop, may have written the change
	// already, and the next instance has it.
	if s.savedThrough >= ticket {
		return nil
	}
	if s.saveEnded {
		return errStopped
	}
	s.mu.Lock()
	through := s.saveTickets
	st := state{Version: stateVersion}
	type durable struct {
		sides   [2]durableSide
		pending bool
	}
	// The data plane's state of every tunnel at one instant: its client
	// tokens move between tunnels without s.mu (a failed upgrade gives one
	// back, another tunnel's handshake takes it).
	rs := make([]*record, 0, len(s.tunnels))
	dps := make([]*dataplane.Tunnel, 0, len(s.tunnels))
	for _, r := range s.tunnels {
		rs, dps = append(rs, r), append(dps, r.dp)
	}
	sides := s.dp.Sides(dps)
	written := make(map[*record]durable, len(rs))
	for i, r := range rs {
		r.sync(sides[i])
		written[r] = durable{durableOf(sides[i]), r.NotifyPending}
		c := *r
		c.Tags, c.Dest, c.Revoked = slices.Clone(r.Tags), cloneDest(r.Dest), slices.Clone(r.Revoked)
		st.Tunnels = append(st.Tunnels, &c)
	}
	s.mu.Unlock()
	slices.SortFunc(st.Tunnels, func(a, b *record) int { return strings.Compare(a.ID, b.ID) })
	path := filepath.Join(s.cfg.DataDir, stateFile)
	if err := writeState(path, 0o600, st.encode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	s.mu.Lock()
	for r, d := range written {
		r.saved, r.savedPending = d.sides, d.pending
	}
	s.mu.Unlock()
	s.savedThrough = through
	return nil
}

// forgetUnsaved closes and forgets r, whose change took ticket and whose
// save failed, and reports true, unless a successful write covers the ticket
// after all: one that began after the failed one, with r in its snapshot. It
// decides under saveMu, so that no snapshot is taken between the check and
// the forget: one taken after the failure and before the forget wrote r open
// to the file, where it stayed until some later save, while the caller was
// told it failed.
func (s *Server) forgetUnsaved(r *record, ticket uint64) bool {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if s.savedThrough >= ticket {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(r, "tunnel closed", s.now())
	s.forgetLocked(r)
	return true
}

// writeState writes the state file: a variable for tests, which count writes.
var writeState = atomicfile.WriteFunc

// encode writes st to w as json.MarshalIndent(st, "", "  ") and a newline
// would, byte for byte, but one tunnel at a time: the whole encoding of a
// state file with the most tags (validate.go) on --max-open-tunnels and
// --max-closed-tunnels tunnels, hundreds of MB, is never in memory at once
// (docs/benchmarks.md, BenchmarkSaveMaxTags).
func (st *state) encode(w io.Writer) error {
	if _, err := fmt.Fprintf(w, "{\n  \"version\": %d,\n  \"tunnels\": ", st.Version); err != nil {
		return err
	}
	if st.Tunnels == nil {
		_, err := io.WriteString(w, "null\n}\n")
		return err
	}
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	// The buffers grow to the largest tunnel's encoding and serve every one:
	// json.MarshalIndent per tunnel allocates anew each time, four times the
	// file in all, garbage the heap's peak holds (TestSaveMemoryDoesNotScaleWithFile).
	var compact, indented bytes.Buffer
	enc := json.NewEncoder(&compact) // escapes <, >, & as json.Marshal does
	for i, r := range st.Tunnels {
		compact.Reset()
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("encoding tunnel %s: %w", r.ID, err)
		}
		indented.Reset()
		indented.WriteString("\n    ")
		if err := json.Indent(&indented, bytes.TrimSuffix(compact.Bytes(), []byte("\n")), "    ", "  "); err != nil {
			return fmt.Errorf("encoding tunnel %s: %w", r.ID, err)
		}
		if i < len(st.Tunnels)-1 {
			indented.WriteByte(',')
		}
		if _, err := w.Write(indented.Bytes()); err != nil {
			return err
		}
	}
	if len(st.Tunnels) > 0 {
		if _, err := io.WriteString(w, "\n  "); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "]\n}\n")
	return err
}
