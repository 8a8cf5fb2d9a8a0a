package sshd

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

func TestHostKeyCreatedOnceAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s1, _, err := hostSigners(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, HostKeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("host key mode = %v, want 0600", fi.Mode().Perm())
	}
	// The directory the server made for it is private too: the agent's
	// tunnel tokens go there.
	if fi, err := os.Stat(dir); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory made with mode %v, want 0700", fi.Mode().Perm())
	}
	if s1[0].PublicKey().Type() != gossh.KeyAlgoED25519 {
		t.Errorf("host key type = %s, want ed25519", s1[0].PublicKey().Type())
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if want := string(gossh.MarshalAuthorizedKey(s1[0].PublicKey())); string(pub) != want {
		t.Errorf(".pub = %q, want %q", pub, want)
	}
	before, _ := os.ReadFile(path)
	s2, _, err := hostSigners(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !keysEqual(s1[0].PublicKey(), s2[0].PublicKey()) {
		t.Error("second start made a new host key")
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Error("host key file rewritten")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// TestHostKeyMadeOnceByRacingProcesses: porthole keygen takes no lock (the
// agent holds the data directory's while it runs), so on a first boot it may
// make the host key while the starting agent does. Every process must end up
// with the one key on disk (and its .pub), or keygen prints a fingerprint the
// agent never presents, or the agent serves a key its next start replaces.
func TestHostKeyMadeOnceByRacingProcesses(t *testing.T) {
	for round := range 20 {
		dir := filepath.Join(t.TempDir(), "state")
		const n = 8
		got := make([]gossh.PublicKey, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				s, _, err := hostSigners(dir, nil, nil)
				if err != nil {
					t.Error(err)
					return
				}
				got[i] = s[0].PublicKey()
			})
		}
		wg.Wait()
		disk, err := readDataDirKey(filepath.Join(dir, HostKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := os.ReadFile(filepath.Join(dir, HostKeyFile+".pub"))
		if want := string(gossh.MarshalAuthorizedKey(disk.PublicKey())); string(pub) != want {
			t.Fatalf("round %d: .pub = %q, the key on disk is %q", round, pub, want)
		}
		for i, k := range got {
			if k == nil || !keysEqual(k, disk.PublicKey()) {
				t.Fatalf("round %d: process %d serves a host key that is not the one on disk", round, i)
			}
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 2 {
			t.Fatalf("round %d: data directory holds %d files, want the key and its .pub", round, len(entries))
		}
	}
}

// TestHostKeyThroughDanglingLink: a firmware with a read-only root file
// system links the host key to writable storage, and the first start makes it
// there. It passed the check, and then failed every start ("file exists",
// then "no such file or directory"): link(2) does not follow the link. A
// target in a directory others could write, one with ".." (which the kernel
// takes from the link's real directory) or a link to a link is refused by the
// check and the start alike (ErrHostKey); one whose directory is not there yet
// (storage mounted later) may pass: not ErrHostKey, and nothing is made.
func TestHostKeyThroughDanglingLink(t *testing.T) {
	const (
		made    = "made"
		refused = "refused"
		later   = "later"
	)
	for _, tc := range []struct {
		name   string
		target string // the link's; STORE is a directory of the test's, 0700
		setup  func(dir, store string)
		want   string // made, refused or later
		why    string // what a refusal says
	}{
		{name: "absolute", target: "STORE/host", want: made},
		{name: "relative", target: "keys/host", want: made,
			setup: func(dir, _ string) { os.Mkdir(filepath.Join(dir, "keys"), 0o700) }},
		{name: "relative with ..", target: "../keys/host", want: refused, why: "give the link an absolute target"},
		{name: "directory others may write", target: "STORE/host", want: refused, why: "bad modes of ",
			setup: func(_, store string) { os.Chmod(store, 0o1777) }},
		{name: "a link to a link to nothing", target: "STORE/host", want: refused, why: "a link to nothing",
			setup: func(_, store string) { os.Symlink(filepath.Join(store, "elsewhere"), filepath.Join(store, "host")) }},
		{name: "directory not there yet", target: "STORE/later/host", want: later},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, store := t.TempDir(), t.TempDir()
			if tc.setup != nil {
				tc.setup(dir, store)
			}
			target := strings.Replace(tc.target, "STORE", store, 1)
			link := filepath.Join(dir, HostKeyFile)
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			_, checkErr := CheckHostKeys(dir, nil)
			signers, _, startErr := hostSigners(dir, nil, nil)
			for _, err := range []error{checkErr, startErr} {
				switch tc.want {
				case refused:
					if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), link+": a symbolic link to "+target) || !strings.Contains(err.Error(), tc.why) {
						t.Errorf("CheckHostKeys, hostSigners = %v, %v; want ErrHostKey naming the link, its target and %q", checkErr, startErr, tc.why)
					}
				case later:
					if errors.Is(err, ErrHostKey) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), link+" is a symbolic link to "+target) {
						t.Errorf("CheckHostKeys, hostSigners = %v, %v; want an error that may pass (fs.ErrNotExist, not ErrHostKey) naming the link and its target", checkErr, startErr)
					}
				default:
					if err != nil {
						t.Errorf("CheckHostKeys, hostSigners = %v, %v; want the key made at the link's target", checkErr, startErr)
					}
				}
			}
			if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Errorf("the link %s was replaced (%v)", link, err)
			}
			if tc.want != made {
				if _, err := os.Stat(link); err == nil {
					t.Errorf("a refused start made a key at %s", target)
				}
				return
			}
			if startErr != nil {
				return
			}
			key, err := readDataDirKey(link)
			if err != nil || !keysEqual(key.PublicKey(), signers[0].PublicKey()) {
				t.Fatalf("the key read through the link (%v) is not the one served", err)
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(dir, target)
			}
			if pub, err := os.ReadFile(target + ".pub"); err != nil || string(pub) != string(gossh.MarshalAuthorizedKey(key.PublicKey())) {
				t.Errorf("%s.pub: %q %v, want the key's public half next to it", target, pub, err)
			}
			again, _, err := hostSigners(dir, nil, nil)
			if err != nil || !keysEqual(again[0].PublicKey(), key.PublicKey()) {
				t.Errorf("the next start: %v, or another key than the one made", err)
			}
		})
	}
	// Made once through the link by processes racing at the first start
	// (TestHostKeyMadeOnceByRacingProcesses): one that finds the target
	// made since its read takes it, and refuses nothing.
	for round := range 10 {
		dir, store := t.TempDir(), t.TempDir()
		os.Symlink(filepath.Join(store, "host"), filepath.Join(dir, HostKeyFile))
		got := make([]gossh.PublicKey, 8)
		var wg sync.WaitGroup
		for i := range got {
			wg.Go(func() {
				if s, _, err := hostSigners(dir, nil, nil); err != nil {
					t.Errorf("round %d: %v", round, err)
				} else {
					got[i] = s[0].PublicKey()
				}
			})
		}
		wg.Wait()
		for i, k := range got {
			if k == nil || !keysEqual(k, got[0]) {
				t.Fatalf("round %d: process %d serves another host key than process 0", round, i)
			}
		}
	}
}

func TestHostKeyErrorsKeepTheFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"corrupt", "-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n", 0o600, "remove it"},
		{"empty", "", 0o600, "remove it"},
		{"too open", "whatever", 0o644, "too open"},
		{"group-readable", "whatever", 0o640, "too open"}, // OpenSSH refuses any of 077 too
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, HostKeyFile)
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tc.mode)
			_, _, err := hostSigners(dir, nil, nil)
			if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("hostSigners = %v, want ErrHostKey mentioning %q", err, tc.want)
			}
			if got, _ := os.ReadFile(path); string(got) != tc.content {
				t.Error("unusable host key file was replaced")
			}
		})
	}
}

func TestHostKeyWrongTypeInDataDir(t *testing.T) {
	dir := t.TempDir()
	writePrivateKey(t, filepath.Join(dir, HostKeyFile))
	if _, _, err := hostSigners(dir, nil, nil); !errors.Is(err, ErrHostKey) {
		t.Fatalf("ecdsa key as the ed25519 host key: %v, want ErrHostKey", err)
	}
}

// writePrivateKey writes a fresh ECDSA private key to path (0600) and returns
// its public half.
func writePrivateKey(t *testing.T, path string) gossh.PublicKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return writeKey(t, path, k)
}

// writeEd25519Key is writePrivateKey with an ed25519 key.
func writeEd25519Key(t *testing.T, path string) gossh.PublicKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return writeKey(t, path, k)
}

