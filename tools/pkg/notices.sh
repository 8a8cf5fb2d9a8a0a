#!/usr/bin/env bash
# notices.sh [PACKAGE]: print the license texts of the third-party code linked into
# PACKAGE (default ./agent/cmd/porthole, the device binary), resolved in the
# module of the current directory as make cross builds it (linux/mipsle, tags
# netgo,osusergo; every device target links the same modules): Go's own (its
# LICENSE and PATENTS), then each module's LICENSE, LICENCE, COPYING, NOTICE and
# PATENTS files, sorted by module path. The main module is left out: its license
# is LICENSE. A module without a LICENSE, LICENCE or COPYING file is an error,
# and so is one that is not in the module cache (go mod download).
# Its output is tools/pkg/THIRD_PARTY_NOTICES (TestThirdPartyNotices keeps it
# current: run tools/pkg/notices.sh >tools/pkg/THIRD_PARTY_NOTICES after a
# go.mod change), which ipk.sh installs and Buildroot's legal-info collects;
# tarball.sh puts a fresh one into every tarball; make operator one beside each
# porthole connect it builds for another system.
set -euo pipefail

pkg=${1:-./agent/cmd/porthole}
go=${GO:-go}

# section TITLE FILE...: one module's license files under a header.
section() {
  local title=$1 f
  shift
  printf '%s\n%s\n' "================================================================================" "$title"
  for f in "$@"; do
    printf '%s\n\n' "--- ${f##*/} ---"
    cat "$f"
    printf '\n'
  done
}

# Dual-licensed modules whose LICENSE names a second license kept in another file.
declare -A extra=(
  # EPL-2.0 or EDL-1.0 (a BSD-3-Clause license, in edl-v10): porthole takes the
  # EDL-1.0, which needs no source offer.
  [github.com/eclipse/paho.golang]=edl-v10
)

goroot=$("$go" env GOROOT)
echo "Third-party software in porthole, with its license texts."
echo
section "Go standard library and runtime (https://go.dev)" "$goroot/LICENSE" "$goroot/PATENTS"
# Parts of Go's runtime come from Inferno (runtime/vlrt.go on 32-bit ARM, MIPS
# and x86; its memmove and vlop assembly on ARM and x86), under a license that
# wants its notice in every copy, binaries included.
printf '%s\n%s\n%s\n\n' "================================================================================" \
  "Go runtime: code from Inferno's libkern (runtime/vlrt.go, memmove_*.s, vlop_*.s)" "--- runtime/vlrt.go ---"
sed -n '1,/^\/\/ THE SOFTWARE\.$/p' "$goroot/src/runtime/vlrt.go" | sed 's|^// \{0,1\}||'
printf '\n'

# -mod=readonly: from the module cache even where the tree has a vendor/ (made
# for an offline build, buildroot/README.md), in which go list knows no module's
# folder, and go mod vendor keeps only some of a module's license files.
# NOTICES_GOOS/NOTICES_GOARCH: another build's (make operator's porthole connect).
mods=$(CGO_ENABLED=0 GOOS=${NOTICES_GOOS:-linux} GOARCH=${NOTICES_GOARCH:-mipsle} GOMIPS=softfloat GOFLAGS="-mod=readonly -buildvcs=false" "$go" list -tags netgo,osusergo -deps \
  -f '{{with .Module}}{{if not .Main}}{{.Path}}|{{.Version}}|{{.Dir}}{{end}}{{end}}' "$pkg" | sort -u)
while IFS='|' read -r path version dir; do
  [ -n "$path" ] || continue
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    echo "notices.sh: module $path $version is not in the module cache (go mod download)" >&2
    exit 1
  fi
  files=()
  licensed=
  for f in "$dir"/*; do
    [ -f "$f" ] || continue
    case $(basename "$f" | tr '[:lower:]' '[:upper:]') in
      LICENSE* | LICENCE* | COPYING*) files+=("$f") licensed=1 ;;
      NOTICE* | PATENTS*) files+=("$f") ;;
    esac
  done
  # Not printf | grep -q: grep leaves at the first match, and under pipefail the
  # printf it cut off (SIGPIPE) failed the check about 1 run in 400.
  if [ -z "$licensed" ]; then
    echo "notices.sh: module $path $version has no LICENSE, LICENCE or COPYING file in $dir" >&2
    exit 1
  fi
  title="$path${version:+ $version}"
  if [ -n "${extra[$path]:-}" ]; then
    files+=("$dir/${extra[$path]}")
    title+=" (dual-licensed; porthole distributes it under the license in ${extra[$path]})"
  fi
  section "$title" "${files[@]}"
  # Its sources' own copyright lines, which a license text's template does not
  # hold (paho.golang's "Contributors to the Eclipse Foundation").
  if [ -n "${extra[$path]:-}" ]; then
    printf '%s\n\n' "--- copyright lines of its source files ---"
    grep -rhoE --include='*.go' 'Copyright \(c\) [0-9][^*]*[^* ]' "$dir" | sort -u
    printf '\n'
  fi
done <<<"$mods"
