#!/usr/bin/env bash
# ipk.sh ARCH VERSION OUTDIR [BINARY]: build OUTDIR/porthole_VERSION_ARCH.ipk, an
# OpenWrt package: a gzipped tar of ./debian-binary, ./data.tar.gz and
# ./control.tar.gz, as OpenWrt's scripts/ipkg-build makes it. That is the only
# outer container OpenWrt's opkg (opkg-lede) reads: libbb/unarchive.c gunzips
# the file and walks it as a tar; an ar archive (Debian's .deb layout) fails.
# It holds /usr/bin/porthole, the procd init script, the UCI config (a
# conffile), the sysupgrade keep list, and in /usr/share/licenses/porthole/
# porthole's LICENSE and THIRD_PARTY_NOTICES (the license texts of Go and of the
# modules linked into the binary, notices.sh's output, tools/pkg/THIRD_PARTY_NOTICES): the
# BSD and MIT licenses of those want their text with every copy of the binary,
# and this package is one (about 12 KB more on a compressing flash file system).
# No Depends: the binary is static, and
# the package scripts need only what every OpenWrt has (BusyBox, procd, ubus).
# For opkg-based OpenWrt (up to 24.10); releases after it install apk packages,
# not .ipk.
#
# ARCH is an OpenWrt package architecture; BINARY defaults to the matching
# dist/porthole-linux-* from make cross. The binary's ELF header is checked
# against ARCH, so a package never carries another architecture's binary.
set -euo pipefail
# Directories (mkdir) and the files written with > take the umask's mode, which
# the tar records: the builder's umask (002 on many desktops, 077 on hardened
# ones) would change the bytes and the modes opkg gives the device's existing /etc,
# /usr/bin and /lib (it chmods each directory of data.tar.gz).
umask 022

here=$(cd "$(dirname "$0")" && pwd)
arch=$1 version=$2 bin=${4:-}
out=$(mkdir -p "$3" && cd "$3" && pwd)
case $arch in
  mipsel_24kc)              dist=linux-mipsle elf="1 1 8" ;;  # ELFCLASS32, little endian, EM_MIPS
  mips_24kc)                dist=linux-mips   elf="1 2 8" ;;
  arm_cortex-a7_neon-vfpv4) dist=linux-armv7  elf="1 1 40" ;;
  aarch64_cortex-a53)       dist=linux-arm64  elf="2 1 183" ;;
  x86_64)                   dist=linux-amd64  elf="2 1 62" ;;
  *) echo "ipk.sh: unknown ARCH $arch (want mipsel_24kc, mips_24kc, arm_cortex-a7_neon-vfpv4, aarch64_cortex-a53, x86_64)" >&2; exit 2 ;;
esac
bin=${bin:-$out/porthole-$dist}
[ -f "$bin" ] || { echo "ipk.sh: $bin missing (run make cross)" >&2; exit 1; }

# ELF identification: class (byte 4), data/endianness (byte 5), e_machine (bytes 18-19).
hdr=$(od -An -tu1 -j4 -N2 "$bin" | tr -s ' ' | sed 's/^ //')
mach=$(od -An -tu1 -j18 -N2 "$bin" | tr -s ' ' | sed 's/^ //')
# shellcheck disable=SC2086 # two numbers
set -- $mach
if [ "$(echo "$hdr" | cut -d' ' -f2)" = 2 ]; then machine=$(( $1 * 256 + $2 )); else machine=$(( $2 * 256 + $1 )); fi
if [ "$hdr $machine" != "$elf" ]; then
  echo "ipk.sh: $bin is ELF class/data/machine '$hdr $machine', want '$elf' for $arch" >&2
  exit 1
fi

