// Package board holds the QEMU boards porthole is tested on — one folder per
// board with its board.conf (Debian kernel package, modules, console, QEMU
// command line) and /init — the shell scripts that fetch Debian packages of the
// board's architecture (fetch.sh), build an initramfs (build.sh) and boot it
// (boot.sh), and a test that boots every board and logs in through a tunnel.
//
// It is not firmware: the initramfs is BusyBox, a few virtio modules and the
// porthole binary, enough to prove the agent on each architecture's real kernel.
// conf.go reads a board.conf and cross-builds porthole for it, for the test and
// for porthole-lab --board.
package board
