package console

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

func newHostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestHostKeysTrustOnFirstUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "hostkeys.json")
	a, b := newHostKey(t), newHostKey(t)
	h := &HostKeys{Path: path}

	steps := []struct {
		name      string
		thing     string
		key       ssh.PublicKey
		accept    string
		wantFirst bool
		wantErr   bool
	}{
		{"first use records", "dev1", a, "", true, false},
		{"same key passes", "dev1", a, "", false, false},
		{"another thing is separate", "dev2", b, "", true, false},
		{"changed key is refused", "dev1", b, "", false, true},
		{"accepting another fingerprint is refused", "dev1", b, ssh.FingerprintSHA256(a), false, true},
		{"accepting the presented fingerprint replaces", "dev1", b, ssh.FingerprintSHA256(b), false, false},
		{"the new key passes", "dev1", b, "", false, false},
		{"the old key is now refused", "dev1", a, "", false, true},
	}
	for _, s := range steps {
		first, err := h.Check(context.Background(), s.thing, s.key, s.accept)
		if first != s.wantFirst || (err != nil) != s.wantErr {
			t.Fatalf("%s: Check = %v, %v; want first %v, error %v", s.name, first, err, s.wantFirst, s.wantErr)
		}
		var changed *HostKeyChangedError
		if s.wantErr && (!errors.As(err, &changed) || changed.Presented != ssh.FingerprintSHA256(s.key) || changed.Thing != s.thing) {
			t.Fatalf("%s: error %v, want a HostKeyChangedError for the presented key", s.name, err)
		}
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	// A new store on the same file knows both things.
	h2 := &HostKeys{Path: path}
	for thing, key := range map[string]ssh.PublicKey{"dev1": b, "dev2": b} {
		if first, err := h2.Check(context.Background(), thing, key, ""); first || err != nil {
			t.Fatalf("reloaded: Check(%s) = %v, %v; want known", thing, first, err)
		}
	}
	if fp, _ := h2.Fingerprint("dev3"); fp != "" {
		t.Fatalf("Fingerprint of an unknown thing = %q", fp)
	}
}

func TestHostKeysCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hostkeys.json")
	os.WriteFile(path, []byte("{not json"), 0o600)
	h := &HostKeys{Path: path}
	if _, err := h.Check(context.Background(), "dev1", newHostKey(t), ""); err == nil {
		t.Fatal("a corrupt store was accepted")
	}
	if b, _ := os.ReadFile(path); string(b) != "{not json" {
		t.Fatalf("the corrupt store was overwritten: %q", b)
	}
}

// TestHostKeysStoredByHand: a store seeded from the device's .pub file holds
// the key with its comment, or with spaces; the same key presented is no
// change, and the file is left as it was.
func TestHostKeysStoredByHand(t *testing.T) {
	key := newHostKey(t)
	bare := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
	for _, stored := range []string{bare + " root@router", bare + "\n", " " + bare} {
		path := filepath.Join(t.TempDir(), "hostkeys.json")
		b, err := json.Marshal(map[string]string{"dev1": stored})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		h := &HostKeys{Path: path}
		if first, err := h.Check(context.Background(), "dev1", key, ""); err != nil || first {
			t.Errorf("stored %q, the same key presented: first use %v, %v", stored, first, err)
		}
		if after, _ := os.ReadFile(path); string(after) != string(b) {
			t.Errorf("stored %q: the file was rewritten: %s", stored, after)
		}
	}
}

func TestHostKeysInMemory(t *testing.T) {
	h := &HostKeys{}
	k := newHostKey(t)
	if first, err := h.Check(context.Background(), "d", k, ""); !first || err != nil {
		t.Fatalf("Check = %v, %v", first, err)
	}
	if _, err := h.Check(context.Background(), "d", newHostKey(t), ""); err == nil {
		t.Fatal("a changed key passed an in-memory store")
	}
}

// TestHostKeysSharedFile: two consoles on one file (the default for every console
// a user starts) keep each other's keys. Each has looked at the file before the
// other writes, as two running consoles have.
func TestHostKeysSharedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console_host_keys.json")
	a, b := &HostKeys{Path: path}, &HostKeys{Path: path}
	ka, kb := newHostKey(t), newHostKey(t)
	for _, h := range []*HostKeys{a, b} {
		if fp, err := h.Fingerprint("dev-a"); fp != "" || err != nil {
			t.Fatalf("Fingerprint of an empty store = %q, %v", fp, err)
		}
	}
	if first, err := a.Check(context.Background(), "dev-a", ka, ""); !first || err != nil {
		t.Fatalf("A: Check(dev-a) = %v, %v; want first use", first, err)
	}
	if first, err := b.Check(context.Background(), "dev-b", kb, ""); !first || err != nil {
		t.Fatalf("B: Check(dev-b) = %v, %v; want first use", first, err)
	}
	// B knows A's key, and A B's, and a fresh store both.
	for _, tc := range []struct {
		name  string
		h     *HostKeys
		thing string
		key   ssh.PublicKey
	}{
		{"B", b, "dev-a", ka}, {"A", a, "dev-b", kb}, {"A", a, "dev-a", ka},
		{"new", &HostKeys{Path: path}, "dev-a", ka}, {"new", &HostKeys{Path: path}, "dev-b", kb},
	} {
		if first, err := tc.h.Check(context.Background(), tc.thing, tc.key, ""); first || err != nil {
			t.Fatalf("%s: Check(%s) = %v, %v; want known", tc.name, tc.thing, first, err)
		}
		if fp, _ := tc.h.Fingerprint(tc.thing); fp != ssh.FingerprintSHA256(tc.key) {
			t.Fatalf("%s: Fingerprint(%s) = %q, want %q", tc.name, tc.thing, fp, ssh.FingerprintSHA256(tc.key))
		}
	}
	// A key A recorded is not first use for B: a changed one is refused.
	var changed *HostKeyChangedError
	if _, err := b.Check(context.Background(), "dev-a", newHostKey(t), ""); !errors.As(err, &changed) {
		t.Fatalf("B: Check(dev-a, another key) = %v, want a HostKeyChangedError", err)
	}
	// A new key B accepts is the key for A too.
	kc := newHostKey(t)
	if _, err := b.Check(context.Background(), "dev-a", kc, ssh.FingerprintSHA256(kc)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Check(context.Background(), "dev-a", ka, ""); !errors.As(err, &changed) {
		t.Fatalf("A: Check(dev-a, the replaced key) = %v, want a HostKeyChangedError", err)
	}
}

