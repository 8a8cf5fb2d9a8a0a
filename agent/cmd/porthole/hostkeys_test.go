package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// deviceFiles is a config whose MQTT files exist, as writeDevice made it.
type deviceFiles struct{ path, data, ca, cert, key string }

// writeDevice writes porthole.toml in dir, with its data directory (not made)
// in dir/data and the MQTT files of a new PKI.
func writeDevice(t *testing.T, dir string) deviceFiles {
	t.Helper()
	pki := mqtttest.NewPKI(t)
	cert, key := pki.Client(t, "dev")
	f := deviceFiles{path: filepath.Join(dir, "porthole.toml"), data: filepath.Join(dir, "data"), ca: pki.CAFile, cert: cert, key: key}
	os.WriteFile(f.path, []byte(`thing_name = "dev"
data_dir = "`+f.data+`"

[mqtt]
endpoint = "b:8883"
ca_file = "`+f.ca+`"
cert_file = "`+cert+`"
key_file = "`+key+`"
`), 0o600)
	return f
}

// deviceConfig is writeDevice in a new temporary directory: the config's path
// and data directory.
func deviceConfig(t *testing.T) (path, data string) {
	t.Helper()
	f := writeDevice(t, t.TempDir())
	return f.path, f.data
}

// writeHostKey writes a fresh ed25519 private key to path with mode.
func writeHostKey(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, mode)
}

// check-config refuses the host keys the agent would refuse at start, and changes
// nothing; an extra host_keys file missing by a relative path is an error
// there too.
func TestCheckConfigHostKeys(t *testing.T) {
	extraKey := filepath.Join(t.TempDir(), "extra_key")
	for _, tc := range []struct {
		name  string
		extra string
		setup func(t *testing.T, data string)
		want  string
	}{
		{"data_dir key too open", "", func(t *testing.T, data string) {
			os.Mkdir(data, 0o700)
			writeHostKey(t, filepath.Join(data, "ssh_host_ed25519_key"), 0o644)
		}, "permissions 0644 are too open"},
		{"data_dir key garbage", "", func(t *testing.T, data string) {
			os.Mkdir(data, 0o700)
			os.WriteFile(filepath.Join(data, "ssh_host_ed25519_key"), []byte("not a key\n"), 0o600)
		}, "remove it to make a new key"},
		// By an absolute path it may be on storage not mounted yet: a warning
		// (TestFilesOnStorageNotThereYet).
		{"extra key missing", "[ssh]\nhost_keys = [\"porthole-missing-key\"]", nil, "porthole-missing-key"},
		{"extra key too open", "[ssh]\nhost_keys = [\"" + extraKey + "\"]", func(t *testing.T, data string) {
			writeHostKey(t, extraKey, 0o644)
		}, "permissions 0644 are too open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// [ssh] must come after the top-level keys and before [mqtt]: put it last.
			path, data := deviceConfig(t)
			if tc.extra != "" {
				b, _ := os.ReadFile(path)
				os.WriteFile(path, append(b, []byte(tc.extra+"\n")...), 0o600)
			}
			if tc.setup != nil {
				tc.setup(t, data)
			}
			code, _, errs := runCmd(t, nil, "check-config", "-c", path)
			if code != exitUsage || !strings.Contains(errs, tc.want) {
				t.Fatalf("check-config: exit %d, stderr %q; want %d and %q", code, errs, exitUsage, tc.want)
			}
		})
	}
	// An extra key file that is fine passes; the data_dir key is not made.
	path, data := deviceConfig(t)
	pub := writeECDSAKey(t, extraKey)
	b, _ := os.ReadFile(path)
	os.WriteFile(path, append(b, []byte("[ssh]\nhost_keys = [\""+extraKey+"\"]\n")...), 0o600)
	if code, out, errs := runCmd(t, nil, "check-config", "-c", path); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("good extra host key: %d %q %q", code, out, errs)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("check-config made the data directory (stat: %v)", err)
	}
	// keygen -c prints every key the agent presents, the extra one too.
	code, out, errs := runCmd(t, nil, "keygen", "-c", path)
	if want := "ecdsa-sha2-nistp256 " + gossh.FingerprintSHA256(pub) + "\n"; code != 0 || !strings.HasPrefix(out, "ssh-ed25519 ") || !strings.HasSuffix(out, want) {
		t.Fatalf("keygen -c with an extra host key: %d %q %q; want the data_dir key, then %q", code, out, errs, want)
	}
}