// writeKey writes the private key k to path (0600) in OpenSSH's format and
// returns its public half.
func writeKey(t *testing.T, path string, k crypto.Signer) gossh.PublicKey {
	t.Helper()
	block, err := gossh.MarshalPrivateKey(k, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := gossh.NewPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestExtraHostKeys(t *testing.T) {
	dir := t.TempDir()
	extra := filepath.Join(dir, "ecdsa_key")
	want := writePrivateKey(t, extra)
	signers, _, err := hostSigners(filepath.Join(dir, "data"), []string{extra}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(signers) != 2 || !keysEqual(signers[1].PublicKey(), want) {
		t.Fatalf("signers = %d, want ed25519 + the extra ecdsa key", len(signers))
	}
	only, _, err := hostSigners("", []string{extra}, nil)
	if err != nil || len(only) != 1 {
		t.Fatalf("extra key only: %v, %d", err, len(only))
	}
	if _, _, err := hostSigners("", []string{filepath.Join(dir, "missing")}, nil); err == nil {
		t.Error("missing extra key file accepted")
	}
	if _, _, err := hostSigners("", nil, nil); err == nil {
		t.Error("no host key at all accepted")
	}
	// One key of each type, the last, as x/crypto presents them: PublicKeys
	// (keygen, the start's log line) named the data directory's ed25519 key
	// while an extra one was presented, and operators pinned the wrong one.
	ed := filepath.Join(dir, "ed25519_key")
	edPub := writeEd25519Key(t, ed)
	extra2 := filepath.Join(dir, "ecdsa_key2")
	want2 := writePrivateKey(t, extra2)
	s := &Server{DataDir: filepath.Join(dir, "data"), HostKeyFiles: []string{ed, extra, extra2}}
	keys, err := s.PublicKeys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !keysEqual(keys[0], edPub) || !keysEqual(keys[1], want2) {
		t.Fatalf("PublicKeys with extra ed25519, ecdsa, ecdsa: %d keys; want the extra ed25519 and the second ecdsa", len(keys))
	}
	var presented gossh.PublicKey
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Close()
	gossh.Dial("tcp", ln.Addr().String(), &gossh.ClientConfig{User: "x", HostKeyAlgorithms: []string{gossh.KeyAlgoED25519}, Timeout: 5 * time.Second,
		HostKeyCallback: func(_ string, _ net.Addr, k gossh.PublicKey) error { presented = k; return errors.New("enough") }})
	if presented == nil || !keysEqual(presented, edPub) {
		t.Fatalf("the server presents another ed25519 key than PublicKeys names")
	}
}

func TestZeroServerRefusesToStart(t *testing.T) {
	var s Server
	if _, err := s.PublicKeys(); err == nil {
		t.Fatal("zero Server started without a host key")
	}
}

func TestHostKeyNotRegular(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra bool // an extra HostKeyFiles entry, else the key in DataDir
	}{
		{"FIFO in DataDir", false},
		{"FIFO in HostKeyFiles", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, HostKeyFile)
			s := &Server{DataDir: dir}
			if tc.extra {
				path = filepath.Join(dir, "extra_key")
				s.HostKeyFiles = []string{path}
			}
			opened := mkfifo(t, path)
			_, err := s.PublicKeys()
			if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "not a regular file but a named pipe") {
				t.Errorf("PublicKeys with a FIFO host key = %v, want ErrHostKey saying it is a named pipe", err)
			}
			if opened() {
				t.Error("the FIFO host key was opened for reading; want it refused unopened")
			}
			if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeNamedPipe {
				t.Errorf("the FIFO was replaced: %v, %v", fi, err)
			}
		})
	}
}

func TestHostKeyErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		name string
		// make sets up the server's key files in dir.
		make     func(t *testing.T, s *Server, dir string)
		operator bool // the error must wrap ErrHostKey
	}{
		{"too open", func(t *testing.T, s *Server, dir string) {
			writeFile(t, filepath.Join(dir, HostKeyFile), "whatever")
		}, true},
		{"garbage", func(t *testing.T, s *Server, dir string) {
			os.WriteFile(filepath.Join(dir, HostKeyFile), []byte("garbage"), 0o600)
		}, true},
		{"too large", func(t *testing.T, s *Server, dir string) {
			os.WriteFile(filepath.Join(dir, HostKeyFile), make([]byte, maxHostKeyFile+1), 0o600)
		}, true},
		{"directory", func(t *testing.T, s *Server, dir string) {
			os.Mkdir(filepath.Join(dir, HostKeyFile), 0o700)
		}, true},
		{"garbage in HostKeyFiles", func(t *testing.T, s *Server, dir string) {
			p := filepath.Join(dir, "extra")
			os.WriteFile(p, []byte("garbage"), 0o600)
			s.HostKeyFiles = []string{p}
		}, true},
		// /proc/self/mem is a regular file of mode 0600 whose first bytes
		// cannot be read (EIO): an I/O error, which may pass.
		{"I/O error reading the key in DataDir", func(t *testing.T, s *Server, dir string) {
			if err := os.Symlink("/proc/self/mem", filepath.Join(dir, HostKeyFile)); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"I/O error reading HostKeyFiles", func(t *testing.T, s *Server, dir string) {
			s.HostKeyFiles = []string{"/proc/self/mem"}
		}, false},
		// The server never makes these files, but one by an absolute path
		// may be on storage mounted later in boot (/persist): a restart may
		// find it. By a relative path it is read from another working
		// directory than meant, which no restart mends; and the others are
		// read all the same, so a file that needs an operator is said first.
		{"HostKeyFiles entry not there yet", func(t *testing.T, s *Server, dir string) {
			s.HostKeyFiles = []string{filepath.Join(dir, "missing")}
		}, false},
		{"HostKeyFiles entry missing by a relative path", func(t *testing.T, s *Server, dir string) {
			s.HostKeyFiles = []string{"porthole-test-missing-key"}
		}, true},
		{"HostKeyFiles entry not there yet, then garbage", func(t *testing.T, s *Server, dir string) {
			p := filepath.Join(dir, "extra")
			os.WriteFile(p, []byte("garbage"), 0o600)
			s.HostKeyFiles = []string{filepath.Join(dir, "missing"), p}
		}, true},
		{"DataDir cannot be made", func(t *testing.T, s *Server, dir string) {
			s.DataDir = "/proc/self/porthole-test"
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := &Server{DataDir: dir}
			tc.make(t, s, dir)
			_, err := s.PublicKeys()
			if err == nil {
				t.Fatal("PublicKeys succeeded")
			}
			if errors.Is(err, ErrHostKey) != tc.operator {
				t.Errorf("PublicKeys = %v; wraps ErrHostKey: %v, want %v", err, !tc.operator, tc.operator)
			}
		})
	}
}

// A power cut (or a full disk) after the host key is in place and before its
// .pub is written leaves the key without its public half. The key is read at
// every start after that, and its .pub was never made: the file the package
// promises next to the key is missing for good.
func TestHostKeyPubMadeAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s, _, err := hostSigners(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, HostKeyFile)
	os.Remove(path + ".pub") // the crash: the key linked, its .pub not yet written
	if _, _, err := hostSigners(dir, nil, nil); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatalf("the next start does not write the missing .pub: %v", err)
	}
	if want := string(gossh.MarshalAuthorizedKey(s[0].PublicKey())); string(pub) != want {
		t.Errorf(".pub = %q, want %q", pub, want)
	}
}

