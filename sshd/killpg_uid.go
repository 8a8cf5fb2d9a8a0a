//go:build linux && !(386 || arm)

package sshd

import "syscall"

// sysSetresuid is setresuid, whose user ids are 32 bits wide here.
const sysSetresuid = syscall.SYS_SETRESUID
