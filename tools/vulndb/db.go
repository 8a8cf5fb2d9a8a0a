package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// entry is the part of an OSV entry the indexes need
// (https://go.dev/security/vuln/database#schema).
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Affected []struct {
		Package struct {
			Name string `json:"name"` // a module path, or "stdlib" or "toolchain"
		} `json:"package"`
	} `json:"affected"`
}

// moduleVulns is one element of index/modules.json.
type moduleVulns struct {
	Path  string      `json:"path"`
	Vulns []vulnIndex `json:"vulns"`
}

// vulnIndex is one vulnerability of a module in index/modules.json. It has no
// "fixed" (the API's optional latest fixed version): govulncheck uses it only
// to skip reading entries whose fix a module's version has, and leaving it out
// makes govulncheck read them and match each entry's ranges itself, which a
// fixed version computed wrongly here could not make it miss.
type vulnIndex struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
}

type stats struct {
	Entries, Modules int
}

// build writes the database for the OSV files in src/data/osv into out.
// index/db.json's modified time is the newest entry's, or published when that is
// later: the vulndb repository's files carry the zero time, which the database's
// deployment replaces, so the module version's time is the best one there is.
//
// It writes a new directory beside out and renames it to out, so out is never
// part of a database: the old one, the whole new one, or (killed between the
// removal and the rename) none, which make vulncheck builds again.
func build(src, out string, published time.Time) (stats, error) {
	files, err := filepath.Glob(filepath.Join(src, "data", "osv", "*.json"))
	if err != nil {
		return stats{}, err
	}
	if len(files) == 0 {
		return stats{}, fmt.Errorf("no OSV files (*.json) in %s", filepath.Join(src, "data", "osv"))
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return stats{}, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return stats{}, err
	}
	defer os.RemoveAll(tmp) // after the rename there is nothing to remove
	st, err := write(files, tmp, published)
	if err != nil {
		return stats{}, err
	}
	// MkdirTemp makes it 0700; the database holds nothing private.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return stats{}, err
	}
	if err := os.RemoveAll(out); err != nil {
		return stats{}, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return stats{}, err
	}
	return st, nil
}

// write reads the OSV files and writes the database's files into dir.
func write(files []string, dir string, published time.Time) (stats, error) {
	for _, d := range []string{"ID", "index"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return stats{}, err
		}
	}
	modified := published
	byModule := map[string][]vulnIndex{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return stats{}, err
		}
		e, err := parseEntry(f, b)
		if err != nil {
			return stats{}, err
		}
		if e.Modified.After(modified) {
			modified = e.Modified
		}
		// An entry may list a module more than once (different packages or
		// ranges); the index names each entry once per module.
		var paths []string
		for _, a := range e.Affected {
			if !slices.Contains(paths, a.Package.Name) {
				paths = append(paths, a.Package.Name)
			}
		}
		for _, p := range paths {
			byModule[p] = append(byModule[p], vulnIndex{ID: e.ID, Modified: e.Modified})
		}
		if err := os.WriteFile(filepath.Join(dir, "ID", e.ID+".json"), b, 0o644); err != nil {
			return stats{}, err
		}
	}
	index := make([]moduleVulns, 0, len(byModule))
	for p, vs := range byModule {
		slices.SortFunc(vs, func(a, b vulnIndex) int { return strings.Compare(a.ID, b.ID) })
		index = append(index, moduleVulns{Path: p, Vulns: vs})
	}
	slices.SortFunc(index, func(a, b moduleVulns) int { return strings.Compare(a.Path, b.Path) })
	if err := writeJSON(filepath.Join(dir, "index", "modules.json"), index); err != nil {
		return stats{}, err
	}
	if err := writeJSON(filepath.Join(dir, "index", "db.json"), struct {
		Modified time.Time `json:"modified"`
	}{modified}); err != nil {
		return stats{}, err
	}
	return stats{Entries: len(files), Modules: len(index)}, nil
}

// parseEntry decodes the OSV entry b read from file and checks what the
// database's layout depends on: govulncheck finds an entry by its ID, and its
// modules by their paths.
func parseEntry(file string, b []byte) (*entry, error) {
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("OSV file %s: %w", file, err)
	}
	if e.ID == "" {
		return nil, fmt.Errorf("OSV file %s: no id", file)
	}
	if want := e.ID + ".json"; filepath.Base(file) != want {
		return nil, fmt.Errorf("OSV file %s: its id is %s, so its name should be %s", file, e.ID, want)
	}
	for i, a := range e.Affected {
		if a.Package.Name == "" {
			return nil, fmt.Errorf("OSV file %s: affected[%d] has no package name", file, i)
		}
	}
	return &e, nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
