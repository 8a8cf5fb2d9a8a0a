#!/usr/bin/env bash
# qemu-test.sh: tier 3 of the test plan (DESIGN.md, "Test tiers"): the unit tests of
# the packages that hold wire formats, byte order and word size — agent/tunnel,
# agent/notify, sshd — cross-compiled and run under qemu-user for 32-bit ARM (v7),
# arm64, big-endian MIPS and little-endian MIPS (softfloat, like most routers) and
# big-endian 64-bit MIPS (whose struct stat has unsigned 32-bit times), with the
# device binary's compiler flags.
#
# go test -exec runs each test binary through qemu-<arch>-static: no binfmt_misc and
# no root needed. Programs the tests start themselves (mosquitto, ssh, busybox) are
# the host's and run natively; only the Go code under test is emulated.
#
#   tools/qemu-test.sh                  # every arch
#   QEMU_ARCHS="mips arm" tools/qemu-test.sh    # or: tools/qemu-test.sh mips arm
#   QEMU_TEST_TIMEOUT=5m tools/qemu-test.sh
#
# Under CI=true a missing qemu-user-static is an error; otherwise the stage is skipped
# with a message. Tests run with -short (tests that honour it shrink their transfers).
#
# QEMU_TEST_SKIP is a go test -skip pattern, printed when used; by default nothing
# is skipped (sshd's TestWindowChangeBeforeShell and TestMaxSessionTime once were,
# for timing that did not hold under emulation; both now wait long enough).
set -euo pipefail

cd "$(dirname "$0")/.."
pkgs=(./agent/tunnel/ ./agent/notify/ ./sshd/)
timeout=${QEMU_TEST_TIMEOUT:-360s} # sshd took 240 s under qemu-mips on a loaded CI machine
skip=${QEMU_TEST_SKIP-}
[ -n "$skip" ] && echo "qemu-test: skipping tests matching $skip under emulation (see the comment in $0)"
archs=${*:-${QEMU_ARCHS:-arm arm64 mips mipsle mips64}}

# arch -> "qemu binary|environment"
declare -A how=(
  [arm]="qemu-arm-static|GOARM=7"
  [arm64]="qemu-aarch64-static|"
  [mips]="qemu-mips-static|GOMIPS=softfloat"
  [mipsle]="qemu-mipsel-static|GOMIPS=softfloat"
  [mips64]="qemu-mips64-static|GOMIPS64=softfloat"
  [mips64le]="qemu-mips64el-static|GOMIPS64=softfloat"
  [riscv64]="qemu-riscv64-static|"
)

# Built as the device binary is (agent/cmd/porthole/device.gcflags: inlining only
# where it pays; device.goexperiment: its garbage collector), so the tests run the
# code generation and runtime that ship.
# A failing make is an error, not empty flags: the tests would then run code the
# device binary is not (read's status is that of reading the here-string).
flags=$(make -s --no-print-directory device-gcflags)
read -ra gcflags <<<"$flags"
experiment=$(make -s --no-print-directory device-goexperiment)

# goenv ARCH sets goenv to the env command line ARCH's test binaries are built
# with. The build ahead (below) and go test use it both: built otherwise, the
# binaries built ahead would not be the ones go test looks for.
goenv() {
  local spec=${how[$1]}
  goenv=(env CGO_ENABLED=0 GOOS=linux GOARCH="$1" GOEXPERIMENT="$experiment")
  if [ -n "${spec#*|}" ]; then goenv+=("${spec#*|}"); fi
}

# Check every arch before the first runs.
for arch in $archs; do
  if [ -z "${how[$arch]:-}" ]; then
    echo "qemu-test: unknown arch $arch (know: ${!how[*]})" >&2
    exit 2
  fi
done

# Each arch's test binaries take about a minute of compiling on a cold build cache
# (a fresh machine; a provisioned one has them cached), and its emulated tests
# leave some of a 2-CPU machine idle. So while one arch's tests run, the next
# arch's test binaries are built, at low priority, into the build cache that its
# go test then finds them in. The build's own output is dropped: a compile error
# shows again, in full, when go test meets it.
ahead_dir=$(mktemp -d)
ahead_pid=
# The build ahead runs in a process group of its own (setsid), so that stopping
# it stops its compilers too, and keeps go's work files in ahead_dir (GOTMPDIR,
# which is no part of the cache's keys), so that the rm takes them even when go
# is killed.
# At exit the trap stops the build ahead and the stall watcher (below).
# shellcheck disable=SC2317 # called by the trap
stop_helpers() {
  if [ -n "${watch_pid:-}" ]; then kill "$watch_pid" 2>/dev/null || true; fi
  if [ -n "$ahead_pid" ]; then kill -- -"$ahead_pid" 2>/dev/null || true; wait "$ahead_pid" 2>/dev/null || true; fi
  rm -rf "$ahead_dir"
}
trap stop_helpers EXIT
build_ahead() {
  goenv "$1"
  mkdir -p "$ahead_dir/tmp"
  setsid nice -n 10 "${goenv[@]}" GOTMPDIR="$ahead_dir/tmp" \
    go test -c -o "$ahead_dir/$1/" "${gcflags[@]}" "${pkgs[@]}" >/dev/null 2>&1 &
  ahead_pid=$!
}

