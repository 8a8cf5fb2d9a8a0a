package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/porthole-iot/porthole/tools/internal/atomicfile"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// lockState takes an exclusive, non-blocking flock on the state directory itself,
// held until the returned file is closed (the lab's life). A second lab on the same
// directory would otherwise truncate the running one's agent.log, rewrite its agent
// configuration and run a second tunneld on its tunnels.json. The lock goes with the
// process: a lab killed with -9 leaves no stale lock behind, and the agent does not
// inherit it. The directory is made if missing; nothing in it is written before the
// lock is held. It is tunneld's data-directory lock (tunneld.LockDir), on a
// different directory than the in-process tunneld's (state/tunneld).
func lockState(dir string) (*os.File, error) {
	f, err := tunneld.LockDir(dir)
	if errors.Is(err, tunneld.ErrDataDirInUse) {
		return nil, stateInUse("the lab in " + dir + " is already running (" + holder(dir) + "); stop it first or use another --state")
	}
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return f, nil
}

// ErrStateInUse is what Run ends with when another lab runs on its state
// directory: errors.Is(err, ErrStateInUse) tells it, as a usage mistake (a
// --state to change), from a failed step.
var ErrStateInUse = errors.New("the lab's state directory is in use")

// stateInUse is ErrStateInUse with a message saying which lab holds it.
type stateInUse string

func (e stateInUse) Error() string        { return string(e) }
func (e stateInUse) Is(target error) bool { return target == ErrStateInUse }

// holder describes the lab that holds the lock, from its lab.json if it got that far.
func holder(dir string) string {
	var info Info
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err != nil || json.Unmarshal(b, &info) != nil || info.PID == 0 {
		return "it is still starting"
	}
	return fmt.Sprintf("pid %d", info.PID)
}

// removeLeftovers removes what a lab killed (-9, a power cut) in the middle of
// writing one of its files left in dir, its state directory
// (atomicfile.RemoveLeftovers: a private key in it for ca.key). Only the lab's
// own directories are looked at (dir, device and each board's), not the
// agent's data nor tunneld's, which removes its own; the lock must be held.
func removeLeftovers(dir string, log *slog.Logger) error {
	dirs := []string{dir, filepath.Join(dir, "device")}
	boards, _ := os.ReadDir(filepath.Join(dir, "board"))
	for _, b := range boards {
		if b.IsDir() {
			dirs = append(dirs, filepath.Join(dir, "board", b.Name()))
		}
	}
	for _, d := range dirs {
		removed, err := atomicfile.RemoveLeftovers(d, "")
		for _, f := range removed {
			log.Info("removed the file of a write that did not finish", "file", f)
		}
		if err != nil {
			return fmt.Errorf("removing the file of a write that did not finish: %w", err)
		}
	}
	return nil
}