// TestHostKeyLinkedToStorage: a host key in data_dir that is a link to
// storage (a read-only root file system) is made there. check-config said ok
// and the agent then exited 2 at every start ("file exists"). The storage not
// mounted yet is a warning and exit 2, as for data_dir; a directory others
// may write is refused by both (exit 1).
func TestHostKeyLinkedToStorage(t *testing.T) {
	path, data := deviceConfig(t)
	store := filepath.Join(t.TempDir(), "keys")
	os.Mkdir(data, 0o700)
	link := filepath.Join(data, "ssh_host_ed25519_key")
	os.Symlink(filepath.Join(store, "host"), link)

	code, _, errs := runCmd(t, nil, "check-config", "-start", "-c", path)
	if want := "warning: data_dir: host key " + link + " is a symbolic link to " + filepath.Join(store, "host"); code != exitOK || !strings.Contains(errs, want) || !strings.Contains(errs, "exit (2)") {
		t.Errorf("check-config -start, %s not there yet: exit %d, stderr %q; want %d and a warning %q... exit (2)", store, code, errs, exitOK, want)
	}
	if code, _, errs := runCmd(t, nil, "agent", "-c", path); code != exitRuntime || !strings.Contains(errs, link+" is a symbolic link to ") {
		t.Errorf("agent, %s not there yet: exit %d, stderr %q; want %d naming the link", store, code, errs, exitRuntime)
	}

	os.Mkdir(store, 0o777)
	os.Chmod(store, 0o777)
	for _, cmd := range []string{"check-config", "agent"} {
		if code, _, errs := runCmd(t, nil, cmd, "-c", path); code != exitUsage || !strings.Contains(errs, link+": a symbolic link to ") || !strings.Contains(errs, "bad modes of "+store) {
			t.Errorf("%s, %s mode 0777: exit %d, stderr %q; want %d naming the link and the directory", cmd, store, code, errs, exitUsage)
		}
	}

	os.Chmod(store, 0o700)
	if code, out, errs := runCmd(t, nil, "keygen", "-c", path); code != exitOK || !strings.HasPrefix(out, "ssh-ed25519 ") {
		t.Fatalf("keygen -c: exit %d, %q %q; want the key made through the link", code, out, errs)
	}
	if fi, err := os.Lstat(filepath.Join(store, "host")); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s/host: %v %v, want the key, mode 0600", store, fi, err)
	}
	if code, out, errs := runCmd(t, nil, "check-config", "-c", path); code != exitOK || strings.Contains(errs, "warning: data_dir") {
		t.Errorf("check-config with the key made: exit %d, %q %q; want ok", code, out, errs)
	}
	// The .pub is next to the key, at the target, at this start and the
	// next: none is written at the link's name in data_dir (sshd
	// TestHostKeyPubNextToLinkedKey).
	if code, out, errs := runCmd(t, nil, "keygen", "-c", path); code != exitOK {
		t.Fatalf("keygen -c again: exit %d, %q %q", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(store, "host.pub")); err != nil {
		t.Errorf("the key's .pub at the target: %v", err)
	}
	if fi, err := os.Lstat(link + ".pub"); err == nil {
		t.Errorf("%s.pub: %v, want none at the link's name", link, fi.Mode())
	}
}

