//go:build linux && (386 || arm)

package sshd

import "syscall"

// sysSetresuid is setresuid with 32-bit user ids: on 386 and arm,
// SYS_SETRESUID takes 16-bit ones.
const sysSetresuid = syscall.SYS_SETRESUID32
