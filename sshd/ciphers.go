package sshd

import (
	"errors"
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
		return errors.New("no ciphers: leave the list out for the default")
	}
	supported := gossh.SupportedAlgorithms().Ciphers
	for _, c := range list {
		if !slices.Contains(supported, c) {
			return fmt.Errorf("cipher %q is not supported (supported: %v)", c, supported)
		}
	}
	return nil
}

// kexAlgos are the key exchanges the server offers: x/crypto's defaults
// (defaultKexAlgos in golang.org/x/crypto/ssh/common.go, v0.59.0), in their
// order, without diffie-hellman-group14-sha1, which x/crypto lists as insecure
// (InsecureAlgorithms) and OpenSSH's sshd no longer offers (9.2, sshd -T).
// A literal: SupportedAlgorithms().KeyExchanges would add
// diffie-hellman-group16-sha512 and -group-exchange-sha256, which the defaults
// leave out. x/crypto adds curve25519-sha256@libssh.org after curve25519-sha256.
// The MACs offered are SupportedAlgorithms().MACs (serverConfig): the defaults
// without hmac-sha1-96, insecure too and not in OpenSSH's server defaults since
// 6.7; hmac-sha1 stays, as in OpenSSH 9.2's.
var kexAlgos = []string{
	gossh.KeyExchangeMLKEM768X25519, gossh.KeyExchangeCurve25519,
	gossh.KeyExchangeECDHP256, gossh.KeyExchangeECDHP384, gossh.KeyExchangeECDHP521,
	gossh.KeyExchangeDH14SHA256,
}
