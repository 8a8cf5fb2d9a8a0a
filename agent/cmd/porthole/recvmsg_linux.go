//go:build linux && !386

package main

import "syscall"

// sysRecvmsg is recvmsg(2)'s number (see awaitReady).
const sysRecvmsg = syscall.SYS_RECVMSG