// TestKeygenPrintsThePresentedEd25519Key: the server presents one key of each
// type, the last; an extra ed25519 key is presented instead of the data_dir
// key, which keygen printed, so operators pinned a key never shown. keygen
// prints the presented one.
func TestKeygenPrintsThePresentedEd25519Key(t *testing.T) {
	path, _ := deviceConfig(t)
	extraKey := filepath.Join(t.TempDir(), "ssh_host_ed25519_key")
	writeHostKey(t, extraKey, 0o600)
	b, _ := os.ReadFile(path)
	os.WriteFile(path, append(b, []byte("[ssh]\nhost_keys = [\""+extraKey+"\"]\n")...), 0o600)
	priv, err := os.ReadFile(extraKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd(t, nil, "keygen", "-c", path)
	if want := "ssh-ed25519 " + gossh.FingerprintSHA256(signer.PublicKey()) + "\n"; code != 0 || out != want {
		t.Fatalf("keygen -c with an extra ed25519 key: %d %q %q; want only %q", code, out, errs, want)
	}
}

// writeECDSAKey writes a fresh ECDSA private key to path (0600), an extra host
// key of a type the data_dir key is not, and returns its public half.
func writeECDSAKey(t *testing.T, path string) gossh.PublicKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(k, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o600) // WriteFile keeps the mode of a file that was there
	pub, err := gossh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// A config others may write is refused; an MQTT key others may read is a warning.
func TestConfigAndKeyModes(t *testing.T) {
	dev := writeDevice(t, t.TempDir())
	path, key := dev.path, dev.key
	os.Chmod(path, 0o666)
	if code, _, errs := runCmd(t, nil, "check-config", "-c", path); code != exitUsage || !strings.Contains(errs, "writable by group or others") {
		t.Fatalf("config at 0666: exit %d, stderr %q", code, errs)
	}
	os.Chmod(path, 0o644)
	os.Chmod(key, 0o644)
	code, out, errs := runCmd(t, nil, "check-config", "-c", path)
	if code != 0 || !strings.Contains(out, "ok") || !strings.Contains(errs, "warning: mqtt.key_file") || !strings.Contains(errs, "chmod 600") {
		t.Fatalf("key at 0644: exit %d, stdout %q, stderr %q; want ok and a warning", code, out, errs)
	}
	os.Chmod(key, 0o600)
	// (The config has no SSH login file: check-config warns about that.)
	if _, _, errs := runCmd(t, nil, "check-config", "-c", path); strings.Contains(errs, "mqtt.key_file") {
		t.Fatalf("key at 0600: stderr %q, want no warning about mqtt.key_file", errs)
	}
}

// keygen -c prints the key in that config's data_dir, the one the agent presents.
func TestKeygenUsesTheAgentsKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path, data := deviceConfig(t)
	code, fromConfig, errs := runCmd(t, nil, "keygen", "-c", path)
	if code != 0 {
		t.Fatalf("keygen -c: %d %q", code, errs)
	}
	if _, fromDir, _ := runCmd(t, nil, "keygen", "--data-dir", data); fromDir != fromConfig {
		t.Fatalf("keygen -c printed %q, its data_dir holds %q", fromConfig, fromDir)
	}
	if code, _, errs := runCmd(t, nil, "keygen", "-c", path, "--data-dir", dir); code != exitUsage || !strings.Contains(errs, "not both") {
		t.Fatalf("keygen -c and --data-dir: %d %q", code, errs)
	}
	// No key is made where others could replace it.
	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	if code, _, errs := runCmd(t, nil, "keygen", "--data-dir", open); code != exitUsage || !strings.Contains(errs, "writable by group or others") {
		t.Fatalf("keygen in a 0777 directory: %d %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(open, "ssh_host_ed25519_key")); !os.IsNotExist(err) {
		t.Fatalf("keygen made a key in a 0777 directory (stat: %v)", err)
	}
}

// Without -c, keygen reads the agent's default config; when there is none it
// refuses instead of printing the key of some other directory.
func TestKeygenWithoutConfig(t *testing.T) {
	if _, err := os.Stat(defaultConfig); err == nil {
		t.Skipf("%s exists on this machine", defaultConfig)
	}
	code, out, errs := runCmd(t, nil, "keygen")
	if code != exitUsage || out != "" || !strings.Contains(errs, "no config at "+defaultConfig) || !strings.Contains(errs, "-data-dir") {
		t.Fatalf("keygen without a config: %d %q %q", code, out, errs)
	}
}

// TestKeygenBeforeTheConfigIsComplete: on a first boot or in an image being
// built, the config may still hold the example's placeholders. keygen refuses it
// as check-config does, and says that -data-dir prints the key all the same; with
// it, keygen prints the key the completed config's agent will present.
func TestKeygenBeforeTheConfigIsComplete(t *testing.T) {
	path, data := deviceConfig(t)
	b, _ := os.ReadFile(path)
	os.WriteFile(path, bytes.Replace(b, []byte(`endpoint = "b:8883"`), []byte(`endpoint = "CHANGE-ME:8883"`), 1), 0o600)
	code, out, errs := runCmd(t, nil, "keygen", "-c", path)
	if code != exitUsage || out != "" || !strings.Contains(errs, "mqtt.endpoint") || !strings.Contains(errs, "-data-dir") {
		t.Fatalf("keygen -c with a placeholder endpoint: %d %q %q; want %d, the field and -data-dir", code, out, errs, exitUsage)
	}
	code, out, errs = runCmd(t, nil, "keygen", "-data-dir", data)
	if code != 0 || !strings.HasPrefix(out, "ssh-ed25519 SHA256:") {
		t.Fatalf("keygen -data-dir: %d %q %q", code, out, errs)
	}
	os.WriteFile(path, b, 0o600)
	if code, again, errs := runCmd(t, nil, "keygen", "-c", path); code != 0 || again != out {
		t.Fatalf("keygen -c with the config completed: %d %q %q; want %q", code, again, errs, out)
	}
}

// TestCheckConfigOKLine: the line check-config prints for a good config.
func TestCheckConfigOKLine(t *testing.T) {
	path, data := deviceConfig(t)
	code, out, errs := runCmd(t, nil, "check-config", "-c", path)
	if want := path + ": ok (thing dev; services: 1; data in " + data + ")\n"; code != 0 || out != want {
		t.Fatalf("check-config: %d %q %q; want %q", code, out, errs, want)
	}
}
