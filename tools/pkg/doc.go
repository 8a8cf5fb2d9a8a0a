// Package pkg holds the packaging of the device binary and its tests: OpenWrt
// .ipk (ipk.sh, openwrt/: procd init script, UCI config rendered to the agent's
// TOML at start, conffiles, sysupgrade keep list), a hardened systemd unit
// (systemd/), a SysV/BusyBox init script (sysv/) and a tar.gz per cross target
// (tarball.sh). Only the tests are Go; nothing here is linked into porthole.
package pkg
