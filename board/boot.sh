#!/usr/bin/env bash
# boot.sh BOARD OUT [HOSTFWD_PORT [KERNEL_ARGS]]: boot OUT/kernel with
# OUT/initramfs.cpio.gz (from build.sh) headless, serial console on stdio.
# User-mode networking only; with HOSTFWD_PORT, host 127.0.0.1:HOSTFWD_PORT
# forwards to guest port 22 (nothing in the image listens there unless the
# config's [ssh] listen asks for it). The guest reaches the host only at 10.0.2.2.
# QEMU exits when the guest powers off (-no-reboot) or panics (panic=-1).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
board=$1 out=$2 fwd=${3:-} extra=${4:-}
# shellcheck source=/dev/null
. "$here/$board/board.conf"

netdev=user,id=n0
[ -n "$fwd" ] && netdev=$netdev,hostfwd=tcp:127.0.0.1:$fwd-:22
# shellcheck disable=SC2086 # QEMU is a word list
exec $QEMU -netdev "$netdev" -kernel "$out/kernel" -initrd "$out/initramfs.cpio.gz" \
  -append "console=$CONSOLE rdinit=/init panic=-1 quiet porthole.time=$(date +%s) $extra" \
  -no-reboot -display none -monitor none -serial stdio