// TestHostKeysSharedFileConcurrent: many first uses at once through several
// stores on one file all end up in it.
func TestHostKeysSharedFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console_host_keys.json")
	stores := []*HostKeys{{Path: path}, {Path: path}, {Path: path}}
	keys := make([]ssh.PublicKey, 30)
	for i := range keys {
		keys[i] = newHostKey(t)
	}
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := stores[i%len(stores)].Check(context.Background(), fmt.Sprint("dev-", i), k, ""); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	fresh := &HostKeys{Path: path}
	for i, k := range keys {
		if fp, _ := fresh.Fingerprint(fmt.Sprint("dev-", i)); fp != ssh.FingerprintSHA256(k) {
			t.Errorf("dev-%d: stored %q, want %q", i, fp, ssh.FingerprintSHA256(k))
		}
	}
}

// TestHostKeysNullFile: a store file that holds JSON null (hand-edited, or
// written by a tool that marshalled a nil map) is read as an empty store or
// refused; Check must not panic (it runs in the SSH handshake's goroutine, where
// a panic ends the whole console).
func TestHostKeysNullFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hostkeys.json")
	os.WriteFile(path, []byte("null\n"), 0o600)
	h := &HostKeys{Path: path}
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Check panicked: %v", p)
		}
	}()
	h.Check(context.Background(), "dev1", newHostKey(t), "")
}

// FuzzHostKeysFile: whatever the host-key store holds (a file edited by hand,
// cut short, another tool's), Check either refuses with an error and leaves
// the file as it was, or passes the key, or stores it for its thing and keeps
// every other thing's key as it was: nothing another console or the operator
// stored is lost.
func FuzzHostKeysFile(f *testing.F) {
	key, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public())
	if err != nil {
		f.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
	other := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHu5eFKmJg7cDyl9jrB3Ef4G1H+1Qd8oJ1VsmgHD+M3j"
	for _, seed := range []string{
		"", "null", "{}", "[]", `{"dev1":1}`, `{"dev1":"` + line + `"}`, `{"dev1":"` + line + ` device comment"}`,
		`{"dev1":"` + other + `","dev2":"` + line + `"}`, `{"dev2":"` + other + `"}`, `{"dev1":"not a key"}`,
		`{"dev2":"x","dev2":"y"}`, `{"dev1":"` + line, "\ufeff{}",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, file []byte, accept bool) {
		path := filepath.Join(t.TempDir(), "hostkeys.json")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		var before map[string]string
		decodeErr := error(nil)
		if len(bytes.TrimSpace(file)) > 0 { // an empty store, as a missing one
			decodeErr = json.Unmarshal(file, &before)
		}
		fp := ""
		if accept {
			fp = ssh.FingerprintSHA256(key)
		}
		h := &HostKeys{Path: path}
		h.Fingerprint("dev1")
		first, err := h.Check(context.Background(), "dev1", key, fp)
		after, rerr := os.ReadFile(path)
		if rerr != nil {
			t.Fatal(rerr)
		}
		unchanged := string(after) == string(file)
		stored, had := before["dev1"]
		if decodeErr == nil && had { // what Check must say of the key stored for dev1
			old, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(stored))
			same := perr == nil && bytes.Equal(old.Marshal(), key.Marshal())
			var changed *HostKeyChangedError
			switch {
			case (same || accept) && err != nil:
				t.Fatalf("stored %q, the same key presented or its change accepted: %v", stored, err)
			case !same && !accept && err == nil:
				t.Fatalf("stored %q, another key presented and not accepted: passed", stored)
			case !same && !accept && perr == nil && !errors.As(err, &changed):
				t.Fatalf("stored %q, another key presented: %v, want a *HostKeyChangedError", stored, err)
			}
		}
		switch {
		case decodeErr != nil && err == nil:
			t.Fatalf("a store that is not a JSON object of strings passed: %q", file)
		case err != nil && !unchanged:
			t.Fatalf("Check failed (%v) and changed the file: %q → %q", err, file, after)
		case err != nil && decodeErr != nil:
			return
		case err != nil && !had:
			t.Fatalf("the first key of a thing was refused: %v", err)
		case err != nil:
			return
		case first == had:
			t.Errorf("Check = first use %v, with a key stored before %v", first, had)
		case unchanged && stored != line && (!had || accept):
			t.Errorf("the key was not stored: the file is as it was, %q", file)
		case unchanged:
			return
		}
		var now map[string]string
		if err := json.Unmarshal(after, &now); err != nil {
			t.Fatalf("the store written does not decode: %v\n%s", err, after)
		}
		if now["dev1"] != line {
			t.Errorf("dev1's key = %q, want %q", now["dev1"], line)
		}
		for thing, k := range before {
			if thing != "dev1" && now[thing] != k {
				t.Errorf("%s's key %q became %q", thing, k, now[thing])
			}
		}
		if want := len(before) + map[bool]int{false: 1}[had]; len(now) != want {
			t.Errorf("the store has %d keys, want %d", len(now), want)
		}
	})
}
