package sshd

import "golang.org/x/sys/cpu"

// aesHardware reports whether AES-GCM runs in hardware here while x/crypto's
// ChaCha20 is pure Go: amd64 with AES-NI and PCLMULQDQ. (On arm64 x/crypto has
// ChaCha20 in assembly; on ARMv7 and MIPS neither has, and ChaCha20 is the faster.)
func aesHardware() bool { return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ }
