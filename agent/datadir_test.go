package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel/tunneltest/hostenv"
	"github.com/porthole-iot/porthole/sshd"
)

func TestLockDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := lockDataDir(context.Background(), dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir made with %v (%v), want 0700", fi.Mode(), err)
	}
	start := time.Now()
	_, err = lockDataDir(context.Background(), dir, 300*time.Millisecond)
	// Not a usage error (exit 1: "do not respawn"): the other agent is most
	// often one a restart or update replaces, slow to stop.
	if err == nil || errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "in use by another porthole agent (still after 300ms)") {
		t.Fatalf("second lock: %v, want a runtime error", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the lock left %d files in the data directory", len(ents))
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("second lock gave up after %v, before its wait", waited)
	}
	// The first agent leaving while the second waits lets the second in.
	go func() { time.Sleep(100 * time.Millisecond); first.Close() }()
	second, err := lockDataDir(context.Background(), dir, 5*time.Second)
	if err != nil {
		t.Fatalf("lock after the first agent left: %v", err)
	}
	second.Close()
}

// TestDataDirMadeByAnotherUserInBetween: a data_dir in a sticky directory
// (/tmp/porthole) that another user makes, or links elsewhere, between the
// agent's walk and its mkdir (EEXIST) was taken: the host key and the tunnels'
// tokens went into that user's directory. A directory removed again is no
// success either. One the agent's own user made meanwhile (keygen run by an
// installer while the agent starts; a second agent an update started) is safe,
// and taken: not a start that fails (exit 2) once.
func TestDataDirMadeByAnotherUserInBetween(t *testing.T) {
	hostenv.NeedRoot(t, "chown to another user needs root")
	sticky := filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(sticky, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(sticky, 0o777|os.ModeSticky)
	safe := t.TempDir() // root's, 0700
	for _, tc := range []struct {
		name  string
		other func(p string) error
		taken bool
	}{
		{"directory", func(p string) error {
			os.Mkdir(p, 0o700)
			return os.Chown(p, 1000, 1000)
		}, false},
		{"link to root's directory", func(p string) error {
			os.Symlink(safe, p)
			return os.Lchown(p, 1000, 1000)
		}, false},
		{"removed again", func(p string) error { return nil }, false},
		{"own directory", func(p string) error { return os.Mkdir(p, 0o700) }, true},
	} {
		dir := filepath.Join(sticky, "porthole-"+strings.Fields(tc.name)[0])
		t.Cleanup(func() { mkdir = os.Mkdir })
		mkdir = func(p string, _ os.FileMode) error {
			if err := tc.other(p); err != nil {
				t.Fatal(err)
			}
			return &os.PathError{Op: "mkdir", Path: p, Err: os.ErrExist}
		}
		f, err := lockDataDir(context.Background(), dir, 0)
		switch {
		case tc.taken && err != nil:
			t.Errorf("%s made between the walk and mkdir: %v", tc.name, err)
		case !tc.taken && err == nil:
			t.Errorf("%s made by another user between the walk and mkdir: the agent locked it", tc.name)
		}
		if err == nil {
			f.Close()
		}
		if !tc.taken {
			if err := makeDataDir(dir); err == nil {
				t.Errorf("%s made by another user between the walk and mkdir: keygen's makeDataDir took it", tc.name)
			}
		}
		os.RemoveAll(dir)
	}
}

func TestCheckDataDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := mk("ok", 0o700)
	sticky := mk("sticky", 0o777|os.ModeSticky)
	inSticky := filepath.Join(sticky, "data")
	os.Mkdir(inSticky, 0o700)
	for _, p := range []string{ok, filepath.Join(ok, "not-yet"), inSticky} {
		if err := checkDataDir(p); err != nil {
			t.Errorf("checkDataDir(%s): %v", p, err)
		}
	}
	worldWritable := mk("ww", 0o777)
	groupWritable := mk("gw", 0o770)
	under := filepath.Join(mk("open", 0o757), "data")
	os.Mkdir(under, 0o700)
	openTunnels := mk("tunnels-open", 0o700)
	if err := os.Mkdir(filepath.Join(openTunnels, "tunnels"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := checkDataDir(openTunnels); err != nil {
		t.Errorf("checkDataDir with a 0700 tunnels directory: %v", err)
	}
	os.Chmod(filepath.Join(openTunnels, "tunnels"), 0o777)
	// The sticky bit stops others renaming what is in tunnels, not their
	// adding a state file there, which the agent dials at start.
	stickyTunnels := mk("tunnels-sticky", 0o700)
	os.Mkdir(filepath.Join(stickyTunnels, "tunnels"), 0o700)
	os.Chmod(filepath.Join(stickyTunnels, "tunnels"), 0o777|os.ModeSticky)
	// A link, even to a safe directory, was "not a directory".
	linkedTunnels := mk("tunnels-link", 0o700)
	os.Symlink(mk("tunnels-elsewhere", 0o700), filepath.Join(linkedTunnels, "tunnels"))
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	for _, tc := range []struct{ path, want string }{
		{worldWritable, "writable by group or others"},
		{groupWritable, "writable by group or others"},
		{mk("ww-sticky", 0o777|os.ModeSticky), "writable by group or others"}, // sticky counts above, not for the directory itself
		{under, "open is writable by group or others"},
		{filepath.Join(ok, "missing", "deeper"), "missing does not exist"},
		{file, "is not a directory"},
		// lstat's errors other than a missing name (ENAMETOOLONG: a name past
		// NAME_MAX, 255 bytes) fail the check: the walk did not get through.
		{filepath.Join(ok, strings.Repeat("x", 300)), "data_dir: lstat " + filepath.Join(ok, strings.Repeat("x", 300)) + ": file name too long"},
		{filepath.Join(ok, strings.Repeat("x", 300), "data"), "file name too long"},
		{openTunnels, "tunnels is writable by group or others"},
		{stickyTunnels, "tunnels is writable by group or others"},
		{linkedTunnels, "tunnels is a symbolic link; it must be a directory (to keep the state elsewhere, make data_dir itself the link)"},
	} {
		if err := checkDataDir(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkDataDir(%s) = %v, want %q", tc.path, err, tc.want)
		}
	}
	// The mode as chmod takes it, sticky bit included; for a shared directory
	// such as /tmp, no chmod advice (chmod go-w /tmp breaks the system).
	for _, tc := range []struct {
		path       string
		want, dont string
	}{
		// /tmp itself, not os.TempDir(): a TMPDIR may be private (pam_tmpdir).
		{"/tmp", "(mode 1777: a shared directory, as /tmp is); the host key and tunnel tokens need a directory of their own", "chmod"},
		{mk("ww-sticky2", 0o777|os.ModeSticky), "mode 1777", "chmod"},
		{groupWritable, "(mode 0770); the host key and tunnel tokens need a directory only root or the agent's user can change (chmod go-w " + groupWritable + ")", ""},
	} {
		err := checkDataDir(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || tc.dont != "" && strings.Contains(err.Error(), tc.dont) {
			t.Errorf("checkDataDir(%s) = %v, want %q and not %q", tc.path, err, tc.want, tc.dont)
		}
	}
	// Links: the check follows them and looks at every directory on the way.
	safeTarget := mk("target", 0o700)
	openTarget := filepath.Join(mk("open-parent", 0o777), "data") // others can rename it
	os.Mkdir(openTarget, 0o700)
	linksIn := mk("links", 0o700)
	linksOpen := mk("links-open", 0o777)
	for name, target := range map[string]string{
		"to-safe": safeTarget, "to-open": openTarget, "relative": "../target",
		"rel-open": "../open-parent/data", "loop": "loop", "to-missing": filepath.Join(safeTarget, "new"),
	} {
		if err := os.Symlink(target, filepath.Join(linksIn, name)); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink(safeTarget, filepath.Join(linksOpen, "to-safe"))
	for _, p := range []string{filepath.Join(linksIn, "to-safe"), filepath.Join(linksIn, "relative"), filepath.Join(linksIn, "to-missing"), filepath.Join(linksIn, "relative", "new")} {
		if err := checkDataDir(p); err != nil {
			t.Errorf("checkDataDir(%s) through a safe link: %v", p, err)
		}
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(linksIn, "to-open"), "open-parent is writable by group or others"},
		{filepath.Join(linksIn, "rel-open"), "open-parent is writable by group or others"},
		{filepath.Join(linksOpen, "to-safe"), "links-open is writable by group or others"}, // the link itself can be swapped
		{filepath.Join(linksIn, "loop"), "too many levels of symbolic links"},
	} {
		if err := checkDataDir(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkDataDir(%s) = %v, want %q", tc.path, err, tc.want)
		}
	}
	// ".." is resolved from where the links led, as the kernel does it: the
	// directory a path ends in is the data directory, whatever its text says.
	stickySub := filepath.Join(sticky, "sub")
	os.Mkdir(stickySub, 0o700)
	os.Symlink(stickySub+"/..", filepath.Join(linksIn, "up-to-sticky"))
	os.Symlink(stickySub, filepath.Join(linksIn, "to-sticky-sub"))
	os.Mkdir(filepath.Join(sticky, "open-data"), 0o700)
	os.Chmod(filepath.Join(sticky, "open-data"), 0o777)
	t.Chdir(linksIn)
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(linksIn, "up-to-sticky"), "sticky is writable by group or others"},
		{"up-to-sticky", "sticky is writable by group or others"},
		{linksIn + "/to-sticky-sub/..", "sticky is writable by group or others"},
		{"to-sticky-sub/../open-data", "sticky/open-data is writable"}, // in the sticky directory, not links/open-data
	} {
		if err := checkDataDir(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkDataDir(%s) = %v, want %q", tc.path, err, tc.want)
		}
	}
	if os.Geteuid() == 0 {
		// A link another user owns in a sticky directory: they may replace it.
		theirs := filepath.Join(sticky, "their-link")
		os.Symlink(safeTarget, theirs)
		if err := os.Lchown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := checkDataDir(theirs); err == nil || !strings.Contains(err.Error(), "the link "+theirs+" belongs to uid 65534") {
			t.Errorf("checkDataDir(%s) = %v, want the link refused", theirs, err)
		}
		foreign := mk("foreign", 0o700)
		if err := os.Chown(foreign, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := checkDataDir(foreign); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
			t.Errorf("checkDataDir(foreign) = %v, want it refused", err)
		}
	}
}

// A data_dir that is a link to a directory not made yet (ln -s
// /overlay/porthole /var/lib/porthole, before the first start) passes the
// check, so it must also be made: its target is, the link kept (mkdir(2) on
// the link's name would fail, and the agent exit 2 at every start).
func TestDataDirLinkToMissingDirectory(t *testing.T) {
	root := t.TempDir()
	flash := filepath.Join(root, "flash")
	if err := os.Mkdir(flash, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "data")
	if err := os.Symlink(filepath.Join(flash, "porthole"), dir); err != nil {
		t.Fatal(err)
	}
	if err := checkDataDir(dir); err != nil {
		t.Fatalf("checkDataDir: %v", err)
	}
	if w := dataDirWarning(dir); w != "" {
		t.Errorf("check-config warns: %s", w)
	}
	f, err := lockDataDir(context.Background(), dir, 0)
	if err != nil {
		t.Fatalf("the agent's start: %v", err)
	}
	f.Close()
	if fi, err := os.Lstat(dir); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("data_dir is no longer the link: %v, %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(flash, "porthole")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("the link's target: %v, %v; want a directory, mode 0700", fi, err)
	}
	if _, err := HostPublicKeys(dir, nil); err != nil {
		t.Errorf("keygen: %v", err)
	}

	// A link into storage not mounted yet: the advice names what to make.
	sd := filepath.Join(root, "sd")
	dir = filepath.Join(root, "data2")
	if err := os.Symlink(filepath.Join(sd, "porthole"), dir); err != nil {
		t.Fatal(err)
	}
	err = checkDataDir(dir)
	var missing *missingAboveError
	if !errors.As(err, &missing) || !strings.Contains(err.Error(), sd+" does not exist") || !strings.HasSuffix(err.Error(), "(mkdir -p -m 700 "+sd+")") {
		t.Errorf("checkDataDir of a link below a missing directory: %v, want it missing with the advice to make %s", err, sd)
	}
}

// A data_dir on vfat mounted with the defaults keeps no file modes: the
// tunnels' tokens saved there 0600 come out 0755, readable by every local user.
// The agent warns (without SSH it ran there before, so it must not refuse). The
// kernel here has no vfat and the FUSE stand-in is in sshd's tests
// (TestHostKeyOnFileSystemWithoutModes), so the probe is checked where modes
// are kept (it finds nothing and leaves nothing), and the warning on its own.
func TestDataDirWithoutFileModesWarned(t *testing.T) {
	dir := t.TempDir()
	if m := lostMode(dir); m != 0 {
		t.Errorf("lostMode(%s) = %#o, want 0: the file system keeps modes", dir, m)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left in data_dir by the probe: %v, want nothing", entries)
	}
	// Nor a descriptor open on the removed probe: each start's warnings
	// would keep one, and on vfat its clusters, for the agent's lifetime.
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); strings.HasPrefix(target, filepath.Join(dir, ".mode-probe-")) {
			t.Errorf("descriptor %s is still open on the probe %s", fd.Name(), target)
		}
	}
	w := modesWarning(dir, 0o755)
	for _, want := range []string{"does not keep file modes", "is 0755", "readable by other local users", "fmask=0077"} {
		if !strings.Contains(w, want) {
			t.Errorf("modesWarning(%s, 0755) = %q, want %q in it", dir, w, want)
		}
	}
}

