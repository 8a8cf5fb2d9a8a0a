package sshd

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	gossh "golang.org/x/crypto/ssh"
)

// HostKeyFile is the name of the ed25519 host key inside Server.DataDir. The
// public half is written next to it with a ".pub" suffix.
const HostKeyFile = "ssh_host_ed25519_key"

// ErrHostKey is wrapped by every error about a host key file that exists but
// cannot be used. Such a file is never replaced: a new key would make every
// client that knows the old one refuse the device.
var ErrHostKey = errors.New("sshd: unusable host key")

// hostSigners loads the server's host keys: the ed25519 key in dataDir
// (created on first use) and then each extra file.
func hostSigners(dataDir string, extra []string) ([]gossh.Signer, error) {
	var out []gossh.Signer
	if dataDir != "" {
		s, err := loadOrCreateHostKey(dataDir)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	for _, p := range extra {
		s, err := readHostKey(p)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("sshd: no host key: set DataDir or HostKeyFiles")
	}
	return out, nil
}

// loadOrCreateHostKey reads dir/HostKeyFile, or makes it if it does not exist.
func loadOrCreateHostKey(dir string) (gossh.Signer, error) {
	path := filepath.Join(dir, HostKeyFile)
	s, err := readHostKey(path)
	if err == nil {
		if t := s.PublicKey().Type(); t != gossh.KeyAlgoED25519 {
			return nil, fmt.Errorf("%w %s: type %s, want %s", ErrHostKey, path, t, gossh.KeyAlgoED25519)
		}
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating host key directory %s: %w", dir, err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating host key: %w", err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "porthole host key")
	if err != nil {
		return nil, fmt.Errorf("encoding host key: %w", err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encoding host key: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("writing host key %s: %w", path, err)
	}
	pub := gossh.MarshalAuthorizedKey(signer.PublicKey())
	if err := writeFileAtomic(path+".pub", pub, 0o644); err != nil {
		return nil, fmt.Errorf("writing host key %s.pub: %w", path, err)
	}
	return signer, nil
}

// readHostKey parses a private key file in any format x/crypto/ssh reads
// (OpenSSH, PEM PKCS#1/PKCS#8/SEC1). A missing file yields an error wrapping
// fs.ErrNotExist; anything else unusable wraps ErrHostKey.
func readHostKey(path string) (gossh.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading host key %s: %w", path, err)
		}
		return nil, fmt.Errorf("%w %s: %v", ErrHostKey, path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w %s: permissions %#o are too open, want 0600", ErrHostKey, path, perm)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrHostKey, path, err)
	}
	s, err := gossh.ParsePrivateKey(data)
	if err != nil {
		// The parse error text never contains key material.
		return nil, fmt.Errorf("%w %s: %v (the file is kept; remove it to make a new key)", ErrHostKey, path, err)
	}
	return s, nil
}

// writeFileAtomic writes data to path so that a crash leaves either the old
// file or the new one: a temporary file in the same directory, fsync, rename,
// fsync of the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