// The error for an unusable key says "remove it to make a new key". An
// operator removes the private key, its .pub (of the old key) stays, and the
// start that makes the new key is cut (power, SIGKILL, a full disk) after the
// key is linked and before the .pub is replaced: the .pub named the old key
// for good, as only a missing .pub was mended, while the server presented
// the new one. It is rewritten with a warning naming it (not the keys); a
// .pub of the served key with a comment (ssh-keygen -y's) is left as it is.
func TestHostKeyStalePubRewritten(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, HostKeyFile)
	if _, _, err := hostSigners(dir, nil, nil); err != nil { // key A and A.pub
		t.Fatal(err)
	}
	oldPub, _ := os.ReadFile(path + ".pub")
	// Key B, made in another directory, beside A's .pub: what the cut leaves.
	other := t.TempDir()
	if _, _, err := hostSigners(other, nil, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(other, HostKeyFile))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	log, lw := newTestLogger(t)
	s, _, err := hostSigners(dir, nil, log) // the next start
	if err != nil {
		t.Fatal(err)
	}
	want := gossh.MarshalAuthorizedKey(s[0].PublicKey())
	if pub, _ := os.ReadFile(path + ".pub"); string(pub) != string(want) {
		t.Errorf("after the restart .pub = %q (the old key: %v), want the served key %q", pub, string(pub) == string(oldPub), want)
	}
	if len(lw.logged("level=WARN", path+".pub")) != 1 {
		t.Errorf("no warning naming %s.pub", path)
	}
	for _, k := range [][]byte{oldPub, want} {
		if f := strings.Fields(string(k)); len(lw.logged(f[1])) != 0 {
			t.Errorf("a host public key is in the log")
		}
	}
	// The served key's .pub with a comment stays.
	commented := strings.TrimSuffix(string(want), "\n") + " root@router\n"
	writeFile(t, path+".pub", commented)
	if _, _, err := hostSigners(dir, nil, log); err != nil {
		t.Fatal(err)
	}
	if pub, _ := os.ReadFile(path + ".pub"); string(pub) != commented || len(lw.logged("level=WARN")) != 1 {
		t.Errorf("a .pub of the served key with a comment: now %q, %d warnings; want it kept, no new warning", pub, len(lw.logged("level=WARN"))-1)
	}
}

// TestHostKeyPubNextToLinkedKey: a key made at a link's target has its .pub
// next to it, at the target, where the first start wrote it. The next start
// mended the .pub at the link's name instead: data_dir got a second .pub, a
// regular file that nothing kept in step with the key (it stayed when the
// key at the target was replaced), and the target's own .pub, missing after a
// crash or naming a key removed before, was never mended. The .pub is mended
// at the target, under keyToMake's rules (not in a directory others may
// write); nothing is written at the link's name, which an operator may link
// to the target's .pub as well.
func TestHostKeyPubNextToLinkedKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pubLink bool        // data_dir's .pub is a link to STORE/host.pub
		store   os.FileMode // STORE's mode after the first start
	}{
		{name: "the key linked", store: 0o700},
		{name: "the key and its .pub linked", pubLink: true, store: 0o700},
		{name: "a target others may write", store: 0o777},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, store := t.TempDir(), t.TempDir()
			link, target := filepath.Join(dir, HostKeyFile), filepath.Join(store, "host")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			if tc.pubLink {
				if err := os.Symlink(target+".pub", link+".pub"); err != nil {
					t.Fatal(err)
				}
			}
			s, _, err := hostSigners(dir, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			os.Chmod(store, tc.store)
			want := string(gossh.MarshalAuthorizedKey(s[0].PublicKey()))
			other := string(gossh.MarshalAuthorizedKey(newSigner(t).PublicKey()))
			log, lw := newTestLogger(t)
			for _, crash := range []struct {
				name string
				pub  func() // what the crash left of the target's .pub
			}{
				{"none", func() {}},
				{".pub not written", func() { os.Remove(target + ".pub") }},
				{".pub of a key removed before", func() { writeFile(t, target+".pub", other) }},
			} {
				crash.pub()
				if _, _, err := hostSigners(dir, nil, log); err != nil {
					t.Fatalf("%s: the next start: %v", crash.name, err)
				}
				// The first start wrote it; a start mends it only where
				// keyToMake would make the key.
				wantMended := crash.name == "none" || tc.store == 0o700
				if pub, err := os.ReadFile(target + ".pub"); (string(pub) == want) != wantMended {
					t.Errorf("%s: %s.pub = %q %v; want the served key's: %v", crash.name, target, pub, err, wantMended)
				}
				got := "nothing"
				if fi, err := os.Lstat(link + ".pub"); err == nil {
					got = fi.Mode().String()
				}
				if wantGot := map[bool]string{false: "nothing", true: "Lrwxrwxrwx"}[tc.pubLink]; got != wantGot {
					t.Errorf("%s: at the link's name %s.pub: %s, want %s", crash.name, link, got, wantGot)
				}
			}
			if warned := len(lw.logged("level=WARN", target+".pub")); warned != 1 && tc.store == 0o700 {
				t.Errorf("%d warnings naming %s.pub, want 1", warned, target)
			}
		})
	}
}

