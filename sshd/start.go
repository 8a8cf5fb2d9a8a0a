package sshd

// What a Server does once, before its first connection: it loads (or makes)
// the host keys, checks the password hashes, sets up the limits, builds the
// gliderlabs server and checks the logins.
//
// Where this code sits in the binary matters on a device: go build compiles a
// package's files in name order, the linker keeps that order, and the kernel
// maps a binary's code in 64 KiB windows around each page a process runs
// (docs/size.md, "Idle layout"). An idle agent runs this file and the first
// files of the package (accounts.go to authorizedkeys.go, files.go,
// hostkeys.go, and the password-check sizing and newFailureLimiter at the top
// of limits.go) but none of the session, SFTP, scp or forwarding code. So this
// file sorts near the package's end, next to code that runs anyway, and
// portforward.go sorts after limits.go: the windows in between stay unmapped.
// With the setup in server.go and the forwarding in forward.go (before
// hostkeys.go), the mipsel board's idle agent mapped 64 KiB more (8,212-8,232
// against 8,156 kB); with openfile.go after the rest of limits.go, Go 1.26.10's
// layout mapped 64 KiB more than Go 1.26.8's. Code that runs at every start
// belongs here or in those first files. The code between limits.go and this
// file is what keeps this file's first function past the last window an idle
// agent leaves alone: the terminal modes (now in pty.go) and the stream copies
// (sessionio.go), which sorted after this file, freed one more window there
// when they moved before it; make idle-layout shows how much code may go
// before this file is back in that window ("after").

import (
	"encoding/binary"
	"syscall"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// PublicKeys returns the host public keys, loading (or on first start
// creating) them. Use it to print fingerprints for known_hosts.
func (s *Server) PublicKeys() ([]gossh.PublicKey, error) {
	if err := s.init(); err != nil {
		return nil, err
	}
	var out []gossh.PublicKey
	for _, k := range s.gs.HostSigners {
		out = append(out, k.PublicKey())
	}
	return out, nil
}

func (s *Server) init() error {
	s.initOnce.Do(func() { s.initErr = s.setup() })
	return s.initErr
}

func (s *Server) setup() error {
	// sshd.c: "Ensure that umask disallows at least group and world write".
	// Every session's program inherits the process umask (Go's exec has no
	// umask of its own for a child), and a server started under umask 0 or
	// 002 (a wrapper, a supervisor, an operator's shell) gave every login
	// world- or group-writable new files.
	syscall.Umask(syscall.Umask(0o077) | 0o022)
	if s.Ciphers != nil {
		if err := CheckCiphers(s.Ciphers); err != nil {
			return wrapErr("sshd", err)
		}
	}
	signers, notServed, err := hostSigners(s.DataDir, s.HostKeyFiles, s.log())
	if err != nil {
		return err
	}
	for _, p := range notServed {
		s.log().Warn("host key "+smallRSANote, "file", p)
	}
	passwords := s.logins().PasswordHashes
	if _, err := HashesCost(passwords); err != nil {
		return err
	}
	maxFail, window := s.MaxAuthFailures, s.AuthFailureWindow
	if maxFail == 0 {
		maxFail = 10
	}
	if window <= 0 {
		window = time.Minute
	}
	s.limiter = newFailureLimiter(maxFail, window)
	s.pwSlots = make(chan struct{}, s.passwordSlots())

	gs := &gliderssh.Server{
		Version:                  serverVersion,
		Handler:                  func(gliderssh.Session) {}, // sessions use handleSession
		PublicKeyHandler:         s.publicKeyHandler,
		ConnCallback:             s.connCallback,
		ServerConfigCallback:     s.serverConfig,
		ConnectionFailedCallback: s.connectionFailed,
		// The other types go to one "default" handler each, which audits
		// the forwards it refuses: an entry per type would grow this code,
		// which runs at every start.
		ChannelHandlers: map[string]gliderssh.ChannelHandler{
			"session": s.handleSession,
			"default": s.handleChannel,
		},
		RequestHandlers: map[string]gliderssh.RequestHandler{
			"tcpip-forward": s.handleTCPIPForward,
			"default":       s.handleRequest,
		},
		SubsystemHandlers: map[string]gliderssh.SubsystemHandler{},
	}
	if len(passwords) > 0 {
		gs.PasswordHandler = s.passwordHandler
		s.passwordOn.Store(true)
	}
	s.setUp.Store(true)
	if len(passwords) > 0 {
		// After setUp: a SetLogins that has not seen it set has stored its
		// hashes before, and the dummy is made for them here.
		if err := s.updateDummy(); err != nil {
			return err
		}
	}
	for _, k := range signers {
		if a, ok := k.(gossh.AlgorithmSigner); ok && k.PublicKey().Type() == gossh.KeyAlgoRSA {
			k = &rsaSHA2{a}
		}
		gs.HostSigners = append(gs.HostSigners, k)
	}
	s.gs = gs
	for _, k := range signers {
		s.log().Info("host key", "type", k.PublicKey().Type(), "fingerprint", gossh.FingerprintSHA256(k.PublicKey()))
	}
	if !s.CallerChecksLogins {
		s.checkLoginMethods()
	}
	return nil
}

// rsaSHA2 is an RSA host key that signs with SHA-2 only, as OpenSSH 8.8+'s:
// x/crypto offers ssh-rsa (SHA-1) too for a key that does not list its
// algorithms. gossh.NewSignerWithAlgorithms does the same, but links 2.5 KB
// of x/crypto ahead of the start's code (docs/size.md, "Idle layout").
// Served as a pointer, with Algorithms on the pointer: a value would link the
// wrappers of the methods promoted from the embedded signer twice, once for
// the value and once for the pointer (280 bytes on linux/mipsle).
type rsaSHA2 struct{ gossh.AlgorithmSigner }

// Algorithms makes rsaSHA2 a gossh.MultiAlgorithmSigner.
func (*rsaSHA2) Algorithms() []string {
	return []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256}
}

