//go:build linux && (386 || arm)

package sshd

import "syscall"

// sysSetfsuid and sysSetfsgid are setfsuid and setfsgid with 32-bit ids: on
// 386 and arm, SYS_SETFSUID and SYS_SETFSGID take 16-bit ones.
const (
	sysSetfsuid = syscall.SYS_SETFSUID32
	sysSetfsgid = syscall.SYS_SETFSGID32
)