# opkg versions: digits, letters, . + ~ - only, starting with a digit. A release
# is a tag as git describe gives it (v1.2.3, v1.2.3-4-gabcdef-dirty), packaged
# without the v, or a bare dotted number (1.2.3). Anything else is 0+ it, so that
# it sorts below every release: git describe --always on an untagged tree gives a
# bare commit hash, which may start with a digit (1a84f1f-dirty) but has no dot.
# A pre-release's - becomes ~ (v10.0.0-rc1: 10.0.0~rc1, and 10.0.0~rc1-3-gabcdef
# built on it): opkg orders versions as dpkg does, where 10.0.0-rc1 is upstream
# 10.0.0, revision rc1, after 10.0.0, so opkg would never upgrade a candidate to
# its release; ~ sorts before anything, even the end. A build after a release
# (1.2.3-4-gabcdef) stays after it.
case $version in
  v[0-9]*)  pkgver=${version#v} ;;
  [0-9]*.*) pkgver=$version ;;
  *)        pkgver=0+$version ;;
esac
pkgver=$(printf '%s\n' "$pkgver" | sed -E 's/^([0-9][0-9.]*)-(rc|alpha|beta|pre)/\1~\2/')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=$work/data ctrl=$work/control
mkdir -p "$data"/usr/bin "$data"/etc/init.d "$data"/etc/config "$data"/etc/porthole "$data"/lib/upgrade/keep.d \
	"$data"/usr/share/licenses/porthole "$ctrl"
install -m 0755 "$bin" "$data/usr/bin/porthole"
install -m 0755 "$here/openwrt/porthole.init" "$data/etc/init.d/porthole"
# 0600, as OpenWrt's INSTALL_CONF installs /etc/config files: option
# https_proxy may hold a password. opkg keeps an edited conffile as it is, so
# one from an older package stays 0644: the init script warns of it.
install -m 0600 "$here/openwrt/porthole.config" "$data/etc/config/porthole"
install -m 0644 "$here/openwrt/keep.d" "$data/lib/upgrade/keep.d/porthole"
install -m 0644 "$here/../../LICENSE" "$here/THIRD_PARTY_NOTICES" "$data/usr/share/licenses/porthole/"
chmod 0755 "$data/etc/porthole"

# The bytes of its files: du would count the directories too, at the size the
# build machine's file system gives them (4096 on ext4, less on tmpfs), and the
# same inputs would make different packages on different machines.
size=$(find "$data" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')
cat >"$ctrl/control" <<CONTROL
Package: porthole
Version: $pkgver
Source: https://github.com/porthole-iot/porthole
SourceName: porthole
License: Apache-2.0 BSD-3-Clause BSD-2-Clause MIT
Section: net
Architecture: $arch
Installed-Size: $size
Maintainer: porthole maintainers
Description: AWS IoT Secure Tunneling agent with an embedded SSH server.
 One static binary: MQTT v5 notify listener, destination-mode local proxy and
 SSH/SFTP server, for devices behind NAT. Configure /etc/config/porthole.
CONTROL
echo /etc/config/porthole >"$ctrl/conffiles"
install -m 0755 "$here/openwrt/postinst" "$ctrl/postinst"
install -m 0755 "$here/openwrt/prerm" "$ctrl/prerm"
install -m 0755 "$here/openwrt/preinst" "$ctrl/preinst"

# Reproducible: fixed owner, order and time (the last commit's, or SOURCE_DATE_EPOCH).
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}
tarit() { tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -C "$1" -cf - . | gzip -n9 >"$2"; }
tarit "$data" "$work/data.tar.gz"
tarit "$ctrl" "$work/control.tar.gz"
echo "2.0" >"$work/debian-binary"

# The outer container, as ipkg-build makes it: a GNU tar, entries in this order
# with ./ names, owner and group 0, the same fixed time; gzip -n stores neither
# name nor time.
ipk=$out/porthole_${pkgver}_$arch.ipk
rm -f "$ipk.tmp"
(cd "$work" && tar --format=gnu --owner=0 --group=0 --numeric-owner --mtime="@$epoch" --mode=0644 \
	-cf - ./debian-binary ./data.tar.gz ./control.tar.gz) | gzip -n9 >"$ipk.tmp"
mv "$ipk.tmp" "$ipk"
echo "ipk.sh: $ipk ($(stat -c %s "$ipk") bytes)"