// smallRSANote says why leaveOut leaves a host key out.
const smallRSANote = "not served: an RSA key under 1024 bits cannot sign (Go's crypto/rsa refuses it; OpenSSH 9.1+ refuses such keys too)"

// leaveOut returns keys, read from paths, without the RSA keys under 1024 bits
// (smallRSA), and the paths of those. Without others (no key in DataDir) and
// no other key in keys, keys are all kept, as before: the server starts rather
// than refuse a configuration it took, though no client can use such a key.
// In the agent data_dir's ed25519 key is always there, and serves.
func leaveOut(keys []gossh.Signer, paths []string, others bool) (out []gossh.Signer, left []string) {
	for i, k := range keys {
		if smallRSA(k) {
			left = append(left, paths[i])
		} else {
			out = append(out, k)
		}
	}
	if !others && len(out) == 0 {
		return keys, nil
	}
	return out, left
}

// smallRSA reports whether k is an RSA key under 1024 bits: crypto/rsa refuses
// to sign with it, so every handshake that picked it failed ("handshake
// failed: EOF" at the client). Read from the key's wire form (string
// "ssh-rsa", mpint e, mpint n): gossh.CryptoPublicKey would link more of
// x/crypto ahead of the start's code.
func smallRSA(k gossh.Signer) bool {
	pub := k.PublicKey()
	if pub.Type() != gossh.KeyAlgoRSA {
		return false
	}
	b := pub.Marshal()
	for range 2 { // the type and e
		if len(b) < 4 || uint64(len(b)-4) < uint64(binary.BigEndian.Uint32(b)) {
			return false
		}
		b = b[4+binary.BigEndian.Uint32(b):]
	}
	if len(b) < 4 {
		return false
	}
	n := b[4:]
	for len(n) > 0 && n[0] == 0 {
		n = n[1:]
	}
	return len(n) < 128 || len(n) == 128 && n[0] < 0x80
}
