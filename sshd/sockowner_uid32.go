//go:build linux && (386 || arm)

package sshd

import "syscall"

// sysSetfsuid, sysSetfsgid, sysGetgroups and sysSetgroups are setfsuid,
// setfsgid, getgroups and setgroups with 32-bit ids: on 386 and arm,
// SYS_SETFSUID, SYS_SETFSGID, SYS_GETGROUPS and SYS_SETGROUPS take 16-bit
// ones.
const (
	sysSetfsuid  = syscall.SYS_SETFSUID32
	sysSetfsgid  = syscall.SYS_SETFSGID32
	sysGetgroups = syscall.SYS_GETGROUPS32
	sysSetgroups = syscall.SYS_SETGROUPS32
)
