//go:build !amd64

package sshd

// aesHardware: see ciphers_amd64.go. Elsewhere x/crypto's defaults are kept.
func aesHardware() bool { return false }
