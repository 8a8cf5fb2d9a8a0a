#!/usr/bin/env bash
# fetch.sh DEB_ARCH PACKAGE...: download Debian bookworm packages of a foreign
# architecture and unpack each into the cache; print the unpacked directories.
#
# A private apt configuration (its own sources list naming only the main suite, its
# own lists and archives directories, APT::Architectures set to DEB_ARCH) is used,
# so the host's dpkg architectures are never changed: `dpkg --add-architecture`
# breaks `apt-get update` on these machines (PLATFORM.md). The mirror is the one
# the host's own apt sources name. A package name ending in a meta package such as
# linux-image-armmp is resolved to the versioned package it depends on.
#
# Cache: ${XDG_CACHE_HOME:-~/.cache}/porthole/debian/<arch>/ (delete it to refetch).
set -euo pipefail

arch=$1
shift
cache=${PORTHOLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/porthole}/debian/$arch
mkdir -p "$cache"/{lists/partial,archives/partial,debs,root,etc/sources.list.d,etc/preferences.d}

mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

apt_opts=(
  -o "Dir::Etc::SourceList=$cache/etc/sources.list"
  -o "Dir::Etc::SourceParts=$cache/etc/sources.list.d"
  -o "Dir::Etc::Preferences=$cache/etc/preferences"
  -o "Dir::Etc::PreferencesParts=$cache/etc/preferences.d"
  -o "Dir::State::Lists=$cache/lists"
  -o "Dir::Cache=$cache"
  -o "Dir::Cache::archives=$cache/archives"
  -o "APT::Architecture=$arch"
  -o "APT::Architectures::=$arch"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
  -q
)

update() {
  # One index download per day is plenty for a stable release.
  if [ -n "$(find "$cache/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
    return
  fi
  echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror) bookworm main" >"$cache/etc/sources.list"
  echo "fetch.sh: apt-get update for $arch (private config in $cache)" >&2
  apt-get "${apt_opts[@]}" update >&2
}

# resolve PKG: a meta package (linux-image-armmp) -> the versioned one it depends on.
resolve() {
  local pkg=$1 dep
  case $pkg in
    linux-image-[0-9]*.[0-9]*-*) echo "$pkg"; return ;;
    linux-image-*)
      dep=$(apt-cache "${apt_opts[@]}" depends "$pkg:$arch" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {sub(/:.*/, "", $2); print $2; exit}')
      if [ -z "$dep" ]; then
        echo "fetch.sh: cannot resolve $pkg:$arch to a versioned kernel package" >&2
        exit 1
      fi
      echo "$dep" ;;
    *) echo "$pkg" ;;
  esac
}

for want in "$@"; do
  marker=$cache/debs/$want.resolved
  if [ -s "$marker" ] && [ -d "$cache/root/$(cat "$marker")" ]; then
    echo "$cache/root/$(cat "$marker")"
    continue
  fi
  update
  pkg=$(resolve "$want")
  (cd "$cache/debs" && apt-get "${apt_opts[@]}" download "$pkg:$arch" >&2)
  deb=$(ls -t "$cache/debs/${pkg}_"*"_$arch.deb" | head -1)
  rm -rf "$cache/root/$pkg.tmp"
  dpkg-deb -x "$deb" "$cache/root/$pkg.tmp"
  rm -rf "$cache/root/$pkg"
  mv "$cache/root/$pkg.tmp" "$cache/root/$pkg"
  echo "$pkg" >"$marker"
  echo "$cache/root/$pkg"
done
