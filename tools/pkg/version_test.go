package pkg

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakefileVersion: the version and build time builds carry (make version),
// from the tree's own repository, from a git archive export of it (which fills in
// .version), and from a copy of that export inside another repository (a
// firmware's, tagged with its own versions), which git describe would name. A
// VERSION in the environment changes nothing; one on the command line wins.
func TestMakefileVersion(t *testing.T) {
	for _, p := range []string{"git", "make", "tar"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("no %s: %v", p, err)
		}
	}
	root := t.TempDir()
	git := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", "-c", "safe.directory=*"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_DATE=2026-01-02T03:04:05Z", "GIT_AUTHOR_DATE=2026-01-02T03:04:05Z", "TZ=Europe/Paris")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	version := func(dir string, env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command("make", append([]string{"-s", "--no-print-directory", "version"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.Output() // stderr: the Makefile's other files are not copied
		if err != nil {
			t.Fatalf("make version in %s: %v\n%s", dir, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	repo := filepath.Join(root, "porthole")
	os.Mkdir(repo, 0o755)
	for _, f := range []string{"Makefile", ".version", ".gitattributes"} {
		b, err := os.ReadFile(filepath.Join("../..", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(repo, f), b, 0o644)
	}
	git(repo, "init", "-q")
	git(repo, "add", ".")
	git(repo, "commit", "-q", "-m", "one")
	git(repo, "tag", "v9.8.7")
	const release = "v9.8.7 2026-01-02T03:04:05Z"
	if got := version(repo, nil); got != release {
		t.Errorf("in the repository: %q, want %q", got, release)
	}
	if got := version(repo, []string{"VERSION=from-the-environment"}); got != release {
		t.Errorf("with VERSION in the environment: %q, want %q", got, release)
	}
	if got := version(repo, nil, "VERSION=1.2.0"); got != "1.2.0 2026-01-02T03:04:05Z" {
		t.Errorf("with VERSION=1.2.0 given: %q", got)
	}
	os.WriteFile(filepath.Join(repo, "new.go"), nil, 0o644)
	if got := version(repo, nil); got != "v9.8.7-dirty 2026-01-02T03:04:05Z" {
		t.Errorf("with an untracked file: %q, want -dirty", got)
	}
	os.Remove(filepath.Join(repo, "new.go"))

	// A firmware repository with its own tags, holding the export.
	fw := filepath.Join(root, "firmware")
	export := filepath.Join(fw, "package", "porthole", "src")
	os.MkdirAll(export, 0o755)
	git(fw, "init", "-q")
	os.WriteFile(filepath.Join(fw, "README"), nil, 0o644)
	git(fw, "add", ".")
	git(fw, "commit", "-q", "-m", "fw")
	git(fw, "tag", "v1.0")
	exportArchive := func() {
		t.Helper()
		archive := exec.Command("sh", "-c", `git -c safe.directory='*' archive HEAD | tar -x -C "$0"`, export)
		archive.Dir = repo
		if out, err := archive.CombinedOutput(); err != nil {
			t.Fatalf("git archive: %v\n%s", err, out)
		}
	}
	exportArchive()
	if got := version(export, nil); got != release {
		t.Errorf("from git archive, in another repository: %q, want %q", got, release)
	}
	if got := version(export, []string{"SOURCE_DATE_EPOCH=86400"}); got != "v9.8.7 1970-01-02T00:00:00Z" {
		t.Errorf("from git archive with SOURCE_DATE_EPOCH: %q", got)
	}
	// A copy of a checkout (its .version not filled in) is no release.
	b, _ := os.ReadFile(filepath.Join(repo, ".version"))
	os.WriteFile(filepath.Join(export, ".version"), b, 0o644)
	if got := version(export, nil); got != "dev" {
		t.Errorf("a copied checkout in another repository: %q, want dev", got)
	}
	// git before 2.32 leaves %(describe…) as it is: the commit then.
	os.WriteFile(filepath.Join(export, ".version"), []byte("%(describe:tags)\nabc1234\n86400\n"), 0o644)
	if got := version(export, nil); got != "abc1234 1970-01-02T00:00:00Z" {
		t.Errorf("an export by a git without %%(describe): %q, want the commit", got)
	}
	git(repo, "tag", "-d", "v9.8.7")
	commit := git(repo, "rev-parse", "--short", "HEAD")
	os.RemoveAll(export)
	os.MkdirAll(export, 0o755)
	exportArchive()
	if got := version(export, nil); got != commit+" 2026-01-02T03:04:05Z" {
		t.Errorf("git archive of an untagged commit: %q, want %s and its time", got, commit)
	}
}
