#!/usr/bin/env bash
# tarball.sh VERSION DIST: for every dist/porthole-linux-* binary from make cross,
# DIST/porthole-VERSION-linux-TARGET.tar.gz holding, under porthole-VERSION-linux-TARGET/:
#   porthole                 the static binary
#   porthole.toml.example    every config key with its default
#   init/porthole.service    hardened systemd unit
#   init/porthole.sysv       SysV / BusyBox init script (install as /etc/init.d/porthole or S50porthole)
#   INSTALL                  where each file goes
#   LICENSE                  porthole's license (Apache-2.0)
#   THIRD_PARTY_NOTICES      the licenses of Go and of the modules linked into the binary (notices.sh)
set -euo pipefail
# Directories (mkdir) and the files written with > take the umask's mode, which
# the tar records: the builder's umask (002 on many desktops, 077 on hardened
# ones) would change the bytes and the modes of the unpacked directories.
umask 022

root=$(cd "$(dirname "$0")/../.." && pwd)
version=$1 dist=$2
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
notices=$(mktemp)
trap 'rm -f "$notices"' EXIT
(cd "$root" && tools/pkg/notices.sh) >"$notices"
n=0
for bin in "$dist"/porthole-linux-*; do
  case $bin in *.tar.gz|*.ipk) continue ;; esac
  target=${bin##*/porthole-}
  name=porthole-$version-$target
  work=$(mktemp -d)
  mkdir -p "$work/$name/init"
  install -m 0755 "$bin" "$work/$name/porthole"
  install -m 0644 "$root/agent/porthole.example.toml" "$work/$name/porthole.toml.example"
  install -m 0644 "$root/tools/pkg/systemd/porthole.service" "$work/$name/init/porthole.service"
  install -m 0755 "$root/tools/pkg/sysv/porthole" "$work/$name/init/porthole.sysv"
  install -m 0644 "$root/LICENSE" "$work/$name/LICENSE"
  install -m 0644 "$notices" "$work/$name/THIRD_PARTY_NOTICES"
  cat >"$work/$name/INSTALL" <<INSTALL
porthole $version for $target

  install -m 0755 porthole /usr/bin/porthole
  install -d -m 0755 /etc/porthole
  install -m 0600 porthole.toml.example /etc/porthole/porthole.toml   # then edit it
  # the files it names (the example's paths):
  install -m 0644 YOUR-CERT.pem.crt /etc/porthole/device.pem.crt      # the thing's certificate
  install -m 0600 YOUR-KEY.pem.key /etc/porthole/device.pem.key       # its private key
  install -m 0644 AmazonRootCA1.pem /etc/porthole/AmazonRootCA1.pem   # Amazon Root CA 1
  install -m 0600 YOUR-KEYS /etc/porthole/authorized_keys             # operators' SSH public keys
  porthole check-config -c /etc/porthole/porthole.toml                # exit 0 ok, 1 config error

check-config exits 0 with warnings too: while a certificate, key or CA file is
missing the agent cannot connect (it exits 2 at start until the file loads), and
without authorized_keys (or another login method) every SSH login is refused.

systemd:      install -m 0644 init/porthole.service /etc/systemd/system/ && systemctl enable --now porthole
SysV/BusyBox: install -m 0755 init/porthole.sysv /etc/init.d/porthole && /etc/init.d/porthole start
  and to start it at boot:
    Debian and derivatives (sysvinit):          update-rc.d porthole defaults
    BusyBox init (its rcS runs /etc/init.d/S??*): ln -s porthole /etc/init.d/S50porthole
  The log is /var/log/porthole.log; a start moves it to porthole.log.1 once it is
  bigger than 256 KiB (LOG_MAX in /etc/default/porthole), and the running agent
  appends to it without limit (on tmpfs that is RAM: rotate it with copytruncate
  for a hard cap).

Keep across updates (OTA): /etc/porthole/ (config, device certificate and key,
authorized_keys) and data_dir (default /var/lib/porthole: the SSH host key and the
client tokens of live tunnels). Replace /usr/bin/porthole and the init file you
installed from init/ together, a rollback too: each release's init file uses flags of
its own release (with systemd, run systemctl daemon-reload after replacing the
unit). See docs/firmware.md.
INSTALL
  tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -C "$work" -cf - "$name" | gzip -n9 >"$dist/$name.tar.gz"
  rm -rf "$work"
  n=$((n + 1))
done
[ $n -gt 0 ] || { echo "tarball.sh: no $dist/porthole-linux-* binaries (run make cross)" >&2; exit 1; }
echo "tarball.sh: $n tarballs in $dist"
