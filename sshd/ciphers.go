package sshd

import (
	"fmt"
	"slices"

	gossh "golang.org/x/crypto/ssh"
)

// aesFirstCiphers are offered instead of x/crypto's defaults on CPUs where AES runs
// in hardware and ChaCha20 does not (see aesHardware). OpenSSH clients ask for
// chacha20-poly1305 first and the client's order decides, so leaving it out is the
// only way to have them pick AES: aes128-ctr with an encrypt-then-MAC SHA-2 MAC
// (their next choice) or AES-GCM (clients that prefer it). CTR stays for clients
// without GCM, such as paramiko. On this project's benchmark host the SSH server's
// CPU per MiB of an upload drops by about a third (docs/benchmarks.md).
var aesFirstCiphers = []string{
	gossh.CipherAES128GCM, gossh.CipherAES256GCM,
	gossh.CipherAES128CTR, gossh.CipherAES192CTR, gossh.CipherAES256CTR,
}

// ciphers returns the cipher list the server offers: the configured one, or
// aesFirstCiphers on AES hardware, or nil for x/crypto's defaults.
func (s *Server) ciphers() []string {
	if s.Ciphers != nil {
		return s.Ciphers
	}
	if aesHardware() {
		return aesFirstCiphers
	}
	return nil
}

// CheckCiphers reports the first name in list that x/crypto/ssh does not support as
// a secure cipher, or an empty list.
func CheckCiphers(list []string) error {
	if len(list) == 0 {
		return fmt.Errorf("no ciphers: leave the list out for the default")
	}
	supported := gossh.SupportedAlgorithms().Ciphers
	for _, c := range list {
		if !slices.Contains(supported, c) {
			return fmt.Errorf("cipher %q is not supported (supported: %v)", c, supported)
		}
	}
	return nil
}
