package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testdata/vulndb is a vulndb module of three OSV files: GO-2026-0001 lists
// stdlib twice, GO-2024-0002 two modules and the only modified time, and
// GO-2023-0003 one module GO-2024-0002 has too. testdata/vulndb.info is its
// version's .info file from the module cache.
const (
	fixtureDir  = "testdata/vulndb"
	fixtureInfo = "testdata/vulndb.info"
)

func TestRun(t *testing.T) {
	out := filepath.Join(t.TempDir(), "db")
	stdin := strings.NewReader(`{"Path": "golang.org/x/vulndb", "Version": "v0.0.0-20261105234957-e22db6528018",
		"Info": "` + fixtureInfo + `", "Dir": "` + fixtureDir + `"}`)
	var stdout, stderr bytes.Buffer
	if err := run([]string{"-out", out}, stdin, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v (stderr %q)", err, stderr.String())
	}
	if want := "vulndb: " + out + ": 3 entries, 3 modules (golang.org/x/vulndb@v0.0.0-20261105234957-e22db6528018)\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
	for _, tc := range []struct{ file, want string }{
		// By path, then by id; stdlib once for GO-2026-0001.
		{"index/modules.json", `[` +
			`{"path":"example.com/a","vulns":[{"id":"GO-2023-0003","modified":"0001-01-01T00:00:00Z"},{"id":"GO-2024-0002","modified":"2024-05-06T07:08:09Z"}]},` +
			`{"path":"example.com/b/v2","vulns":[{"id":"GO-2024-0002","modified":"2024-05-06T07:08:09Z"}]},` +
			`{"path":"stdlib","vulns":[{"id":"GO-2026-0001","modified":"0001-01-01T00:00:00Z"}]}]`},
		// The module version's time: later than the only entry's that has one.
		{"index/db.json", `{"modified":"2026-11-05T23:49:57Z"}`},
	} {
		b, err := os.ReadFile(filepath.Join(out, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%s:\n%s\nwant\n%s", tc.file, b, tc.want)
		}
	}
	for _, id := range []string{"GO-2026-0001", "GO-2024-0002", "GO-2023-0003"} {
		want, err := os.ReadFile(filepath.Join(fixtureDir, "data", "osv", id+".json"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, "ID", id+".json"))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ID/%s.json = %q, %v; want the OSV file as it is", id, got, err)
		}
	}
}

// A newer entry than the module version sets the database's modified time.
func TestBuildNewestEntry(t *testing.T) {
	out := filepath.Join(t.TempDir(), "db")
	if _, err := build(fixtureDir, out, time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "index", "db.json"))
	if want := `{"modified":"2024-05-06T07:08:09Z"}`; err != nil || string(b) != want {
		t.Errorf("index/db.json = %s, %v; want %s", b, err, want)
	}
}

// A file the database cannot be built from is named in the error, and the
// database that was there stays as it was, with nothing left beside it.
func TestBuildRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, file, text, want string
	}{
		{"malformed", "GO-2026-0004.json", `{"id":"GO-2026-0004","affected":[`, "unexpected end of JSON input"},
		{"wrong type", "GO-2026-0004.json", `{"id":"GO-2026-0004","modified":"yesterday"}`, "cannot parse"},
		{"no id", "GO-2026-0004.json", `{"summary":"x"}`, "no id"},
		{"named for another id", "GO-2026-0004.json", `{"id":"GO-2026-0005"}`, "its id is GO-2026-0005, so its name should be GO-2026-0005.json"},
		{"no package name", "GO-2026-0004.json", `{"id":"GO-2026-0004","affected":[{"package":{"ecosystem":"Go"}}]}`, "affected[0] has no package name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := t.TempDir()
			osv := filepath.Join(src, "data", "osv")
			if err := os.MkdirAll(osv, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"GO-2024-0002.json", "GO-2023-0003.json"} {
				b, err := os.ReadFile(filepath.Join(fixtureDir, "data", "osv", f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(osv, f), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			bad := filepath.Join(osv, tc.file)
			if err := os.WriteFile(bad, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			out := filepath.Join(parent, "db")
			old := filepath.Join(out, "index", "db.json")
			if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(old, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}

			_, err := build(src, out, time.Time{})
			if err == nil {
				t.Fatalf("build with %s = nil error, want one naming it", tc.text)
			}
			if !strings.Contains(err.Error(), "OSV file "+bad+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("build: %v\nwant an error naming %s and saying %q", err, bad, tc.want)
			}
			if b, err := os.ReadFile(old); err != nil || string(b) != "old" {
				t.Errorf("the old index/db.json after a failed build: %q, %v; want it as it was", b, err)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 1 {
				t.Errorf("beside the database after a failed build: %v, want nothing", ents)
			}
		})
	}
}

func TestBuildNoFiles(t *testing.T) {
	src := t.TempDir()
	_, err := build(src, filepath.Join(t.TempDir(), "db"), time.Time{})
	if want := "no OSV files (*.json) in " + filepath.Join(src, "data", "osv"); err == nil || err.Error() != want {
		t.Errorf("build of an empty module: %v, want %s", err, want)
	}
}

func TestRunDownloadFailed(t *testing.T) {
	for _, tc := range []struct{ name, stdin, want string }{
		{"error", `{"Path": "golang.org/x/vulndb", "Version": "v0.0.0-20991231000000-000000000000", "Error": "unknown revision 000000000000"}`,
			"go mod download golang.org/x/vulndb@v0.0.0-20991231000000-000000000000: unknown revision 000000000000"},
		{"nothing", ``, "reading go mod download -json on stdin: EOF"},
		{"no dir", `{"Path": "golang.org/x/vulndb", "Version": "v1.0.0"}`, "go mod download -json: no Dir or Info for golang.org/x/vulndb@v1.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "db")
			var stdout, stderr bytes.Buffer
			err := run([]string{"-out", out}, strings.NewReader(tc.stdin), &stdout, &stderr)
			if err == nil || err.Error() != tc.want {
				t.Errorf("run: %v, want %s", err, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("%s after a failed download: %v, want none", out, err)
			}
		})
	}
}
