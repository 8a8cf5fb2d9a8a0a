// Command killpgcheck is the helper of sshd's TestKillpgAsLeavesMainThread: a
// static program like the agent, whose main goroutine waits while others send
// signals with sshd's killpgAs (uid 1003's credentials). Go never ends a
// locked main thread, so this is where a thread left with another user's ids
// would show: it prints the Uid line of /proc/self/status (the main thread's,
// what ps shows for the process) and the owner of /proc/self.
package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	_ "unsafe" // go:linkname

	_ "github.com/porthole-iot/porthole/sshd"
)

//go:linkname killpgAs github.com/porthole-iot/porthole/sshd.killpgAs
func killpgAs(pgid int, sig syscall.Signal, cred *syscall.Credential) error

func main() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 100 {
					ts := syscall.Timespec{Nsec: 50000}
					syscall.Nanosleep(&ts, nil)
					killpgAs(1<<30, syscall.SIGCONT, &syscall.Credential{Uid: 1003}) // no such group: ESRCH
				}
			}()
		}
		wg.Wait()
	}()
	<-done
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Uid:") {
			fmt.Println(l)
		}
	}
	var st syscall.Stat_t
	syscall.Stat("/proc/self", &st)
	fmt.Println("owner", st.Uid)
}
