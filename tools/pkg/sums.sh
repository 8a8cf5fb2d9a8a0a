#!/usr/bin/env bash
# sums.sh DIST: write DIST/SHA256SUMS for every artifact in DIST: the binaries of
# make cross (porthole-linux-*), the tarballs of make dist
# (porthole-VERSION-linux-*.tar.gz) and the packages of make ipk
# (porthole_VERSION_ARCH.ipk), and make operator's porthole connect for macOS,
# Windows and FreeBSD (porthole-darwin-*, ...). Each target ends with it, so the file
# covers all of them whichever ran last.
set -euo pipefail
shopt -s nullglob

cd "$1"
files=(porthole-* porthole_*.ipk)
[ ${#files[@]} -gt 0 ] || { echo "sums.sh: no artifacts in $1" >&2; exit 1; }
sha256sum -- "${files[@]}" >SHA256SUMS.tmp
mv SHA256SUMS.tmp SHA256SUMS
