// Package pkg holds the packaging of the device binary and its tests: OpenWrt
// .ipk (ipk.sh, openwrt/: procd init script, UCI config rendered to the agent's
// TOML at start, conffiles, sysupgrade keep list, maintainer scripts), a
// hardened systemd unit (systemd/), a SysV/BusyBox init script (sysv/), a tar.gz
// per cross target with the licenses of everything linked in (tarball.sh,
// notices.sh) and dist/SHA256SUMS (sums.sh). Only the tests are Go; nothing here
// is linked into porthole.
package pkg