// A power cut while the host key is made leaves its temporary file: a private
// key (the one linked into place, or one never used). Nothing removed it, at
// that start or any later one; nor one dated in the future, as a crash's file
// is at each start of a router without an RTC (its clock at 1970 or the last
// saved time until NTP answers). A key made at a link's target
// (TestHostKeyThroughDanglingLink) leaves them in the target's directory,
// where only data_dir's were removed: they stayed for ever. They are removed
// there too, under keyToMake's rules: not in a directory others may write,
// nor through a link to a link. In either directory a file being written now
// (young), a link with a temporary file's name and others' files stay.
func TestHostKeyCrashTemporariesRemoved(t *testing.T) {
	for _, tc := range []struct {
		name   string
		linked bool        // the key is a link to STORE/host
		store  os.FileMode // STORE's mode after the first start
		kept   bool        // the crash's files stay
	}{
		{name: "in data_dir"},
		{name: "at the link's target", linked: true, store: 0o700},
		{name: "at a target others may write", linked: true, store: 0o777, kept: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, store := t.TempDir(), t.TempDir()
			path, keyDir, base := filepath.Join(dir, HostKeyFile), dir, HostKeyFile
			if tc.linked {
				keyDir, base = store, "host"
				if err := os.Symlink(filepath.Join(store, "host"), path); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := hostSigners(dir, nil, nil); err != nil {
				t.Fatal(err)
			}
			if tc.store != 0 {
				os.Chmod(store, tc.store)
			}
			leftover := func(name string) string { return filepath.Join(keyDir, "."+base+name) }
			left := leftover(".tmp-123456")
			if err := os.Link(filepath.Join(keyDir, base), left); err != nil { // crash after the link, before the unlink
				t.Fatal(err)
			}
			old := time.Now().Add(-time.Hour)
			os.Chtimes(left, old, old)
			ahead := leftover(".pub.tmp-654321")
			writeFile(t, ahead, "x")
			later := time.Now().AddDate(1, 0, 0) // written under a clock a year ahead of this start's
			os.Chtimes(ahead, later, later)
			stay := []string{leftover(".tmp-000001"), filepath.Join(keyDir, ".other.tmp-123456")}
			writeFile(t, stay[0], "x") // a process writing the key now
			writeFile(t, stay[1], "x")
			os.Chtimes(stay[1], old, old)
			stay = append(stay, leftover(".tmp-000002"))
			if err := os.Symlink(filepath.Join(t.TempDir(), "elsewhere"), stay[2]); err != nil {
				t.Fatal(err)
			}
			if _, _, err := hostSigners(dir, nil, nil); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{left, ahead} {
				if _, err := os.Lstat(p); (err == nil) != tc.kept {
					t.Errorf("temporary file of a crashed key write %s: there %v, want %v", p, err == nil, tc.kept)
				}
			}
			for _, p := range stay {
				if _, err := os.Lstat(p); err != nil {
					t.Errorf("%s was removed: %v", p, err)
				}
			}
		})
	}
}

// A data directory on vfat mounted with the defaults (an SD card's FAT
// partition, a Raspberry Pi's /boot) cannot hold mode 0600: chmod succeeds and
// changes nothing, and every file is 0755. A key made there was served at the
// first start and refused as too open at the next (ErrHostKey, for good, and
// chmod 600 cannot mend it), world-readable meanwhile. It is refused at once,
// saying what to do, and nothing is left behind. So is one mounted with a
// mask that still lets the group read (fmask=0027: every file 0750).
func TestHostKeyOnFileSystemWithoutModes(t *testing.T) {
	for _, perm := range []uint32{0o755, 0o750} {
		t.Run(fmt.Sprintf("%#o", perm), func(t *testing.T) {
			dir := filepath.Join(mountFakeFAT(t, perm), "porthole")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			_, _, err := hostSigners(dir, nil, nil)
			if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "does not keep file modes") || !strings.Contains(err.Error(), "fmask=0077") {
				t.Errorf("hostSigners on vfat = %v, want ErrHostKey saying the file system does not keep file modes and to mount it with fmask=0077", err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("left in the data directory: %v, want nothing", entries)
			}
		})
	}
}

