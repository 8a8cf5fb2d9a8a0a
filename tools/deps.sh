#!/usr/bin/env bash
# deps.sh PROFILE: install the Debian packages a make target needs, only when missing.
# Nothing outside Debian's archive is fetched here (Go modules come from `go mod download`).
# As root it runs apt-get; otherwise it names what is missing and, under CI=true, fails.
set -euo pipefail

profile=${1:-test}
case "$profile" in
  test)     want=(gcc libc6-dev openssh-client openssh-sftp-server curl busybox-static mosquitto awscli
                  qemu-user-static qemu-system-arm qemu-system-mips cpio binutils
                  nodejs npm chromium kconfig-frontends-nox systemd iptables) ;;
  # make console-assets: npm ci for the web console's xterm.js
  console)  want=(nodejs npm) ;;
  generate) want=(protobuf-compiler) ;;
  # per-arch unit tests under qemu-user (tools/qemu-test.sh); make idle-layout
  qemu)     want=(qemu-user-static) ;;
  # make board BOARD=...: QEMU, initramfs (cpio); readelf reads kernel module dependencies
  board)    want=(qemu-system-arm qemu-system-mips cpio binutils openssh-client) ;;
  # make bench: the whole path (tools/bench) against direct SSH
  bench)    want=(openssh-client mosquitto) ;;
  # make ipk / make dist: tar and gzip, in every Debian
  pkg)      want=() ;;
  *) echo "deps.sh: unknown profile $profile (want test, console, generate, qemu, board, bench or pkg)" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  # Node.js from another packager (nodesource's nodejs carries npm) is fine too.
  case "$p" in
    nodejs) command -v node >/dev/null && continue ;;
    npm)    command -v npm >/dev/null && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  [ "${CI:-}" = true ] && exit 1
  exit 0
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
