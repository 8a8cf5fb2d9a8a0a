//go:build linux && !(386 || arm)

package sshd

import "syscall"

// sysSetfsuid, sysSetfsgid, sysGetgroups and sysSetgroups are setfsuid,
// setfsgid, getgroups and setgroups, whose ids are 32 bits wide here.
const (
	sysSetfsuid  = syscall.SYS_SETFSUID
	sysSetfsgid  = syscall.SYS_SETFSGID
	sysGetgroups = syscall.SYS_GETGROUPS
	sysSetgroups = syscall.SYS_SETGROUPS
)
