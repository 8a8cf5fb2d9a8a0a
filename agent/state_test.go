package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStateStore saves tunnels and loads them back: a live one is kept, an
// expired one and a corrupt file are deleted, each with an error that names
// it.
func TestStateStore(t *testing.T) {
	s := stateStore{dir: filepath.Join(t.TempDir(), "tunnels")}
	now := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	live := savedTunnel{AccessToken: "live<&>", ClientToken: "c1", Region: "us-east-1", Services: []string{"SSH", "VNC"}, Received: now.Add(-time.Hour)}
	old := savedTunnel{AccessToken: "old", ClientToken: "c2", Region: "eu-west-1", Services: []string{"SSH"}, Received: now.Add(-13 * time.Hour)}
	for _, tun := range []savedTunnel{live, old} {
		if err := s.save(tun); err != nil {
			t.Fatal(err)
		}
	}
	corrupt := s.path(tokenKey("corrupt"))
	if err := os.WriteFile(corrupt, []byte(`{"access_token":"corrupt",`), 0o600); err != nil {
		t.Fatal(err)
	}

	got, _, errs := s.load(now)
	if len(got) != 1 || !reflect.DeepEqual(got[0], live) {
		t.Errorf("load = %+v, want only %+v", got, live)
	}
	var said []string
	for _, err := range errs {
		said = append(said, err.Error())
	}
	if len(errs) != 2 || !strings.Contains(strings.Join(said, "\n"), filepath.Base(corrupt)+": unexpected end of JSON input") ||
		!strings.Contains(strings.Join(said, "\n"), "removing the saved tunnel "+fingerprint(old.AccessToken)+": received 13h0m0s ago") {
		t.Errorf("load errors = %q, want one for %s and one for the expired tunnel", said, filepath.Base(corrupt))
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != tokenKey(live.AccessToken)+".json" {
		t.Errorf("state directory holds %v, want only the live tunnel's file", ents)
	}
}

// savedTunnelFiles are the table tests' inputs and the fuzz target's seeds.
var savedTunnelFiles = []string{
	`{"access_token":"a","client_token":"c","region":"us-east-1","services":["SSH"],"received":"2026-03-01T12:00:00.123456789Z"}`,
	`{"access_token":"a\u003c\u0026","client_token":"c","region":"r","services":null,"received":"2026-03-01T12:00:00+02:00"}`,
	`{"ACCESS_TOKEN":"a","Client_Token":"c","REGION":"r","Services":[],"ReCeIvEd":"2026-03-01T12:00:00Z","extra":{"x":[1,{}]}}`,
	"{\"acce\u017fs_token\":\"long s\",\"\u212aey\":1,\"client_to\u212aen\":\"kelvin\",\"reg\u0131on\":\"dotless\",\"reg\u0130on\":\"dotted\"}",
	`{"access_token":"a","access_token":null,"region":"r","region":"s"}`,
	`{"services":["a","b"],"services":[null,null,null]}`,
	`{"services":["a","b","c"],"services":["x"],"services":[null,null]}`,
	`{"services":["a","b"],"services":[],"services":[null]}`,
	`{"services":["a"],"services":null,"services":[null]}`,
	`{"received":null}`, `{"received":"2026-03-01T12:00:00Z","received":null}`,
	`{"received":"2026-03-01T12:00:00\u005a"}`, `{"received":"2026-13-01T12:00:00Z"}`,
	`{"received":1}`, `{"received":{}}`, `{"received":""}`,
	`{"access_token":1}`, `{"access_token":true}`, `{"access_token":[]}`, `{"services":"SSH"}`,
	`{"services":[1]}`, `{"services":["a",{}]}`, `{"services":{}}`, `{"region":1,"received":"x"}`,
	`null`, `[]`, `"x"`, `1`, `true`, ``, `{`, `{"a":1}x`,
}

// A power cut while the agent saves a tunnel (writeFileAtomic: temp file,
// fsync, rename) leaves the temporary file in DataDir/tunnels. The next start
// must not keep it for ever: it holds the tunnel's access and client tokens,
// and every such crash added one more. load skipped it (its name does not end
// in .json) and nothing else removed it.
func TestStateLoadRemovesCrashTemporaries(t *testing.T) {
	s := stateStore{dir: filepath.Join(t.TempDir(), "tunnels")}
	now := time.Now()
	live := savedTunnel{AccessToken: "live", ClientToken: "c1", Region: "us-east-1", Services: []string{"SSH"}, Received: now.Add(-time.Minute)}
	if err := s.save(live); err != nil {
		t.Fatal(err)
	}
	// What a crash in the middle of a save leaves: a partial temporary file.
	tmp := filepath.Join(s.dir, "."+tokenKey("crashed")+".json.tmp1234567")
	if err := os.WriteFile(tmp, []byte(`{"access_token":"crashed","client_tok`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, _, errs := s.load(now)
	if len(got) != 1 || got[0].AccessToken != "live" {
		t.Errorf("load = %+v, want the live tunnel", got)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Errorf("the temporary file of a crashed save is still there after load: %s", filepath.Base(tmp))
	}
	var said []string
	for _, err := range errs {
		said = append(said, err.Error())
	}
	if !strings.Contains(strings.Join(said, "\n"), filepath.Base(tmp)) {
		t.Errorf("load errors = %q, want one naming %s", said, filepath.Base(tmp))
	}
}

// A save makes its temporary file in the state directory itself, under a name
// load removes after a crash. Made elsewhere (os.TempDir), its rename fails
// with EXDEV on a device whose /tmp is tmpfs, and no tunnel is ever saved;
// named otherwise, what a power cut mid-save leaves, the tunnel's tokens, is
// kept for ever. TestStateLoadRemovesCrashTemporaries writes the leftover's
// name by hand; here it is the name a save makes, seen by inotify.
func TestStateSaveTemporaryIsOneLoadRemoves(t *testing.T) {
	s := stateStore{dir: filepath.Join(t.TempDir(), "tunnels")}
	if err := os.Mkdir(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Skip("no inotify:", err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, s.dir, syscall.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	live := savedTunnel{AccessToken: "live", ClientToken: "c1", Region: "us-east-1", Services: []string{"SSH"}, Received: now.Add(-time.Minute)}
	if err := s.save(live); err != nil {
		t.Fatal(err)
	}
	// The kernel queues an event as the file is made: all are there once
	// save has returned. The rename into place is IN_MOVED_TO, not watched.
	buf := make([]byte, 4096)
	n, _ := syscall.Read(fd, buf)
	var made []string
	for off := 0; off+syscall.SizeofInotifyEvent <= n; {
		end := off + syscall.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[off+12:])) // struct inotify_event's len
		made = append(made, strings.TrimRight(string(buf[off+syscall.SizeofInotifyEvent:end]), "\x00"))
		off = end
	}
	if len(made) != 1 {
		t.Fatalf("the save made %q in the state directory, want its temporary file alone", made)
	}
	// What a crash in the middle of that save would have left.
	tmp := filepath.Join(s.dir, made[0])
	if err := os.WriteFile(tmp, []byte(`{"access_token":"live","client_tok`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, _, errs := s.load(now)
	if len(got) != 1 || got[0].AccessToken != "live" {
		t.Errorf("load = %+v, want the live tunnel", got)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Errorf("load left %s, the name of a save's temporary file: a crash mid-save would leave its tokens for ever", made[0])
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "removing "+made[0]+", left by a save that did not finish") {
		t.Errorf("load errors = %q, want one saying it removes %s", errs, made[0])
	}
}

// tokenKey names the saved tunnels' files and porthole connect's cached
// client tokens: one that changed with a new version would discard the live
// tunnels' state at the first start after an update (misnamed records), and
// connect would no longer find the client tokens it cached. Its values are
// pinned: sha256's first 12 bytes, in hex.
func TestTokenKeyStable(t *testing.T) {
	for _, tc := range []struct{ token, want string }{
		{"live", "247610f4dedd4ab7247d07db"},
		{"a-destination-token", "6acc74366f7d5c437a97f6f0"},
	} {
		if got := tokenKey(tc.token); got != tc.want {
			t.Errorf("tokenKey(%q) = %s, want %s", tc.token, got, tc.want)
		}
	}
}

// A record load cannot read is not known to be corrupt (out of descriptors,
// an I/O error of the flash): it is reported and kept for a later start, where
// it may resume its tunnel; corrupt ones are removed (TestStateStore). A
// directory stands in for it here: reading it fails as reading a file can.
func TestStateLoadKeepsWhatItCannotRead(t *testing.T) {
	s := stateStore{dir: filepath.Join(t.TempDir(), "tunnels")}
	unread := s.path(tokenKey("unread"))
	if err := os.MkdirAll(unread, 0o700); err != nil {
		t.Fatal(err)
	}
	got, _, errs := s.load(time.Now())
	if len(got) != 0 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "keeping unread tunnel state "+filepath.Base(unread)+": ") {
		t.Errorf("load = %v, %q; want nothing, and one error saying %s is kept", got, errs, filepath.Base(unread))
	}
	if _, err := os.Stat(unread); err != nil {
		t.Errorf("what load could not read is gone: %v", err)
	}
}

// load returns the saved tunnels oldest first and, among those received at the
// same time, in the state directory's order (its file names'): the order of a
// stable sort of the directory by time, whichever sort load uses.
func TestStateLoadOrder(t *testing.T) {
	s := stateStore{dir: filepath.Join(t.TempDir(), "tunnels")}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var tuns []savedTunnel
	for i, ago := range []int{3, 1, 5, 1, 3, 2, 1, 4} {
		tun := savedTunnel{AccessToken: fmt.Sprintf("token%d", i), ClientToken: "c", Region: "r", Received: now.Add(-time.Duration(ago) * time.Minute)}
		if err := s.save(tun); err != nil {
			t.Fatal(err)
		}
		tuns = append(tuns, tun)
	}
	slices.SortStableFunc(tuns, func(a, b savedTunnel) int { return strings.Compare(tokenKey(a.AccessToken), tokenKey(b.AccessToken)) })
	slices.SortStableFunc(tuns, func(a, b savedTunnel) int { return a.Received.Compare(b.Received) })
	got, expired, errs := s.load(now)
	if len(expired) != 0 || len(errs) != 0 {
		t.Fatalf("load: expired %v, errors %v; want none", expired, errs)
	}
	var gotTokens, wantTokens []string
	for _, tun := range got {
		gotTokens = append(gotTokens, tun.AccessToken)
	}
	for _, tun := range tuns {
		wantTokens = append(wantTokens, tun.AccessToken)
	}
	if !slices.Equal(gotTokens, wantTokens) {
		t.Errorf("load order = %v, want %v", gotTokens, wantTokens)
	}
}

// A save writes what it must to the flash and no more (a jffs2 or UBIFS data
// directory wears with each change): the temporary file, its data, the rename.
// It chmodded a file CreateTemp had made 0600 already, one more inode change
// per save. The file is 0600 whatever the umask.
func TestSaveWritesNoMoreThanItMust(t *testing.T) {
	dir := t.TempDir()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Skip("no inotify:", err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_ATTRIB); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0)
	err = writeFileAtomic(filepath.Join(dir, "state.json"), []byte("{}\n"))
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := syscall.Read(fd, make([]byte, 4096)); n > 0 {
		t.Errorf("a save changed a file's attributes (%d bytes of inotify IN_ATTRIB events)", n)
	}
	fi, err := os.Stat(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("saved with mode %v under umask 0, want 0600", fi.Mode().Perm())
	}
	if left, _ := os.ReadDir(dir); len(left) != 1 {
		t.Errorf("the directory holds %d entries after one save, want 1", len(left))
	}
}

// TestStateLoadDiscardsMisnamedRecord: a state file whose name is not its
// token's key (copied or renamed by hand) is discarded with an error, not
// resumed: the store finds a tunnel's file by that name, so it could never
// be removed or replaced when the tunnel ends.
func TestStateLoadDiscardsMisnamedRecord(t *testing.T) {
	s := stateStore{dir: filepath.Join(t.TempDir(), "tunnels")}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := s.save(savedTunnel{AccessToken: "a", ClientToken: "c", Region: "us-east-1", Services: []string{"SSH"}, Received: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(s.path(tokenKey("a")), s.path(tokenKey("b"))); err != nil {
		t.Fatal(err)
	}
	got, _, errs := s.load(now)
	if len(got) != 0 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "misnamed") {
		t.Fatalf("load = %+v, errors %v; want nothing and one error for the misnamed file", got, errs)
	}
	if _, err := os.Stat(s.path(tokenKey("b"))); !os.IsNotExist(err) {
		t.Errorf("misnamed file kept: %v", err)
	}
}

// A save that fails at its rename (here: the name is a directory's) says so,
// and leaves no temporary file, which holds the tunnel's tokens, behind.
func TestSaveFailureLeavesNoTemporary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.MkdirAll(filepath.Join(path, "in-the-way"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, []byte("{}\n")); err == nil {
		t.Errorf("writeFileAtomic onto a directory = nil, want its error")
	}
	if left, _ := os.ReadDir(dir); len(left) != 1 {
		t.Errorf("the directory holds %d entries after a failed save, want 1 (the directory in the way)", len(left))
	}
}

// A save that runs out of space (full flash) fails, and leaves the old file as
// it was and no temporary file: with the write's error ignored, a truncated
// file would replace the good one. A tmpfs of 16 KiB is the full disk.
func TestSaveOnFullDiskKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16k,mode=0700"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a tmpfs of 16 KiB on %s: %v; CI runs as root", dir, err)
		}
		t.Skipf("mounting a tmpfs of 16 KiB on %s: %v; run as root (CI does)", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	path := filepath.Join(dir, "state.json")
	old := []byte(`{"access_token":"old"}` + "\n")
	if err := writeFileAtomic(path, old); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, bytes.Repeat([]byte("x"), 64<<10)); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("writeFileAtomic of 64 KiB on a 16 KiB tmpfs = %v, want ENOSPC", err)
	}
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, old) {
		t.Errorf("after the failed save the file holds %d bytes (%v), want the old %d", len(b), err, len(old))
	}
	if left, _ := os.ReadDir(dir); len(left) != 1 {
		t.Errorf("the directory holds %v after a failed save, want the old file alone", left)
	}
}
