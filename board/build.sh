#!/usr/bin/env bash
# build.sh BOARD PORTHOLE OVERLAY OUT: make OUT/kernel and OUT/initramfs.cpio.gz for
# board/BOARD from its Debian kernel (board.conf KERNEL_PKG), the virtio modules it
# needs (MODULES, plus their depends= read from .modinfo: the debs carry no
# modules.dep), BusyBox from Debian's busybox-static of that arch, the board's /init,
# the cross-built PORTHOLE binary, and OVERLAY copied over the root (it holds
# /etc/porthole: config, device certificate and key, authorized_keys).
#
# Debian packages come from board/fetch.sh (private apt config, cached).
set -euo pipefail
# The guest's directories get these modes whatever the builder's umask: the agent
# refuses a data_dir below a directory that group or others can write.
umask 022

here=$(cd "$(dirname "$0")" && pwd)
board=$1 porthole=$2 overlay=$3 out=$4
conf=$here/$board/board.conf
[ -f "$conf" ] || { echo "build.sh: no board $board (want one of: $(cd "$here" && ls -d qemu-* | tr '\n' ' '))" >&2; exit 2; }
# shellcheck source=/dev/null
. "$conf"

kroot=$("$here/fetch.sh" "$DEB_ARCH" "$KERNEL_PKG" | tail -1)
bbroot=$("$here/fetch.sh" "$DEB_ARCH" busybox-static | tail -1)

mkdir -p "$out"
root=$out/rootfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,lib/modules,etc/porthole,proc,sys,dev,tmp,run,root,var/lib/porthole}

# shellcheck disable=SC2086 # KERNEL_GLOB is a glob
kernel=$(ls "$kroot"/$KERNEL_GLOB | head -1)
cp "$kernel" "$out/kernel"
kver=$(basename "$(ls -d "$kroot"/lib/modules/*)")

# Modules in dependency order: each one's depends= before itself.
declare -A loaded=()
order=()
ko() { # name -> path (Debian names files with - or _ interchangeably)
  local alt=${1//_/-} alt2=${1//-/_}
  find "$kroot/lib/modules/$kver" \( -name "$1.ko" -o -name "$alt.ko" -o -name "$alt2.ko" \) | head -1
}
add() {
  local name=$1 path deps d
  path=$(ko "$name")
  [ -n "$path" ] || { echo "build.sh: module $name not in $KERNEL_PKG" >&2; exit 1; }
  name=$(basename "$path" .ko)
  [ -n "${loaded[$name]:-}" ] && return
  loaded[$name]=1
  deps=$(readelf -p .modinfo "$path" | sed -n 's/.*depends=//p' | tr ',' ' ')
  for d in $deps; do add "$d"; done
  cp "$path" "$root/lib/modules/"
  order+=("$name")
}
for m in $MODULES; do add "$m"; done
printf '%s\n' "${order[@]}" >"$root/lib/modules/load-order"

cp "$bbroot/bin/busybox" "$root/bin/busybox"
cp "$here/$board/init" "$root/init"
cp "$here/board.sh" "$root/lib/board.sh"
install -m 0755 "$porthole" "$root/usr/bin/porthole"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
echo "$board" >"$root/etc/hostname"
cp -a "$overlay/." "$root/"
# sshd refuses authorized_keys in directories others can write (like OpenSSH StrictModes).
chmod 0755 "$root" "$root/etc" "$root/etc/porthole"
chmod 0700 "$root/root" "$root/var/lib/porthole"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -6 >"$out/initramfs.cpio.gz"
echo "build.sh: $board: $out/kernel ($(basename "$kernel")), $out/initramfs.cpio.gz ($(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB), modules: ${order[*]}" >&2
