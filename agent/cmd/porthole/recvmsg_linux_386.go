package main

// sysRecvmsg is recvmsg(2)'s number on i386, where Go's syscall package has
// none: it reaches the socket calls through socketcall(2), and recvmsg has had
// a number of its own since Linux 4.3. On an older kernel it fails with ENOSYS,
// and process 1 then passes the signals on at once (see awaitReady).
const sysRecvmsg = 372