# A test here that waits 10 s for what takes a tenth of that has failed, now
# and then, only on CI machines, with no sign of a bug. Whether the machine
# itself stood still then (a virtual machine not scheduled by its host) this
# watcher tells: it wakes every half second and says when it was not run for
# over 3 s. It ends with the script: by the trap, or, when the script is
# killed outright (SIGKILL, the OOM killer) and runs no trap, by finding it gone
# ($$ is the script's pid in this subshell too); else it would run for good,
# holding the job's log open.
watch_stalls() {
  local last now
  last=${EPOCHREALTIME/[.,]/}
  while sleep 0.5 && kill -0 "$$" 2>/dev/null; do
    now=${EPOCHREALTIME/[.,]/}
    if ((now - last > 3000000)); then
      echo "qemu-test: this machine ran nothing of this script for $(((now - last) / 1000)) ms, till $(date -u +%T.%3N) UTC; a test's time-out then may be that, not a bug" >&2
    fi
    last=$now
  done
}
watch_stalls &
watch_pid=$!

# A rule that drops loopback traffic to a port (agent/tunnel's TestDeadPathRedialed
# makes one for a few seconds; a test binary killed by its time-out runs no
# cleanup) left in place makes a connect to whatever test listens on that port
# later time out. report_drops names such rules of iptables' OUTPUT chain: up
# front, and after an arch whose tests failed.
report_drops() {
  local dropped
  if [ "$(id -u)" = 0 ] && command -v iptables >/dev/null &&
    dropped=$(iptables -S OUTPUT 2>/dev/null | grep -e '-o lo' | grep -e '-j DROP'); then
    echo "qemu-test: iptables drops loopback traffic $1 (a test's connect to such a port times out):" >&2
    echo "$dropped" >&2
  fi
}
report_drops "before the tests"

read -ra order <<<"$archs"
failed=()
for i in "${!order[@]}"; do
  arch=${order[$i]}
  spec=${how[$arch]}
  # This arch's binaries were built ahead, or are built by go test below.
  if [ -n "$ahead_pid" ]; then wait "$ahead_pid" || true; ahead_pid=; rm -rf "${ahead_dir:?}"/*; fi
  next=${order[$((i + 1))]:-}
  # Not for an arch whose qemu is missing: it is skipped, or the run fails.
  if [ -n "$next" ] && command -v "${how[$next]%%|*}" >/dev/null; then build_ahead "$next"; fi
  qemu=${spec%%|*}
  env=${spec#*|}
  if ! command -v "$qemu" >/dev/null; then
    msg="qemu-test: $qemu not found (Debian package qemu-user-static; tools/deps.sh qemu installs it)"
    if [ "${CI:-}" = true ]; then
      echo "$msg" >&2
      exit 1
    fi
    echo "$msg: skipping $arch" >&2
    continue
  fi
  echo "== qemu-user $arch ($qemu${env:+, $env}${experiment:+, GOEXPERIMENT=$experiment})"
  start=$(date +%s)
  # PORTHOLE_QEMU_USER tells the tests that meet qemu-user's own behaviour that
  # they are emulated: the host kernel speaking another byte order (sshd's fake
  # vfat over FUSE), sysinfo cut to 32 bits, connect's SO_ERROR passed through
  # as the host's errno.
  goenv "$arch"
  if "${goenv[@]}" PORTHOLE_QEMU_USER="$arch" go test -exec "$qemu" "${gcflags[@]}" -short -count=1 -timeout "$timeout" ${skip:+-skip "$skip"} "${pkgs[@]}"; then
    echo "== qemu-user $arch: ok in $(( $(date +%s) - start ))s"
  else
    echo "== qemu-user $arch: FAILED after $(( $(date +%s) - start ))s" >&2
    report_drops "after $arch's tests"
    failed+=("$arch")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "qemu-test: failed on ${failed[*]}" >&2
  exit 1
fi