// writeRSAKey is writePrivateKey with an RSA key of bits bits, in PKCS#1 PEM
// (as openssl genrsa -traditional writes it).
func writeRSAKey(t *testing.T, path string, bits int) gossh.PublicKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := gossh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestRSAHostKeySignsWithSHA2Only: an RSA key in HostKeyFiles (the
// documented way to keep a device's existing identity) signs the key exchange
// with rsa-sha2-512 or rsa-sha2-256, as OpenSSH 8.8+ does, never with ssh-rsa
// (SHA-1), which x/crypto offered for it too.
func TestRSAHostKeySignsWithSHA2Only(t *testing.T) {
	var pub gossh.PublicKey
	e := newEnv(t, func(e *testEnv, s *Server) {
		p := filepath.Join(e.dir, "rsa_key")
		pub = writeRSAKey(t, p, 2048)
		s.HostKeyFiles = []string{p}
	})
	for _, algo := range []string{gossh.KeyAlgoRSA, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSASHA512} {
		var presented gossh.PublicKey
		err := dialAlgorithms(e, func(c *gossh.ClientConfig) {
			c.HostKeyAlgorithms = []string{algo}
			c.HostKeyCallback = func(_ string, _ net.Addr, k gossh.PublicKey) error { presented = k; return nil }
		})
		if algo == gossh.KeyAlgoRSA {
			if err == nil || !strings.Contains(err.Error(), "no common algorithm") {
				t.Errorf("client asking for ssh-rsa host signatures: %v, want no common algorithm", err)
			}
			continue
		}
		if err != nil || presented == nil || !keysEqual(presented, pub) {
			t.Errorf("client asking for %s: %v; want the RSA host key", algo, err)
		}
	}
}

// TestSmallRSAHostKeyNotServed: an RSA host key under 1024 bits
// (testdata/rsa768_host_key, openssl genrsa -traditional 768) passed the
// checks and was served, but crypto/rsa refuses to sign with it, so every
// client that picked it failed with "handshake failed: EOF", the cause only
// at debug. It is now left out with a warning naming the file, and the server
// starts with its other keys; CheckHostKeys names it and passes. With no other
// key (no DataDir) it is served as before rather than refused.
func TestSmallRSAHostKeyNotServed(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "rsa768_host_key"))
	if err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(t.TempDir(), "rsa768_host_key")
	if err := os.WriteFile(small, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(_ *testEnv, s *Server) { s.HostKeyFiles = []string{small} })
	if keys, err := e.srv.PublicKeys(); err != nil || len(keys) != 1 || keys[0].Type() != gossh.KeyAlgoED25519 {
		t.Errorf("PublicKeys = %d keys, %v; want data_dir's ed25519 key alone", len(keys), err)
	}
	if len(e.logs.logged("level=WARN", "host key not served", "1024 bits", "file="+small)) == 0 {
		t.Error("no warning naming the file that is not served")
	}
	err = dialAlgorithms(e, func(c *gossh.ClientConfig) { c.HostKeyAlgorithms = []string{gossh.KeyAlgoRSASHA256} })
	if err == nil || !strings.Contains(err.Error(), "no common algorithm") {
		t.Errorf("client asking for an RSA host key: %v, want no common algorithm (the key is not offered)", err)
	}
	if err := dialAlgorithms(e, func(*gossh.ClientConfig) {}); err != nil {
		t.Errorf("client with the defaults: %v", err)
	}
	notServed, err := CheckHostKeys("", []string{small})
	if err != nil || len(notServed) != 1 || !strings.Contains(notServed[0], small+": not served") {
		t.Errorf("CheckHostKeys = %q, %v; want it named, no error", notServed, err)
	}
	for _, bits := range []int{1024, 2048} { // smallRSA's bound is crypto/rsa's
		k, _ := rsa.GenerateKey(rand.Reader, bits)
		if s, _ := gossh.NewSignerFromKey(k); smallRSA(s) {
			t.Errorf("a %d-bit RSA key taken as under 1024 bits", bits)
		}
	}
	alone, notServed, err := hostSigners("", []string{small}, nil)
	if err != nil || len(alone) != 1 || notServed != nil {
		t.Errorf("the small key alone: %d keys, %q, %v; want it served as before", len(alone), notServed, err)
	}
}

