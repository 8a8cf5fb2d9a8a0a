//go:build linux && !(386 || arm)

package sshd

import "syscall"

// sysSetfsuid and sysSetfsgid are setfsuid and setfsgid, whose ids are 32
// bits wide here.
const (
	sysSetfsuid = syscall.SYS_SETFSUID
	sysSetfsgid = syscall.SYS_SETFSGID
)
