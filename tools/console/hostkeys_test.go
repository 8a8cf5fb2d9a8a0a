package console

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
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
		first, err := h.Check(s.thing, s.key, s.accept)
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
		if first, err := h2.Check(thing, key, ""); first || err != nil {
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
	if _, err := h.Check("dev1", newHostKey(t), ""); err == nil {
		t.Fatal("a corrupt store was accepted")
	}
	if b, _ := os.ReadFile(path); string(b) != "{not json" {
		t.Fatalf("the corrupt store was overwritten: %q", b)
	}
}

func TestHostKeysInMemory(t *testing.T) {
	h := &HostKeys{}
	k := newHostKey(t)
	if first, err := h.Check("d", k, ""); !first || err != nil {
		t.Fatalf("Check = %v, %v", first, err)
	}
	if _, err := h.Check("d", newHostKey(t), ""); err == nil {
		t.Fatal("a changed key passed an in-memory store")
	}
}