// A full disk while the host key's .pub is written: the first start, which
// has the key in place, goes on with a warning (it failed, while the next
// start read the key and went on with no .pub and not a word); a start that
// finds a .pub naming another key says it could not rewrite it (it said
// "rewritten"), and one that finds none says it could not write it.
func TestHostKeyPubOnFullDisk(t *testing.T) {
	dir := smallDisk(t)
	path := filepath.Join(dir, HostKeyFile)
	// fill leaves room for the key (one page) and none for its .pub.
	fill := func(leave int) {
		t.Helper()
		os.Remove(filepath.Join(dir, "filler"))
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := int(st.Bavail)*int(st.Bsize) - leave*int(st.Bsize)
		if err := os.WriteFile(filepath.Join(dir, "filler"), make([]byte, free), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fill(1)
	log, lw := newTestLogger(t)
	s, _, err := hostSigners(dir, nil, log)
	if err != nil {
		t.Fatalf("first start with room for the key only: %v", err)
	}
	if _, err := os.Stat(path + ".pub"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s.pub: %v, want none on the full disk", path, err)
	}
	if got := lw.logged("cannot write the host key's .pub", "no space left"); len(got) != 1 {
		t.Errorf("first start logged %q, want the .pub not written and why", got)
	}
	if _, _, err := hostSigners(dir, nil, log); err != nil {
		t.Fatal(err)
	}
	if got := lw.logged("the host key's .pub is missing and cannot be written", "no space left"); len(got) != 1 {
		t.Errorf("next start logged %q, want the missing .pub said", got)
	}

	// A .pub of another key, then the disk full again.
	os.Remove(filepath.Join(dir, "filler"))
	if err := os.WriteFile(path+".pub", []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fill(0)
	if _, _, err := hostSigners(dir, nil, log); err != nil {
		t.Fatal(err)
	}
	if got := lw.logged("rewritten"); len(got) != 1 || !strings.Contains(got[0], "cannot be rewritten") {
		t.Errorf("stale .pub on a full disk logged %q, want it said not rewritten", got)
	}
	// Space again: the .pub is the served key's.
	os.Remove(filepath.Join(dir, "filler"))
	if _, _, err := hostSigners(dir, nil, log); err != nil {
		t.Fatal(err)
	}
	if pub, _ := os.ReadFile(path + ".pub"); string(pub) != string(gossh.MarshalAuthorizedKey(s[0].PublicKey())) {
		t.Errorf(".pub with space again = %q, want the served key's", pub)
	}
}

// TestDropbearHostKeyNamesTheConversion: a firmware moving from Dropbear that
// keeps its host key (ssh.host_keys = /etc/dropbear/dropbear_ed25519_host_key)
// got x/crypto's "ssh: no key found" alone; the error names dropbearconvert.
// The file is shaped as Dropbear's: binary, the key type length-prefixed.
func TestDropbearHostKeyNamesTheConversion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dropbear_ed25519_host_key")
	key := append([]byte("\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x40"), make([]byte, 64)...)
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := hostSigners("", []string{path}, nil)
	if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "dropbearconvert dropbear openssh") {
		t.Fatalf("a Dropbear host key: %v, want ErrHostKey naming dropbearconvert", err)
	}
}

// TestEncryptedHostKeyNotDropbear: the refusal of a host key with a
// passphrase says so, and does not send its reader to dropbearconvert.
func TestEncryptedHostKeyNotDropbear(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKeyWithPassphrase(k, "", []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	enc := filepath.Join(t.TempDir(), "encrypted")
	if err := os.WriteFile(enc, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = hostSigners("", []string{enc}, nil)
	if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "passphrase") || strings.Contains(err.Error(), "dropbearconvert") {
		t.Fatalf("encrypted host key: %v, want ErrHostKey saying passphrase, not naming dropbearconvert", err)
	}
}

// TestCutHostKeyNotDropbear: a host key file that is empty or holds a PEM key
// cut short (a copy a power cut stopped, an OTA restore that did not finish)
// is "no key found" to x/crypto, as a Dropbear key is; its refusal says what
// the file is, and does not send its reader to dropbearconvert.
func TestCutHostKeyNotDropbear(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKey(k, "")
	if err != nil {
		t.Fatal(err)
	}
	whole := pem.EncodeToMemory(block)
	for _, tc := range []struct{ name, content string }{
		{"empty", ""},
		{"cut", string(whole[:len(whole)/2])},
		{"damaged", "-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, HostKeyFile), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := hostSigners(dir, nil, nil)
			if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "empty, cut short or damaged") || strings.Contains(err.Error(), "dropbearconvert") {
				t.Fatalf("%s host key: %v, want ErrHostKey saying the file is empty, cut short or damaged, not naming dropbearconvert", tc.name, err)
			}
		})
	}
}