// A missing data_dir that cannot be made (its directory is on a file system
// mounted read-only) fails the start with mkdir's cause, not with "was removed
// as it was made", which sends the operator after another user. check-config
// warns of it, and of an existing read-only data_dir: with no host key the
// agent cannot start, with one it serves but cannot keep tunnels across a
// restart. Such a data_dir still takes the lock.
func TestReadOnlyDataDir(t *testing.T) {
	hostenv.NeedRoot(t, "mounting a tmpfs")
	ro := readOnlyTmpfs(t, "ro", func(ro string) {
		for _, d := range []string{"nokey", "keyed"} {
			if err := os.Mkdir(filepath.Join(ro, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(ro, "keyed", sshd.HostKeyFile), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	noKey, keyed := filepath.Join(ro, "nokey"), filepath.Join(ro, "keyed")
	missing := filepath.Join(ro, "data")
	f, err := lockDataDir(context.Background(), missing, 0)
	if want := "data_dir: mkdir " + missing + ": read-only file system"; err == nil || err.Error() != want {
		if err == nil {
			f.Close()
		}
		t.Errorf("lockDataDir(%s) = %v, want %q", missing, err, want)
	}
	for _, tc := range []struct{ dir, want string }{
		{missing, "data_dir: " + missing + " does not exist and cannot be made in " + ro + " (it is not writable: read-only file system): the agent will exit (2)"},
		{noKey, "data_dir: " + noKey + " holds no SSH host key and one cannot be made there (it is not writable: read-only file system): the agent will exit (2)"},
		{keyed, "data_dir: " + keyed + " is not writable (it is not writable: read-only file system): live tunnels cannot be saved"},
	} {
		if got := dataDirWarning(tc.dir); !strings.HasPrefix(got, tc.want) {
			t.Errorf("dataDirWarning(%s) = %q, want %q", tc.dir, got, tc.want)
		}
	}
	f, err = lockDataDir(context.Background(), keyed, 0)
	if err != nil {
		t.Fatalf("lockDataDir(%s), read-only with a host key: %v", keyed, err)
	}
	f.Close()
}

// retryFlock waits out only a lock another process holds: any other error
// (ENOLCK from a file system without locks, EBADF) is the answer at once, not
// after the whole wait (15 s at an agent's start) of a lock that will never be
// taken.
func TestRetryFlockOtherErrors(t *testing.T) {
	tries := 0
	start := time.Now()
	_, err := retryFlock(context.Background(), 5*time.Second, func() (*os.File, error) {
		tries++
		return nil, syscall.ENOLCK
	})
	if !errors.Is(err, syscall.ENOLCK) || tries != 1 {
		t.Errorf("retryFlock = %v after %d tries in %v, want ENOLCK after one", err, tries, time.Since(start))
	}
}

// /proc/self/mountinfo writes a space, tab, newline, backslash or comma in a
// path as an octal escape (\040); an overlay's upperdir is looked up by the
// path unescaped, wherever in it the escape is, its end included.
func TestUnescapeMountinfo(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`/overlay/upper`, "/overlay/upper"},
		{`/mnt/a\040b/upper`, "/mnt/a b/upper"},
		{`/mnt/upper\040`, "/mnt/upper "},
		{`\134`, `\`},
		{`/a\054b\011c\012`, "/a,b\tc\n"},
		{`/mnt/upper\04`, `/mnt/upper\04`}, // cut short: kept as it is
		{`/mnt/upper\`, `/mnt/upper\`},
		{`/mnt/up\08per`, `/mnt/up\08per`}, // not octal
	} {
		if got := unescapeMountinfo(tc.in); got != tc.want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A read-only data_dir whose host key is a link to writable storage (a
// read-only root file system, sshd's keyToMake) gets its key made there at the
// first start. check-config said the agent would exit 2 for want of a key: the
// link to nothing was taken for no key at all.
func TestReadOnlyDataDirWithLinkedHostKey(t *testing.T) {
	hostenv.NeedRoot(t, "mounting a tmpfs")
	store := t.TempDir()
	ro := readOnlyTmpfs(t, "ro", func(ro string) { linkHostKey(t, ro, store) })
	want := "data_dir: " + ro + " is not writable (it is not writable: read-only file system): live tunnels cannot be saved"
	if got := dataDirWarning(ro); !strings.HasPrefix(got, want) {
		t.Errorf("dataDirWarning(%s), host key linked to %s: %q, want %q", ro, store, got, want)
	}
	// As the warning says: the agent's start makes the key through the link.
	if _, err := HostPublicKeys(ro, nil); err != nil {
		t.Fatalf("HostPublicKeys(%s): %v, want the key made in %s", ro, err, store)
	}
	if got := dataDirWarning(ro); !strings.HasPrefix(got, want) {
		t.Errorf("dataDirWarning(%s), host key made in %s: %q, want %q", ro, store, got, want)
	}
}

// A read-only data_dir whose host key is a link into storage that is
// read-only too (the same squashfs, say) holds no key and can have none made:
// the agent exits 2 at start, as for a data_dir with no key and no link, and
// check-config says so, not that only live tunnels are lost.
func TestReadOnlyDataDirLinkedToReadOnlyStorage(t *testing.T) {
	hostenv.NeedRoot(t, "mounting a tmpfs")
	store := readOnlyTmpfs(t, "store", nil)
	ro := readOnlyTmpfs(t, "ro", func(ro string) { linkHostKey(t, ro, store) })
	if _, err := HostPublicKeys(ro, nil); err == nil {
		t.Fatalf("HostPublicKeys(%s), host key linked into read-only %s: no error, want the key refused", ro, store)
	}
	want := "data_dir: " + ro + " holds no SSH host key and one cannot be made there"
	if got := dataDirWarning(ro); !strings.HasPrefix(got, want) || !strings.Contains(got, store) {
		t.Errorf("dataDirWarning(%s), host key linked into read-only %s: %q, want %q… naming %s", ro, store, got, want, store)
	}
}

// readOnlyTmpfs mounts a tmpfs named name in a directory of the test's, lets
// fill (if not nil) put there what the test needs, remounts it read-only and
// returns where it is mounted.
func readOnlyTmpfs(t *testing.T, name string, fill func(dir string)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	mountForTest(t, "tmpfs", dir, "tmpfs", 0, "size=64k,mode=0700")
	if fill != nil {
		fill(dir)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
	return dir
}

// linkHostKey makes the host key of data_dir dir a link to the file host in
// store, which need not exist.
func linkHostKey(t *testing.T, dir, store string) {
	t.Helper()
	if err := os.Symlink(filepath.Join(store, "host"), filepath.Join(dir, sshd.HostKeyFile)); err != nil {
		t.Fatal(err)
	}
}
